"""IO and update presets (aihwkit ``presets/utils.py``, spec cells-inference-api §6.2)."""

from __future__ import annotations

import dataclasses

from rpujax.configs.io import BoundManagementType, IOParameters, NoiseManagementType, WeightNoiseType
from rpujax.configs.update import PulseType, UpdateParameters

__all__ = ["PresetIOParameters", "PresetUpdateParameters", "StandardIOParameters"]


@dataclasses.dataclass(frozen=True)
class PresetIOParameters(IOParameters):
    """IO of the training presets: 7-bit DAC, 9-bit ADC, output bound 20, output noise 0.1,
    iterative bound management, abs-max noise management."""

    bound_management: BoundManagementType = BoundManagementType.ITERATIVE
    noise_management: NoiseManagementType = NoiseManagementType.ABS_MAX
    inp_res: float = 1.0 / (2**7 - 2)
    inp_sto_round: bool = False
    out_bound: float = 20.0
    out_noise: float = 0.1
    out_res: float = 1.0 / (2**9 - 2)
    w_noise: float = 0.0
    w_noise_type: WeightNoiseType = WeightNoiseType.NONE


@dataclasses.dataclass(frozen=True)
class PresetUpdateParameters(UpdateParameters):
    """Update of the presets: stochastic compressed pulses, BL ≤ 31 with update-BL management and
    update management."""

    desired_bl: int = 31
    pulse_type: PulseType = PulseType.STOCHASTIC_COMPRESSED
    update_bl_management: bool = True
    update_management: bool = True


@dataclasses.dataclass(frozen=True)
class StandardIOParameters(IOParameters):
    """A common IO setting: 8-bit DAC and ADC, output bound 10, output noise 0.04."""

    bound_management: BoundManagementType = BoundManagementType.ITERATIVE
    noise_management: NoiseManagementType = NoiseManagementType.ABS_MAX
    inp_res: float = 1.0 / (2**8 - 2)
    inp_sto_round: bool = False
    out_bound: float = 10.0
    out_noise: float = 0.04
    out_res: float = 1.0 / (2**8 - 2)
    w_noise: float = 0.0
    w_noise_type: WeightNoiseType = WeightNoiseType.NONE
