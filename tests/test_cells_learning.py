"""Learning tests of the compound devices: a linear regression against a fixed teacher.

A fixed 8×16 teacher ``W*`` (entries U(−0.3, 0.3), inside every device's bounds), inputs
``x ~ N(0, 0.5²)``, batch 8, tile lr 0.1, 500 steps of ``update(x, d = Wx − W*x)`` (the gradient
of ½‖Wx − W*x‖²), perfect forward IO (the test is about the update algorithms), weights starting
at 0. Test MSE on 256 fixed inputs must fall by at least ``FACTOR[name]``.

How the factors were chosen: aihwkit's compounds are all convergent SGD variants on this problem
(spec cells-inference-api §3: the fast device integrates the gradient, transfers move it to the
visible weight), so the test MSE must fall by orders of magnitude, limited by the device step
(``dw_min = 0.001``, i.e. a weight-noise floor around ``1e-6`` in MSE units) and by the transfer
speed of each algorithm in 500 steps. We measured the reduction of this implementation over 3 keys
(listed above ``FACTOR``) and require a factor at least 4× below the smallest measured value,
so a test fails on a qualitative break (sign error, wrong transfer, stuck buffer, lost chopper sign)
but not on seed noise. An SGD update with the wrong sign increases the MSE; a transfer that never
fires (or writes the wrong column) leaves the visible weight near 0 (factor ≈ 1).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from rpujax import tile
from rpujax.configs import (
    BufferedTransferCompound,
    ChoppedTransferCompound,
    ConstantStepDevice,
    DigitalRankUpdateRPUConfig,
    DynamicTransferCompound,
    IOParameters,
    MixedPrecisionCompound,
    OneSidedUnitCell,
    ReferenceUnitCell,
    SoftBoundsDevice,
    TransferCompound,
    UnitCellRPUConfig,
    UpdateParameters,
    VectorUnitCell,
)

PERFECT = IOParameters(is_perfect=True)
DEV = SoftBoundsDevice()
# One-sided pairs only ever potentiate: a device whose sampled up step is ~0 (dw_min_dtod = 0.3
# gives gains near 0 at ~3.3 sigma) or whose bound lies below the refresh threshold can never
# follow the teacher, in aihwkit as here; this device keeps those outliers away.
ONE_SIDED_DEV = ConstantStepDevice(w_max=1.0, w_min=-1.0, w_max_dtod=0.05, w_min_dtod=0.05, dw_min_dtod=0.1)
# Transfer writes of up to 5 pulses per element and event (instead of 1) so that the buffered
# kinds can move the slow device far enough in 500 steps.
UP5 = UpdateParameters(desired_bl=5, update_bl_management=False, update_management=False)
STEPS, BATCH, LR = 500, 8, 0.1


def _unit(cell):
    return UnitCellRPUConfig(device=cell, forward=PERFECT, backward=PERFECT)


CONFIGS = {
    "vector_all": _unit(VectorUnitCell(unit_cell_devices=[DEV, DEV])),
    "reference": _unit(ReferenceUnitCell(unit_cell_devices=[DEV, DEV])),
    # exact (clipped) refresh rewrites; the pulsed rewrite is checked in test_cells_onesided_mp.py
    "onesided": _unit(OneSidedUnitCell(unit_cell_devices=[ONE_SIDED_DEV], refresh_every=1, refresh_forward=PERFECT,
                                       refresh_update=UpdateParameters(pulse_type="NONE_WITH_DEVICE"))),
    "tiki_taka": _unit(TransferCompound(unit_cell_devices=[DEV, DEV], transfer_forward=PERFECT)),
    "buffered": _unit(BufferedTransferCompound(unit_cell_devices=[DEV, DEV], transfer_forward=PERFECT,
                                               units_in_mbatch=False, transfer_update=UP5)),
    "chopped": _unit(ChoppedTransferCompound(unit_cell_devices=[DEV, DEV], transfer_forward=PERFECT,
                                             fast_lr=0.1, in_chop_prob=0.1, transfer_update=UP5)),
    "dynamic": _unit(DynamicTransferCompound(unit_cell_devices=[DEV, DEV], transfer_forward=PERFECT,
                                             fast_lr=0.1, in_chop_prob=0.1, transfer_update=UP5)),
    "mixed_precision": DigitalRankUpdateRPUConfig(device=MixedPrecisionCompound(device=DEV),
                                                  forward=PERFECT, backward=PERFECT),
}

# Minimum MSE reduction factors (module docstring).
# Measured (keys 0, 1, 2): vector_all 296/754/123, reference 147/372/21, onesided 7710/9710/8963,
# tiki_taka 116/266/38, buffered 71/150/44, chopped 11.7/15.1/10.4, dynamic 97/289/49,
# mixed_precision 61/370/67. Required: a quarter of the smallest, rounded down.
FACTOR = {
    "vector_all": 30.0,
    "reference": 5.0,
    "onesided": 1900.0,
    "tiki_taka": 9.0,
    "buffered": 11.0,
    "chopped": 2.5,
    "dynamic": 12.0,
    "mixed_precision": 15.0,
}


def _data():
    w_teacher = jax.random.uniform(jax.random.key(7), (8, 16), minval=-0.3, maxval=0.3)
    xs = 0.5 * jax.random.normal(jax.random.key(8), (STEPS, BATCH, 16))
    x_test = 0.5 * jax.random.normal(jax.random.key(9), (256, 16))
    return w_teacher, xs, x_test


@functools.partial(jax.jit, static_argnums=0)
def _train(name: str, state, key):
    w_teacher, xs, _ = _data()

    def body(s, inputs):
        x, k = inputs
        d = x @ s.weights.T - x @ w_teacher.T
        return tile.update(s, x, d, LR, k), None

    state, _ = jax.lax.scan(body, state, (xs, jax.random.split(key, STEPS)))
    return state


def _mse(weights):
    w_teacher, _, x_test = _data()
    return float(jnp.mean((x_test @ weights.T - x_test @ w_teacher.T) ** 2))


def reduction(name: str, seed: int) -> float:
    state = tile.init(jax.random.key(100 + seed), 8, 16, CONFIGS[name])
    state = tile.set_weights(state, jnp.zeros((8, 16)))
    before = _mse(state.weights)
    after = _mse(_train(name, state, jax.random.key(200 + seed)).weights)
    return before / after


@pytest.mark.parametrize("name", list(CONFIGS))
def test_linear_regression_learns(name: str) -> None:
    factor = reduction(name, 0)
    assert factor >= FACTOR[name], f"{name}: test MSE fell only by {factor:.3g} (need {FACTOR[name]})"


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or list(CONFIGS):
        print(name, [round(reduction(name, s), 1) for s in range(3)], flush=True)
