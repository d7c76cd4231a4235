"""``OneSidedUnitCell`` (spec §3.3) and ``MixedPrecisionCompound`` (spec §3.8).

Deterministic devices, perfect reads and exact updates where the algorithm is checked exactly;
pulsed updates where the pulse routing itself is the subject.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpujax import tile
from rpujax.configs import (
    ConstantStepDevice,
    DigitalRankUpdateRPUConfig,
    IOParameters,
    MixedPrecisionCompound,
    OneSidedUnitCell,
    UnitCellRPUConfig,
    UpdateParameters,
    VectorUnitCell,
)
from rpujax.tile import parameters as params

PERFECT = IOParameters(is_perfect=True)
FP = UpdateParameters(pulse_type="NONE")
DEV = ConstantStepDevice(dw_min=0.01, w_max=1.0, w_min=-1.0, w_max_dtod=0.0, w_min_dtod=0.0, dw_min_dtod=0.0,
                         up_down_dtod=0.0, dw_min_std=0.0, reset_std=0.0)
D, X = 3, 4


def _unit(cell, update=FP):
    return UnitCellRPUConfig(device=cell, forward=PERFECT, backward=PERFECT, update=update)


# ---------------------------------------------------------------------------------------------
# One-sided
# ---------------------------------------------------------------------------------------------


def test_onesided_set_weights_and_routing() -> None:
    """``set_weights`` splits W into ``g+ = max(W,0)``, ``g− = max(−W,0)``; pulsed updates are up
    pulses only: increases on g+ (device 1), decreases on g− (device 0)."""
    cell = OneSidedUnitCell(unit_cell_devices=[DEV])
    pulsed = UpdateParameters(desired_bl=31, update_bl_management=False, update_management=False)
    w = np.array([[0.2, -0.3, 0.0, 0.1]] * D, np.float32)
    state = tile.set_weights(tile.init(jax.random.key(0), D, X, _unit(cell, pulsed)), jnp.asarray(w))
    hw = np.asarray(state.device["hidden_weights"])
    np.testing.assert_allclose(hw[1], np.maximum(w, 0), rtol=1e-6)
    np.testing.assert_allclose(hw[0], np.maximum(-w, 0), rtol=1e-6)
    x = jnp.asarray([[1.0, -1.0, 0.5, 0.0]] * 4)
    d = jnp.asarray([[0.3, -0.3, 0.0]] * 4)
    new = tile.update(state, x, d, 0.1, jax.random.key(1))
    dw = np.asarray(new.device["hidden_weights"]) - hw
    want = -np.sign(np.asarray(d[0])[:, None] * np.asarray(x[0])[None, :])  # sign of −d xᵀ
    assert np.all(dw >= 0)  # potentiation only
    np.testing.assert_array_equal(dw[1] > 0, want > 0)
    np.testing.assert_array_equal(dw[0] > 0, want < 0)
    np.testing.assert_allclose(np.asarray(new.weights), np.asarray(new.device["hidden_weights"][1]
                                                                   - new.device["hidden_weights"][0]), rtol=1e-6)
    assert int(params.get_hidden_update_index(params.set_hidden_update_index(new, 1))) == 0


@pytest.mark.parametrize("rewrite", [FP, UpdateParameters(desired_bl=100)], ids=["exact", "pulsed"])
def test_onesided_refresh(rewrite) -> None:
    """Refresh criterion, reset of both devices, rewrite of the difference on the larger (spec §3.3).

    ``M = 1``, thresholds 0.75 / 0.25. Element (0,0): wp 0.8 > wm 0.3 → refresh, g+ = 0.5.
    (1,0): wp 0.3 ≤ wm 0.9 → refresh, g− = 0.6. (0,1): wp 0.8, wm 0.2 (< lower) → kept.
    (2,0): wp 0.7 (< upper), wm 0.3 → kept. The pulsed rewrite is exact here too: each column
    sample has one non-zero entry, so update-BL management gives ``BL = diff/dw_min`` pulses with
    probability 1 (noise-free device).
    """
    cell = OneSidedUnitCell(unit_cell_devices=[DEV], refresh_every=2, units_in_mbatch=True,
                            refresh_forward=PERFECT, refresh_update=rewrite)
    state = tile.init(jax.random.key(0), D, X, _unit(cell))
    hidden = params.get_hidden_parameters(state)
    gp = np.zeros((D, X), np.float32)
    gm = np.zeros((D, X), np.float32)
    gp[0, 0], gm[0, 0] = 0.8, 0.3
    gp[1, 0], gm[1, 0] = 0.3, 0.9
    gp[0, 1], gm[0, 1] = 0.8, 0.2
    gp[2, 0], gm[2, 0] = 0.7, 0.3
    hidden["hidden_weights_1"], hidden["hidden_weights_0"] = jnp.asarray(gp), jnp.asarray(gm)
    state = params.set_hidden_parameters(state, hidden)
    zero = (jnp.ones((2, X)), jnp.zeros((2, D)))
    first = tile.update(state, *zero, 0.1, jax.random.key(1))  # 1 call of the 2-call period: no refresh
    np.testing.assert_array_equal(np.asarray(first.device["hidden_weights"]), np.stack([gm, gp]))
    second = tile.update(first, *zero, 0.1, jax.random.key(2))
    new_p, new_m = np.asarray(second.device["hidden_weights"][1]), np.asarray(second.device["hidden_weights"][0])
    exp_p, exp_m = gp.copy(), gm.copy()
    exp_p[0, 0], exp_m[0, 0] = 0.5, 0.0
    exp_p[1, 0], exp_m[1, 0] = 0.0, 0.6
    np.testing.assert_allclose(new_p, exp_p, atol=1e-6)
    np.testing.assert_allclose(new_m, exp_m, atol=1e-6)
    np.testing.assert_allclose(np.asarray(second.weights), gp - gm, atol=1e-6)  # visible weight kept
    assert int(second.aux["cell"]["refresh_count"]) == 2


def test_onesided_copy_inverted_mirrors_own_draw() -> None:
    """``copy_inverted``: device 1 swaps its own up/down steps and mirrors its own bounds (§7 item 8)."""
    dev = ConstantStepDevice()
    plain = tile.init(jax.random.key(4), D, X, _unit(OneSidedUnitCell(unit_cell_devices=[dev])))
    inv = tile.init(jax.random.key(4), D, X, _unit(OneSidedUnitCell(unit_cell_devices=[dev], copy_inverted=True)))
    p, q = plain.device, inv.device
    np.testing.assert_array_equal(np.asarray(q["max_bound"][1]), -np.asarray(p["min_bound"][1]))
    np.testing.assert_array_equal(np.asarray(q["min_bound"][1]), -np.asarray(p["max_bound"][1]))
    np.testing.assert_array_equal(np.asarray(q["dwmin_up"][1]), np.asarray(p["dwmin_down"][1]))
    np.testing.assert_array_equal(np.asarray(q["max_bound"][0]), np.asarray(p["max_bound"][0]))


def test_onesided_refresh_with_write_noise_raises() -> None:
    from rpujax.configs import DifferenceUnitCell, SoftBoundsDevice

    with pytest.warns(DeprecationWarning, match="OneSidedUnitCell"):
        DifferenceUnitCell(unit_cell_devices=[DEV])
    with pytest.raises(ValueError, match="1 or 2"):
        OneSidedUnitCell(unit_cell_devices=[DEV] * 3)

    cell = OneSidedUnitCell(unit_cell_devices=[SoftBoundsDevice(write_noise_std=1.0)], refresh_every=1)
    with pytest.raises(ValueError, match="write noise"):
        tile.init(jax.random.key(0), D, X, _unit(cell))


# ---------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------


def _mp(update=FP, **kwargs):
    return DigitalRankUpdateRPUConfig(device=MixedPrecisionCompound(**kwargs), forward=PERFECT,
                                      backward=PERFECT, update=update)


def test_mixed_precision_chi_timing_and_transfer() -> None:
    """χ accumulates ``lr·d xᵀ``; the first transfer comes after the second call (CUDA timing,
    spec §3.8); it moves ``−ε·trunc(χ/ε)`` onto the device and keeps the remainder on χ; with
    ``n_rows_per_transfer = 2`` rows (0,1), then (2,0) are written."""
    cfg = _mp(device=DEV, n_rows_per_transfer=2, transfer_lr=1.0)
    eps = 0.01
    state = tile.set_weights(tile.init(jax.random.key(0), D, X, cfg), jnp.zeros((D, X)))
    # values chosen so that χ/ε never lands on an integer (trunc ties)
    x = jnp.asarray([[1.0, 0.5137, -0.2519, 0.8093]] * 2)
    d = jnp.asarray([[0.3071, -0.2113, 0.1097]] * 2)
    g = np.asarray(d, np.float64).T @ np.asarray(x, np.float64)  # Σ_b d_b x_bᵀ of one call
    chi = np.zeros((D, X))
    w = np.zeros((D, X))
    rows_per_call = {1: [0, 1], 2: [2, 0], 3: [1, 2]}
    for call in range(4):
        state = tile.update(state, x, d, 0.5, jax.random.key(call))
        chi += 0.5 * g
        for r in rows_per_call.get(call, []):
            n = np.trunc(chi[r] / eps)
            chi[r] -= n * eps
            w[r] -= eps * n
        np.testing.assert_allclose(np.asarray(state.aux["cell"]["chi"]), chi, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state.weights), w, atol=1e-6)
    hidden = params.get_hidden_parameters(state)
    assert list(hidden)[-1] == "hidden_weights_chi"
    np.testing.assert_allclose(np.asarray(hidden["hidden_weights_chi"]), chi, atol=1e-6)
    # set_weights zeroes χ and restarts the schedule
    state = tile.set_weights(state, jnp.zeros((D, X)))
    assert float(jnp.abs(state.aux["cell"]["chi"]).max()) == 0.0 and int(state.aux["cell"]["update_count"]) == 0


def test_mixed_precision_pulsed_transfer_writes_whole_pulses() -> None:
    """With pulses (update management forced on, spec §3.8), a row whose entries all need ``|n|``
    steps of ``ε = dw_min`` gets ``BL = |n|`` and probability 1 everywhere, i.e. exactly ``n``
    pulses: a noise-free ConstantStep device moves by exactly ``−ε·n``. (Without the forced
    management, BL would stay 31 and the counts would be random.)"""
    cfg = _mp(update=UpdateParameters(update_management=False, update_bl_management=False), device=DEV)
    state = tile.set_weights(tile.init(jax.random.key(0), D, X, cfg), jnp.zeros((D, X)))
    x = jnp.asarray([[1.0, -1.0, 1.0, -1.0]])
    d = jnp.asarray([[0.3137, -0.2071, 0.1093]])
    state = tile.update(state, x, d, 0.1, jax.random.key(0))
    state = tile.update(state, x, d, 0.1, jax.random.key(1))
    chi = 0.2 * np.asarray(d).T @ np.asarray(x)
    n = np.trunc(chi / 0.01)
    np.testing.assert_allclose(np.asarray(state.weights), -0.01 * n, atol=1e-6)


def test_mixed_precision_quantization() -> None:
    """Deterministic rounding: ``rint(v/w)·w``, ``w = max|v| / floor(bins/2)``; stochastic rounding
    is unbiased: over 2000 keys the mean of χ matches ``lr·d xᵀ`` within 5 standard errors."""
    from rpujax.cells.mixed_precision import _quantize

    v = jnp.asarray([[0.9, -0.31, 0.05, 0.6]])
    q = np.asarray(_quantize(v, 5, False, jax.random.key(0)))  # 2 levels per side, w = 0.45
    np.testing.assert_allclose(q, [[0.9, -0.45, 0.0, 0.45]], rtol=1e-6)
    qs = np.asarray(jax.vmap(lambda k: _quantize(v, 5, True, k))(jax.random.split(jax.random.key(1), 2000)),
                    np.float64)
    # the abs-max element sits on a level (no rounding); the others are rounded at random
    np.testing.assert_allclose(qs[:, 0, 0], 0.9, rtol=1e-6)
    mean, se = qs.mean(0)[0, 1:], qs.std(0)[0, 1:] / np.sqrt(qs.shape[0])
    assert np.all(se > 0) and np.all(np.abs(mean - np.asarray(v)[0, 1:]) < 5 * se), (mean, v)
    with pytest.raises(ValueError, match="n_x_bins"):
        MixedPrecisionCompound(device=DEV, n_x_bins=1)


def test_mixed_precision_lifecycle_and_unit_cell_device() -> None:
    """Reset / decay act on the analog device only; a unit cell as device is updated through its
    own policy (here ``ALL`` on both sub-devices) and exposes its own hidden parameters."""
    inner = VectorUnitCell(unit_cell_devices=[DEV, DEV])
    cfg = _mp(device=inner, transfer_lr=1.0)
    state = tile.set_weights(tile.init(jax.random.key(0), D, X, cfg), jnp.full((D, X), 0.2))
    x = jnp.ones((1, X))
    d = jnp.full((1, D), 0.1)
    for k in range(2):
        state = tile.update(state, x, d, 0.2, jax.random.key(k))
    hw = np.asarray(state.device["hidden_weights"])
    np.testing.assert_allclose(hw[0], hw[1], atol=1e-7)
    np.testing.assert_allclose(hw[0], 0.2 - 0.04, atol=1e-6)  # χ = 0.04 → 4 steps of 0.01
    names = params.hidden_parameter_names(cfg)
    assert names[-3:] == ("drift_nu_1", "hidden_weights_1", "hidden_weights_chi")
    reset = tile.reset(state, jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(reset.weights), 0.0)
    np.testing.assert_allclose(np.asarray(reset.aux["cell"]["chi"]), np.asarray(state.aux["cell"]["chi"]))
