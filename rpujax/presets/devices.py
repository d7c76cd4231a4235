"""Device presets (aihwkit ``presets/devices.py``, spec cells-inference-api §6.1).

Each preset is a subclass of its base device model with other defaults; every field can still be
overridden (``ReRamSBPresetDevice(subtract_symmetry_point=True)``). Fields not listed keep the base
class defaults.
"""

from __future__ import annotations

import dataclasses

from rpujax.configs.devices import (
    ConstantStepDevice,
    ExpStepDevice,
    LinearStepDevice,
    SoftBoundsReferenceDevice,
)

__all__ = [
    "CapacitorPresetDevice",
    "EcRamMOPresetDevice",
    "EcRamPresetDevice",
    "GokmenVlasovPresetDevice",
    "IdealizedPresetDevice",
    "PCMPresetDevice",
    "ReRamArrayHfO2PresetDevice",
    "ReRamArrayOMPresetDevice",
    "ReRamESPresetDevice",
    "ReRamSBPresetDevice",
]


@dataclasses.dataclass(frozen=True)
class ReRamESPresetDevice(ExpStepDevice):
    """ReRAM, exponential step model (Gong et al., Nat. Commun. 2018)."""

    dw_min: float = 0.00135
    up_down: float = 0.259359
    w_max: float = 1.0
    w_min: float = -1.0
    a: float = -0.5
    b: float = -0.5
    gamma_up: float = 5.0
    gamma_down: float = 5.0
    A_up: float = -1.18445
    A_down: float = -0.081404
    dw_min_dtod: float = 0.2
    up_down_dtod: float = 0.05
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3
    dw_min_std: float = 5.0
    write_noise_std: float = 75.0


@dataclasses.dataclass(frozen=True)
class ReRamSBPresetDevice(SoftBoundsReferenceDevice):
    """ReRAM, soft-bounds model with a reference (Gong et al., Nat. Commun. 2018)."""

    dw_min: float = 0.002
    up_down: float = 0.0
    w_max: float = 1.25
    w_min: float = -0.75
    mult_noise: bool = False
    dw_min_dtod: float = 0.3
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.3 / 1.25
    w_min_dtod: float = 0.3 / 0.75
    dw_min_std: float = 3.75
    write_noise_std: float = 56.0


@dataclasses.dataclass(frozen=True)
class CapacitorPresetDevice(LinearStepDevice):
    """Capacitor-based cell, linear step model with leakage (Li et al., VLSI 2018)."""

    dw_min: float = 0.005
    up_down: float = 0.0
    w_max: float = 1.0
    w_min: float = -1.0
    mult_noise: bool = False
    gamma_up: float = 0.05
    gamma_down: float = 0.05
    dw_min_dtod: float = 0.1
    up_down_dtod: float = 0.06
    w_max_dtod: float = 0.07
    w_min_dtod: float = 0.07
    gamma_up_dtod: float = 0.01
    gamma_down_dtod: float = 0.01
    dw_min_std: float = 0.3
    write_noise_std: float = 0.0
    mean_bound_reference: bool = True
    lifetime: float = 1.0e6
    lifetime_dtod: float = 0.3


@dataclasses.dataclass(frozen=True)
class EcRamPresetDevice(LinearStepDevice):
    """Li-ion ECRAM, linear step model (Tang et al., IEDM 2018)."""

    dw_min: float = 0.002
    up_down: float = 0.0
    w_max: float = 1.1724
    w_min: float = -0.8276
    mult_noise: bool = True
    gamma_up: float = 0.1153
    gamma_down: float = 0.5085
    dw_min_dtod: float = 0.1
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.05
    w_min_dtod: float = 0.05
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    dw_min_std: float = 0.3
    write_noise_std: float = 0.0
    mean_bound_reference: bool = True


@dataclasses.dataclass(frozen=True)
class EcRamMOPresetDevice(LinearStepDevice):
    """Metal-oxide ECRAM, linear step model (Kim et al., IEDM 2019)."""

    dw_min: float = 2.8214e-4
    up_down: float = 0.0
    w_max: float = 1.1714
    w_min: float = -0.8286
    mult_noise: bool = True
    gamma_up: float = 0.4152
    gamma_down: float = 0.7342
    dw_min_dtod: float = 0.1
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.05
    w_min_dtod: float = 0.05
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    dw_min_std: float = 2.0
    write_noise_std: float = 0.0
    mean_bound_reference: bool = True


@dataclasses.dataclass(frozen=True)
class IdealizedPresetDevice(ConstantStepDevice):
    """Idealized constant-step device with 5× smaller steps and a wider range (Rasch et al. 2019)."""

    dw_min: float = 0.0002
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.0
    w_max: float = 1.0
    w_min: float = -1.0
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3


@dataclasses.dataclass(frozen=True)
class GokmenVlasovPresetDevice(ConstantStepDevice):
    """Constant-step device of Gokmen & Vlasov (Front. Neurosci. 2016), about 1200 states."""

    dw_min: float = 0.0016
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.01
    w_max: float = 1.0
    w_min: float = -1.0
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3


@dataclasses.dataclass(frozen=True)
class PCMPresetDevice(ExpStepDevice):
    """Phase-change memory, one-sided exponential step model (Nandakumar et al. 2020).

    Potentiation only in practice (``w_min = 0``); used in pairs by :class:`PCMPresetUnitCell`.

    The values are aihwkit's. They make a coarse, noisy device: the up step
    ``dw_min·(1 + 27.235·e^{−2.5·g})`` is 0.28 at ``g = 0`` (28× ``dw_min``, 9× the weight
    granularity 0.032 used for pulse counts) and 0.012 at ``g = 2``; the per-pulse noise
    ``0.6·(|Δg| + 0.042 + 0.108·|g|)`` exceeds the mean step above ``g ≈ 0.3``. A pulsed regression
    with weights of a few tenths does not converge with this preset (tests/test_presets_training.py
    gives the measurements); aihwkit's ExpStep update is the same computation.
    """

    dw_min: float = 0.01
    up_down: float = 0.0
    w_max: float = 2.0
    w_min: float = 0.0
    a: float = -1.0
    b: float = 0.0
    gamma_up: float = 2.5
    gamma_down: float = 2.5
    A_up: float = -27.235
    A_down: float = -2.235
    dw_min_dtod: float = 0.2
    up_down_dtod: float = 0.05
    w_max_dtod: float = 0.1
    w_min_dtod: float = 0.0
    dw_min_std: float = 0.6
    dw_min_std_add: float = 0.042
    dw_min_std_slope: float = 0.108
    write_noise_std: float = 0.0
    reset: float = 0.01
    reset_dtod: float = 0.02


@dataclasses.dataclass(frozen=True)
class ReRamArrayOMPresetDevice(SoftBoundsReferenceDevice):
    """ReRAM array (OM), soft bounds with reference (Gong, Rasch et al., IEDM 2022)."""

    enforce_consistency: bool = True
    dw_min_dtod_log_normal: bool = True
    dw_min: float = 0.0949
    up_down: float = 0.0
    w_max: float = 1.0
    w_min: float = -1.0
    mult_noise: bool = False
    dw_min_dtod: float = 0.7829
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.3499
    w_min_dtod: float = 0.5695
    dw_min_std: float = 0.4158
    write_noise_std: float = 1.4113
    corrupt_devices_range: float = 0.0100
    corrupt_devices_prob: float = 0.0
    subtract_symmetry_point: bool = True
    reference_std: float = 0.05


@dataclasses.dataclass(frozen=True)
class ReRamArrayHfO2PresetDevice(SoftBoundsReferenceDevice):
    """ReRAM array (HfO2), soft bounds with reference (Gong, Rasch et al., IEDM 2022)."""

    enforce_consistency: bool = True
    dw_min_dtod_log_normal: bool = True
    dw_min: float = 0.4622
    up_down: float = 0.0
    w_max: float = 1.0
    w_min: float = -1.0
    mult_noise: bool = False
    dw_min_dtod: float = 0.7125
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.4295
    w_min_dtod: float = 0.5990
    dw_min_std: float = 0.2174
    write_noise_std: float = 0.5841
    corrupt_devices_range: float = 0.0100
    corrupt_devices_prob: float = 0.0
    subtract_symmetry_point: bool = True
    reference_std: float = 0.05
