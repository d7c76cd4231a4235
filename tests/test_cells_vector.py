"""``VectorUnitCell`` / ``ReferenceUnitCell`` (spec cells-inference-api §3.1–§3.2, §1.11–§1.12).

Deterministic devices and exact (``pulse_type=NONE``) updates show which sub-device an update
writes; pulsed updates with ``dw_min_std = 0`` show that ``ALL`` hands every sub-device the same
coincidences, and with ``dw_min_std > 0`` that their cycle-to-cycle noise is independent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpujax import tile
from rpujax.configs import (
    ConstantStepDevice,
    IOParameters,
    ReferenceUnitCell,
    SoftBoundsDevice,
    UnitCellRPUConfig,
    UpdateParameters,
    VectorUnitCell,
    VectorUnitCellUpdatePolicy,
)
from rpujax.tile import parameters as params

PERFECT = IOParameters(is_perfect=True)
FP = UpdateParameters(pulse_type="NONE")
DEV = ConstantStepDevice(dw_min=0.01, w_max=1.0, w_min=-1.0, w_max_dtod=0.0, w_min_dtod=0.0, dw_min_dtod=0.0,
                         up_down_dtod=0.0, dw_min_std=0.0, reset_std=0.0)
D, X = 3, 4
XV = jnp.asarray([[1.0, -0.5, 0.25, 0.5]])
DV = jnp.asarray([[0.2, -0.1, 0.3]])
STEP = -0.1 * np.asarray(DV).T @ np.asarray(XV)  # exact update with lr 0.1


def _config(cell, update=FP):
    return UnitCellRPUConfig(device=cell, forward=PERFECT, backward=PERFECT, update=update)


def _written(before, after):
    """Indices of the sub-devices whose hidden weight changed."""
    diff = np.abs(np.asarray(after.device["hidden_weights"] - before.device["hidden_weights"]))
    return [k for k in range(diff.shape[0]) if diff[k].max() > 0]


def test_single_sequential_increments_before_use() -> None:
    cell = VectorUnitCell(unit_cell_devices=[DEV] * 3, update_policy="SINGLE_SEQUENTIAL", first_update_idx=1)
    state = tile.init(jax.random.key(0), D, X, _config(cell))
    assert int(params.get_hidden_update_index(state)) == 1
    order = []
    for k in range(4):
        new = tile.update(state, XV, DV, 0.1, jax.random.key(k))
        order.append(_written(state, new))
        assert int(params.get_hidden_update_index(new)) == order[-1][0]
        state = new
    assert order == [[2], [0], [1], [2]]  # first update writes first_update_idx + 1
    # set_weights puts the index back to first_update_idx
    assert int(params.get_hidden_update_index(tile.set_weights(state, jnp.zeros((D, X))))) == 1


def test_single_fixed_follows_hidden_update_index() -> None:
    cell = VectorUnitCell(unit_cell_devices=[DEV] * 3, update_policy=VectorUnitCellUpdatePolicy.SINGLE_FIXED)
    state = tile.init(jax.random.key(0), D, X, _config(cell))
    for k in (2, 0, 1):
        state_k = params.set_hidden_update_index(state, k)
        new = tile.update(state_k, XV, DV, 0.1, jax.random.key(k))
        assert _written(state_k, new) == [k]
        np.testing.assert_allclose(np.asarray(new.device["hidden_weights"][k] - state_k.device["hidden_weights"][k]),
                                   STEP, rtol=1e-5, atol=1e-8)
        # the visible weight is Σ γ_k W_k with γ = 1/3
        np.testing.assert_allclose(np.asarray(new.weights),
                                   np.asarray(new.device["hidden_weights"]).sum(0) / 3.0, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="index"):
        params.set_hidden_update_index(state, 3)


def test_single_random_is_uniform() -> None:
    """400 calls on 4 devices: each count ~ Binomial(400, 1/4), |count − 100| < 5·sqrt(75) ≈ 43."""
    cell = VectorUnitCell(unit_cell_devices=[DEV] * 4, update_policy="SINGLE_RANDOM")
    state = tile.init(jax.random.key(0), D, X, _config(cell))

    @jax.jit
    def index_after(k):
        return params.get_hidden_update_index(tile.update(state, XV, DV, 0.1, k))

    counts = np.bincount(np.asarray(jax.vmap(index_after)(jax.random.split(jax.random.key(1), 400))), minlength=4)
    assert counts.sum() == 400
    assert np.all(np.abs(counts - 100) < 5 * np.sqrt(400 * 0.25 * 0.75)), counts


def test_gamma_vec_weighting_and_set_weights_all() -> None:
    """``ALL`` + custom γ: ``set_weights(W)`` sets every device to W, visible ``(Σγ)·W`` (§7 item 7)."""
    cell = VectorUnitCell(unit_cell_devices=[DEV, DEV], gamma_vec=[0.5, 0.25])
    w = np.full((D, X), 0.4, np.float32)
    state = tile.set_weights(tile.init(jax.random.key(0), D, X, _config(cell)), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(state.device["hidden_weights"]), np.stack([w, w]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.weights), 0.75 * w, rtol=1e-6)
    new = tile.update(state, XV, DV, 0.1, jax.random.key(1))
    assert _written(state, new) == [0, 1]
    np.testing.assert_allclose(np.asarray(new.weights), 0.75 * (w + STEP), rtol=1e-5)


def test_all_shares_coincidences_with_independent_noise() -> None:
    """``ALL``: same coincidences on every sub-device (aihwkit ``doSparseUpdate``), own noise.

    Noise-free steps: the two devices move identically. With ``dw_min_std = σ`` and identical
    steps ``s`` (summed form ``n·s + sσ·sqrt(n)ξ``): ``ΔW_0 − ΔW_1 = sσ·sqrt(n)(ξ_0 − ξ_1)``, so
    ``E[(ΔW_0 − ΔW_1)²] = 2 s²σ² E[n]`` with ``E[n_ij] = lr·|x_j d_i|/g`` (no update management,
    no probability above 1); a shared noise draw would give exactly 0, independent coincidences a
    non-zero difference even without noise.
    """
    x = jnp.asarray([[1.0, -0.8, 0.6, 0.9]])
    d = jnp.asarray([[0.5, -0.7, 0.9]])
    lr = 0.01
    pulsed = UpdateParameters(desired_bl=31, update_bl_management=False, update_management=False)

    def device(sigma):
        return ConstantStepDevice(dw_min=0.001, w_max=1.0, w_min=-1.0, w_max_dtod=0.0, w_min_dtod=0.0,
                                  dw_min_dtod=0.0, up_down_dtod=0.0, dw_min_std=sigma)

    def deltas(sigma, n_keys):
        cell = VectorUnitCell(unit_cell_devices=[device(sigma)] * 2)
        state = tile.set_weights(tile.init(jax.random.key(0), D, X, _config(cell, pulsed)), jnp.zeros((D, X)))
        run = jax.jit(jax.vmap(lambda k: tile.update(state, x, d, lr, k).device["hidden_weights"]))
        return np.asarray(run(jax.random.split(jax.random.key(2), n_keys)))

    quiet = deltas(0.0, 4)
    assert np.abs(quiet).max() > 0
    np.testing.assert_array_equal(quiet[:, 0], quiet[:, 1])

    sigma = 0.5
    hw = deltas(sigma, 200)
    dif2 = ((hw[:, 0] - hw[:, 1]) ** 2).ravel()
    expected_n = lr * np.abs(np.asarray(d).T @ np.asarray(x)) / 0.001
    expected = np.mean(2 * 0.001**2 * sigma**2 * expected_n)
    tol = 5 * dif2.std() / np.sqrt(dif2.size)  # 5 standard errors of the mean
    assert abs(dif2.mean() - expected) < tol, (dif2.mean(), expected, tol)


def test_reference_unit_cell_programming() -> None:
    """Only device 0 learns; the reference is programmed with index 1 (spec §3.2)."""
    cell = ReferenceUnitCell(unit_cell_devices=[DEV])  # one device is duplicated
    assert len(cell.unit_cell_devices) == 2
    state = tile.init(jax.random.key(0), D, X, _config(cell))
    np.testing.assert_array_equal(np.asarray(state.device["hidden_weights"][1]), 0.0)
    w = np.full((D, X), 0.3, np.float32)
    r = np.full((D, X), 0.1, np.float32)
    state = tile.set_weights(state, jnp.asarray(w))
    state = tile.set_weights(params.set_hidden_update_index(state, 1), jnp.asarray(r))
    state = params.set_hidden_update_index(state, 0)
    np.testing.assert_allclose(np.asarray(state.weights), w - r, rtol=1e-6)
    new = tile.update(state, XV, DV, 0.1, jax.random.key(3))
    assert _written(state, new) == [0]


def test_lifecycle_on_every_sub_device() -> None:
    decaying = ConstantStepDevice(dw_min=0.01, w_max=1.0, w_min=-1.0, w_max_dtod=0.0, w_min_dtod=0.0,
                                  dw_min_dtod=0.0, dw_min_std=0.0, reset_std=0.0, lifetime=10.0)
    cell = VectorUnitCell(unit_cell_devices=[DEV, decaying], gamma_vec=[1.0, 1.0])
    state = tile.set_weights(tile.init(jax.random.key(0), D, X, _config(cell)), jnp.full((D, X), 0.5))
    assert cell.requires_decay() and not cell.requires_diffusion()
    decayed = tile.post_update_step(state, jax.random.key(1))
    hw = np.asarray(decayed.device["hidden_weights"])
    np.testing.assert_allclose(hw[0], 0.5, rtol=1e-6)      # lifetime 0: no decay
    np.testing.assert_allclose(hw[1], 0.45, rtol=1e-6)     # lifetime 10: ×0.9
    np.testing.assert_allclose(np.asarray(decayed.weights), 0.95, rtol=1e-6)
    reset = tile.reset_columns(state, jax.random.key(2), start_column_idx=3, num_columns=2)
    hw = np.asarray(reset.device["hidden_weights"])
    np.testing.assert_array_equal(hw[:, :, [0, 3]], 0.0)   # columns 3, 0 (wrap) on both devices
    np.testing.assert_allclose(hw[:, :, [1, 2]], 0.5, rtol=1e-6)


def test_hidden_parameters_names_and_roundtrip() -> None:
    wn = SoftBoundsDevice(write_noise_std=1.0)
    cell = VectorUnitCell(unit_cell_devices=[DEV, wn])
    names = params.hidden_parameter_names(_config(cell))
    base = ["max_bound", "min_bound", "dwmin_up", "dwmin_down", "decay_scales", "diffusion_rates", "reset_bias",
            "drift_nu"]
    expected = ([f"{n}_0" for n in base] + ["hidden_weights_0"] + [f"{n}_1" for n in base]
                + ["persistent_weights_1", "slope_up_1", "slope_down_1", "hidden_weights_1"])
    assert list(names) == expected
    state = tile.init(jax.random.key(0), D, X, _config(cell))
    hidden = params.get_hidden_parameters(state)
    assert list(hidden) == expected and all(v.shape == (D, X) for v in hidden.values())
    hidden["max_bound_0"] = jnp.full((D, X), 0.05)
    new = params.set_hidden_parameters(state, hidden)
    assert float(jnp.max(new.device["hidden_weights"][0])) <= np.float32(0.05)  # re-clipped to the new bound
    np.testing.assert_allclose(np.asarray(new.weights), np.asarray(new.device["hidden_weights"]).mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="missing"):
        params.set_hidden_parameters(state, {k: v for k, v in hidden.items() if k != "hidden_weights_1"})


def test_jit_vmap_and_key_determinism() -> None:
    cell = VectorUnitCell(unit_cell_devices=[DEV, DEV], update_policy="SINGLE_RANDOM")
    cfg = _config(cell)
    states = jax.vmap(lambda k: tile.init(k, D, X, cfg))(jax.random.split(jax.random.key(0), 3))
    keys = jax.random.split(jax.random.key(1), 3)
    out = jax.jit(jax.vmap(lambda s, k: tile.update(s, XV, DV, 0.1, k)))(states, keys)
    for i in range(3):
        single = tile.update(jax.tree.map(lambda a: a[i], states), XV, DV, 0.1, keys[i])
        np.testing.assert_allclose(np.asarray(out.weights[i]), np.asarray(single.weights), rtol=1e-6, atol=1e-7)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="gamma_vec"):
        VectorUnitCell(unit_cell_devices=[DEV, DEV], gamma_vec=[1.0])
    with pytest.raises(ValueError, match="update_policy"):
        VectorUnitCell(update_policy="SOMETIMES")
    with pytest.raises(ValueError, match="first_update_idx"):
        VectorUnitCell(unit_cell_devices=[DEV], first_update_idx=1)
    with pytest.raises(ValueError, match="PulsedDevice"):
        VectorUnitCell(unit_cell_devices=[object()])
    assert VectorUnitCell(update_policy="single_random").update_policy is VectorUnitCellUpdatePolicy.SINGLE_RANDOM
