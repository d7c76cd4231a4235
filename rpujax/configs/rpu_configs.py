"""rpu configs: what a tile is made of (aihwkit ``SingleRPUConfig`` and friends).

An rpu config is a frozen, hashable dataclass. It is a static field of :class:`TileState`, so it
is part of the compiled program: changing it recompiles, which is what one wants for values that
decide the shape of the computation (pulse type, noise-management type, device model).
"""

from __future__ import annotations

import dataclasses

from rpujax.configs import _validation as v
from rpujax.configs.devices import (
    ConstantStepDevice,
    FloatingPointDevice,
    IdealDevice,
    PulsedDevice,
)
from rpujax.configs.io import IOParameters
from rpujax.configs.mapping import MappingParameter
from rpujax.configs.pre_post import PrePostProcessingParameter
from rpujax.configs.update import PulseType, UpdateParameters

_PERFECT_IO = IOParameters(is_perfect=True)
_FP_UPDATE = UpdateParameters(pulse_type=PulseType.NONE)


@dataclasses.dataclass(frozen=True)
class FloatingPointRPUConfig:
    """An exact floating-point tile (aihwkit ``FloatingPointRPUConfig``).

    Forward and backward are exact matrix products, the update is the exact SGD step
    ``W ← W − lr·Σ_b d_b x_bᵀ``. The device only carries decay, diffusion and drift settings;
    ``mapping`` and ``pre_post`` (input range) configure the digital periphery of a layer.
    """

    device: FloatingPointDevice = dataclasses.field(default_factory=FloatingPointDevice)
    mapping: MappingParameter = dataclasses.field(default_factory=MappingParameter)
    pre_post: PrePostProcessingParameter = dataclasses.field(default_factory=PrePostProcessingParameter)

    def __post_init__(self) -> None:
        v.check_instance(self, "device", FloatingPointDevice)
        v.check_instance(self, "mapping", MappingParameter)
        v.check_instance(self, "pre_post", PrePostProcessingParameter)

    @property
    def forward(self) -> IOParameters:
        """Exact forward IO (``is_perfect=True``)."""
        return _PERFECT_IO

    @property
    def backward(self) -> IOParameters:
        """Exact backward IO (``is_perfect=True``)."""
        return _PERFECT_IO

    @property
    def update(self) -> UpdateParameters:
        """Exact floating-point update (``pulse_type=NONE``)."""
        return _FP_UPDATE


@dataclasses.dataclass(frozen=True)
class SingleRPUConfig:
    """A pulsed analog tile with one device per cross-point (aihwkit ``SingleRPUConfig``).

    Attributes:
      device: the device model (default ``ConstantStepDevice()``); ``IdealDevice`` gives an exact
        floating-point update with analog IO.
      forward: IO of the forward MVM.
      backward: IO of the backward MVM (bound management is always off in the backward pass, as in
        aihwkit, whatever this says).
      update: the pulsed update parameters.
      mapping: how a layer maps onto tiles.
      pre_post: digital pre/post-processing (input range) of each tile.
    """

    device: PulsedDevice | IdealDevice = dataclasses.field(default_factory=ConstantStepDevice)
    forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    backward: IOParameters = dataclasses.field(default_factory=IOParameters)
    update: UpdateParameters = dataclasses.field(default_factory=UpdateParameters)
    mapping: MappingParameter = dataclasses.field(default_factory=MappingParameter)
    pre_post: PrePostProcessingParameter = dataclasses.field(default_factory=PrePostProcessingParameter)

    def __post_init__(self) -> None:
        v.check_instance(self, "device", (PulsedDevice, IdealDevice))
        v.check_instance(self, "forward", IOParameters)
        v.check_instance(self, "backward", IOParameters)
        v.check_instance(self, "update", UpdateParameters)
        v.check_instance(self, "mapping", MappingParameter)
        v.check_instance(self, "pre_post", PrePostProcessingParameter)
