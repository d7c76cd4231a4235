"""rpu-config presets (aihwkit ``presets/configs.py``, spec cells-inference-api §6.3).

Every preset is a subclass of its rpu config with other defaults (``forward = backward =
PresetIOParameters()``, ``update = PresetUpdateParameters()`` unless noted), so any field can still
be overridden: ``TikiTakaReRamSBPreset(update=PresetUpdateParameters(desired_bl=10))``.

- ``<Device>Preset``: ``SingleRPUConfig`` with the preset device; ``PCMPreset``: ``UnitCellRPUConfig``
  with :class:`~rpujax.presets.compounds.PCMPresetUnitCell`.
- ``<Device>2Preset`` / ``<Device>4Preset``: ``VectorUnitCell`` of 2 / 4 devices, ``SINGLE_RANDOM``.
- ``TikiTaka<Device>Preset``: ``TransferCompound`` with transfer IO ``TIO`` (preset IO without noise
  and bound management) and ``PresetUpdateParameters()`` transfer update.
- ``TTv2<Device>Preset``: ``ChoppedTransferCompound`` without choppers (``in_chop_prob=0``),
  ``auto_scale``; ``ChoppedTTv2<Device>Preset``: with choppers; ``AGAD<Device>Preset``:
  ``DynamicTransferCompound``; all with a one-pulse transfer update ``U1``.
- ``MixedPrecision<Device>Preset``: ``DigitalRankUpdateRPUConfig`` with ``MixedPrecisionCompound``.
"""

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
from rpujax.configs.io import BoundManagementType, IOParameters, NoiseManagementType
from rpujax.configs.rpu_configs import SingleRPUConfig
from rpujax.configs.update import UpdateParameters
from rpujax.presets.compounds import PCMPresetUnitCell
from rpujax.presets.devices import (
    CapacitorPresetDevice,
    EcRamMOPresetDevice,
    EcRamPresetDevice,
    GokmenVlasovPresetDevice,
    IdealizedPresetDevice,
    ReRamESPresetDevice,
    ReRamSBPresetDevice,
)
from rpujax.presets.utils import PresetIOParameters, PresetUpdateParameters

__all__: list[str] = []


def _tio() -> IOParameters:
    """Transfer IO of the transfer presets: preset IO without noise and bound management."""
    return PresetIOParameters(noise_management=NoiseManagementType.NONE, bound_management=BoundManagementType.NONE)


def _u1() -> UpdateParameters:
    """One pulse per element (transfer update of TTv2 / c-TTv2 / AGAD presets)."""
    return PresetUpdateParameters(desired_bl=1, update_bl_management=False, update_management=False)


def _define(name: str, base: type, doc: str, device: Callable[[], Any], desired_bl: int | None = None) -> type:
    update = PresetUpdateParameters if desired_bl is None else (lambda: PresetUpdateParameters(desired_bl=desired_bl))
    fields = [
        ("device", Any, dataclasses.field(default_factory=device)),
        ("forward", IOParameters, dataclasses.field(default_factory=PresetIOParameters)),
        ("backward", IOParameters, dataclasses.field(default_factory=PresetIOParameters)),
        ("update", UpdateParameters, dataclasses.field(default_factory=update)),
    ]
    cls = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True, namespace={"__doc__": doc})
    cls.__module__ = __name__
    globals()[name] = cls
    __all__.append(name)
    return cls


# (name stem, device class, ReRamSB needs the symmetry point subtracted in the compounds)
_DEVICES = {
    "ReRamES": ReRamESPresetDevice,
    "ReRamSB": ReRamSBPresetDevice,
    "Capacitor": CapacitorPresetDevice,
    "EcRam": EcRamPresetDevice,
    "EcRamMO": EcRamMOPresetDevice,
    "Idealized": IdealizedPresetDevice,
    "GokmenVlasov": GokmenVlasovPresetDevice,
}


def _pair_device(stem: str) -> Any:
    dev = _DEVICES[stem]
    return dev(subtract_symmetry_point=True) if stem == "ReRamSB" else dev()


# Single device -------------------------------------------------------------------------------
for _stem, _dev in _DEVICES.items():
    _define(f"{_stem}Preset", SingleRPUConfig, f"SingleRPUConfig with {_dev.__name__}, preset IO and update.", _dev)
_define("PCMPreset", UnitCellRPUConfig, "UnitCellRPUConfig with PCMPresetUnitCell, preset IO and update.",
        PCMPresetUnitCell)

# Vector unit cells ----------------------------------------------------------------------------
for _n in (2, 4):
    for _stem in ("ReRamES", "ReRamSB", "Capacitor", "EcRam", "EcRamMO", "Idealized"):
        _define(
            f"{_stem}{_n}Preset", UnitCellRPUConfig,
            f"VectorUnitCell of {_n} {_DEVICES[_stem].__name__}, SINGLE_RANDOM update policy.",
            (lambda dev=_DEVICES[_stem], n=_n: VectorUnitCell(
                unit_cell_devices=(dev(),) * n, update_policy=VectorUnitCellUpdatePolicy.SINGLE_RANDOM)),
        )

# Tiki-Taka ------------------------------------------------------------------------------------
for _stem in ("ReRamES", "ReRamSB", "Capacitor", "EcRam", "EcRamMO", "Idealized"):
    _define(
        f"TikiTaka{_stem}Preset", UnitCellRPUConfig,
        f"Tiki-Taka (TransferCompound) with two {_DEVICES[_stem].__name__}.",
        (lambda stem=_stem: TransferCompound(
            unit_cell_devices=(_pair_device(stem),) * 2, transfer_forward=_tio(),
            transfer_update=PresetUpdateParameters(), transfer_every=1.0, units_in_mbatch=True)),
    )

# TTv2 (chopped compound without choppers) -----------------------------------------------------
_TTV2 = {
    "ReRamES": (0.5, 1000, 31), "ReRamSB": (0.5, 1000, 31), "Capacitor": (0.1, 1000, 31),
    "EcRam": (0.1, 500, 100), "EcRamMO": (0.1, 500, 100), "Idealized": (0.1, 500, 100),
}
for _stem, (_fast_lr, _gran, _bl) in _TTV2.items():
    _define(
        f"TTv2{_stem}Preset", UnitCellRPUConfig,
        f"TTv2 (ChoppedTransferCompound, in_chop_prob=0) with two {_DEVICES[_stem].__name__}.",
        (lambda stem=_stem, fast_lr=_fast_lr, gran=_gran: ChoppedTransferCompound(
            unit_cell_devices=(_pair_device(stem),) * 2, transfer_forward=_tio(), transfer_update=_u1(),
            units_in_mbatch=False, in_chop_prob=0.0, fast_lr=fast_lr, auto_scale=True, auto_granularity=gran)),
        desired_bl=_bl,
    )

# c-TTv2 ---------------------------------------------------------------------------------------
_CTTV2 = {
    "ReRamES": (0.01, 0.5, 1000, 31), "ReRamSB": (0.01, 0.5, 1000, 31), "Capacitor": (0.01, 0.1, 1000, 31),
    "EcRam": (0.01, 1.0, 500, 100), "EcRamMO": (0.001, 0.1, 500, 100), "Idealized": (0.001, 0.1, 500, 100),
}
for _stem, (_chop, _fast_lr, _gran, _bl) in _CTTV2.items():
    _define(
        f"ChoppedTTv2{_stem}Preset", UnitCellRPUConfig,
        f"Chopped TTv2 (ChoppedTransferCompound) with two {_DEVICES[_stem].__name__}.",
        (lambda stem=_stem, chop=_chop, fast_lr=_fast_lr, gran=_gran: ChoppedTransferCompound(
            unit_cell_devices=(_pair_device(stem),) * 2, transfer_forward=_tio(), transfer_update=_u1(),
            units_in_mbatch=False, in_chop_prob=chop, fast_lr=fast_lr, auto_scale=True, auto_granularity=gran)),
        desired_bl=_bl,
    )

# AGAD -----------------------------------------------------------------------------------------
_AGAD = {
    "ReRamES": (0.5, 1000, 5.0, 0.02, 31), "ReRamSB": (0.5, 1000, 5.0, 0.02, 31),
    "Capacitor": (0.1, 1000, 20.0, 0.01, 31), "EcRam": (0.1, 750, 50.0, 0.005, 31),
    "EcRamMO": (0.1, 500, 50.0, 0.005, 100), "Idealized": (0.1, 500, 50.0, 0.005, 100),
}
for _stem, (_fast_lr, _gran, _tail, _chop, _bl) in _AGAD.items():
    _define(
        f"AGAD{_stem}Preset", UnitCellRPUConfig,
        f"AGAD (DynamicTransferCompound) with two {_DEVICES[_stem].__name__}.",
        (lambda stem=_stem, fast_lr=_fast_lr, gran=_gran, tail=_tail, chop=_chop: DynamicTransferCompound(
            unit_cell_devices=(_pair_device(stem),) * 2, transfer_forward=_tio(), transfer_update=_u1(),
            units_in_mbatch=False, fast_lr=fast_lr, auto_granularity=gran, tail_weightening=tail,
            in_chop_prob=chop, auto_scale=True)),
        desired_bl=_bl,
    )

# Mixed precision ------------------------------------------------------------------------------
for _stem, _dev in _DEVICES.items():
    _define(
        f"MixedPrecision{_stem}Preset", DigitalRankUpdateRPUConfig,
        f"Mixed precision (MixedPrecisionCompound) with {_dev.__name__}.",
        (lambda dev=_dev: MixedPrecisionCompound(device=dev())),
    )
_define("MixedPrecisionPCMPreset", DigitalRankUpdateRPUConfig,
        "Mixed precision (MixedPrecisionCompound) with PCMPresetUnitCell.",
        (lambda: MixedPrecisionCompound(device=PCMPresetUnitCell())))

del _stem, _dev, _n, _fast_lr, _gran, _bl, _chop, _tail
