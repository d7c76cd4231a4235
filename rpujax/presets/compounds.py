"""Compound presets (aihwkit ``presets/compounds.py``, spec cells-inference-api §6.1)."""

from __future__ import annotations

import dataclasses

from rpujax.configs.compounds import OneSidedUnitCell
from rpujax.configs.io import IOParameters
from rpujax.configs.update import UpdateParameters
from rpujax.presets.devices import PCMPresetDevice
from rpujax.presets.utils import PresetIOParameters, PresetUpdateParameters

__all__ = ["PCMPresetUnitCell"]


@dataclasses.dataclass(frozen=True)
class PCMPresetUnitCell(OneSidedUnitCell):
    """A pair of PCM devices with refresh after every update call (Nandakumar et al. 2020)."""

    unit_cell_devices: tuple = (PCMPresetDevice(), PCMPresetDevice())
    refresh_every: int = 1
    units_in_mbatch: bool = True
    refresh_forward: IOParameters = dataclasses.field(default_factory=PresetIOParameters)
    refresh_update: UpdateParameters = dataclasses.field(default_factory=lambda: PresetUpdateParameters(desired_bl=31))
