"""Both update backends for compounds: the sub-devices' pulses go through the single-device kernel,
so for the same key the FFI kernel and the pure-JAX path agree to float rounding (ffi/README.md)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rpujax import tile
from rpujax.configs import (
    ChoppedTransferCompound,
    DigitalRankUpdateRPUConfig,
    MixedPrecisionCompound,
    OneSidedUnitCell,
    SoftBoundsDevice,
    TransferCompound,
    UnitCellRPUConfig,
    VectorUnitCell,
)

DEV = SoftBoundsDevice(dw_min=0.01)
CONFIGS = {
    "vector_all": UnitCellRPUConfig(device=VectorUnitCell(unit_cell_devices=[DEV, DEV])),
    "onesided": UnitCellRPUConfig(device=OneSidedUnitCell(unit_cell_devices=[DEV], refresh_every=1)),
    "tiki_taka": UnitCellRPUConfig(device=TransferCompound(unit_cell_devices=[DEV, DEV], units_in_mbatch=False)),
    "chopped": UnitCellRPUConfig(device=ChoppedTransferCompound(unit_cell_devices=[DEV, DEV])),
    "mixed_precision": DigitalRankUpdateRPUConfig(device=MixedPrecisionCompound(device=DEV)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ffi_and_jax_backends_agree(ffi, name) -> None:
    del ffi
    cfg = CONFIGS[name]
    state = tile.init(jax.random.key(0), 5, 7, cfg)
    x = jax.random.normal(jax.random.key(1), (6, 7))
    d = 0.3 * jax.random.normal(jax.random.key(2), (6, 5))
    outs = {}
    for backend in ("jax", "ffi"):
        s = state
        for k in range(3):
            s = tile.update(s, x, d, 0.1, jax.random.key(10 + k), backend=backend)
        outs[backend] = s
    np.testing.assert_allclose(np.asarray(outs["ffi"].weights), np.asarray(outs["jax"].weights), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(outs["ffi"].device["hidden_weights"] if "hidden_weights" in state.device
                                          else outs["ffi"].weights),
                               np.asarray(outs["jax"].device["hidden_weights"] if "hidden_weights" in state.device
                                          else outs["jax"].weights), rtol=1e-5, atol=1e-6)
