"""``build_config``: an rpu config for a training algorithm and a device (aihwkit
``configs/helpers.py``, spec cells-inference-api §6.3)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from rpujax.configs.compounds import (
    ChoppedTransferCompound,
    DigitalRankUpdateRPUConfig,
    DynamicTransferCompound,
    MixedPrecisionCompound,
    TransferCompound,
    UnitCellRPUConfig,
    VectorUnitCell,
    VectorUnitCellUpdatePolicy,
)
from rpujax.configs.devices import PulsedDevice
from rpujax.configs.io import BoundManagementType, IOParameters, NoiseManagementType
from rpujax.configs.rpu_configs import SingleRPUConfig
from rpujax.configs.update import UpdateParameters

__all__ = ["build_config"]


def _factory(obj: Any, cls: type) -> Callable[..., Any]:
    """A function ``f(**changes)``: a class is called, an instance is copied with the changes."""
    if isinstance(obj, cls):
        return lambda **changes: dataclasses.replace(obj, **changes)
    if callable(obj):
        return obj
    raise ValueError(f"build_config: {obj!r} is neither a {cls.__name__} nor a class / factory of one")


def build_config(
    algorithm: str,
    device: type | PulsedDevice | Callable[..., PulsedDevice],
    io_parameters: type | IOParameters | Callable[..., IOParameters] = IOParameters,
    up_parameters: type | UpdateParameters | Callable[..., UpdateParameters] = UpdateParameters,
    n_devices: int = 1,
    construction_seed: int = 0,
    **kwargs: Any,
) -> SingleRPUConfig | UnitCellRPUConfig | DigitalRankUpdateRPUConfig:
    """An rpu config for ``algorithm`` with ``device`` (aihwkit ``build_config``).

    Args:
      algorithm: ``"sgd"`` (single device; with ``n_devices > 1`` a ``SINGLE_RANDOM`` vector cell),
        ``"tiki-taka"`` / ``"tt"`` / ``"ttv1"``, ``"ttv2"``, ``"chopped-ttv2"`` / ``"ttv3"`` /
        ``"c-ttv2"``, ``"agad"`` / ``"ttv4"``, ``"mp"`` / ``"mixed-precision"`` (case-insensitive).
      device: a pulsed device class, instance (copied) or factory.
      io_parameters: IO class, instance or factory (forward, backward and, without noise / bound
        management, the transfer reads).
      up_parameters: update parameters class, instance or factory.
      n_devices: devices per cross-point for ``"sgd"``.
      construction_seed: seed of the device-to-device draws.
      **kwargs: further fields of the rpu config (e.g. ``mapping``).

    Raises:
      ValueError: unknown algorithm.
    """
    dev = _factory(device, PulsedDevice)
    io = _factory(io_parameters, IOParameters)
    up = _factory(up_parameters, UpdateParameters)
    algo = algorithm.lower()
    common = dict(forward=io(), backward=io(), **kwargs)

    def tio() -> IOParameters:
        return io(noise_management=NoiseManagementType.NONE, bound_management=BoundManagementType.NONE)

    if algo == "sgd":
        if n_devices == 1:
            return SingleRPUConfig(device=dev(construction_seed=construction_seed), update=up(), **common)
        cell = VectorUnitCell(unit_cell_devices=[dev() for _ in range(n_devices)],
                              update_policy=VectorUnitCellUpdatePolicy.SINGLE_RANDOM,
                              construction_seed=construction_seed)
        return UnitCellRPUConfig(device=cell, update=up(), **common)
    if algo in ("tiki-taka", "tt", "ttv1"):
        cell = TransferCompound(unit_cell_devices=[dev(), dev()], transfer_forward=tio(), transfer_update=up(),
                                units_in_mbatch=True, construction_seed=construction_seed)
        return UnitCellRPUConfig(device=cell, update=up(), **common)
    one_pulse = dict(desired_bl=1, update_bl_management=False, update_management=False)
    if algo == "ttv2":
        cell = ChoppedTransferCompound(unit_cell_devices=[dev(), dev()], transfer_forward=tio(),
                                       transfer_update=up(**one_pulse), in_chop_prob=0.0, units_in_mbatch=False,
                                       auto_scale=False, construction_seed=construction_seed)
        return UnitCellRPUConfig(device=cell, update=up(desired_bl=5), **common)
    if algo in ("chopped-ttv2", "ttv3", "c-ttv2"):
        cell = ChoppedTransferCompound(unit_cell_devices=[dev(), dev()], transfer_forward=tio(),
                                       transfer_update=up(**one_pulse), units_in_mbatch=False, fast_lr=0.1,
                                       auto_scale=True, construction_seed=construction_seed)
        return UnitCellRPUConfig(device=cell, update=up(desired_bl=5), **common)
    if algo in ("agad", "ttv4"):
        # aihwkit: transfer reads with the plain IO, transfer update BL 1 with management on.
        cell = DynamicTransferCompound(unit_cell_devices=[dev(), dev()], transfer_forward=io(),
                                       transfer_update=up(desired_bl=1, update_bl_management=True,
                                                          update_management=True),
                                       auto_scale=True, fast_lr=0.1, units_in_mbatch=False,
                                       construction_seed=construction_seed)
        return UnitCellRPUConfig(device=cell, update=up(desired_bl=5), **common)
    if algo in ("mp", "mixed-precision"):
        cell = MixedPrecisionCompound(device=dev(construction_seed=construction_seed))
        return DigitalRankUpdateRPUConfig(device=cell, update=up(), **common)
    raise ValueError(
        f"build_config: algorithm = {algorithm!r}: expected one of sgd, tiki-taka, tt, ttv1, ttv2, "
        "chopped-ttv2, ttv3, c-ttv2, agad, ttv4, mp, mixed-precision"
    )
