"""The pure-JAX pulsed update against aihwkit 1.2.0 CPU reference statistics (cases a and c).

aihwkit's noise cannot be seeded, so the reference holds statistics over many repeats; every
comparison here is a two-sample comparison of a statistic with a tolerance from both sides'
sample counts (5 standard errors), plus, where the reference uses Gaussian noise, a bound on the
systematic bias of aihwkit's fixed table of 32768 Gaussians (spec tile-core §7.20), plus a float32
rounding floor for the deterministic parts. Formulas are stated next to each comparison.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpujax import configs, tile
from rpujax.configs import ConstantStepDevice, SingleRPUConfig, UpdateParameters
from rpujax.devices import sample_device_parameters, weight_granularity
from rpujax.pulsed import probabilities

REF_DIR = Path(__file__).parent / "data" / "reference"
REF = json.loads((REF_DIR / "aihwkit-1.2.0-cpu.json").read_text())
CASE_A = REF["cases"]["a"]
CASE_C = REF["cases"]["c"]

Z = 5.0
#: aihwkit's CPU normals come from one table of this many iid N(0, 1) draws (§7.20): its sample
#: mean is off by ~N(0, 1/TABLE) and its variance by ~N(0, 2/TABLE), common to every draw.
TABLE = 32768
#: The reference JSON stores 7 significant digits; float32 means carry ~1e-7 relative error.
REL_FLOOR = 2e-6
ABS_FLOOR = 1e-9


#: Both update backends face the same reference; the FFI one needs the built extension (the
#: ``ffi`` fixture skips it where the extension is missing and fails under RPUJAX_REQUIRE_FFI=1).
BACKENDS = ["jax", "ffi"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "ffi":
        request.getfixturevalue("ffi")
    return request.param


def _config(non_default: dict, backend: str = "jax") -> SingleRPUConfig:
    """A SingleRPUConfig from the reference's ``non_default`` (aihwkit dotted names)."""
    device_cls = ConstantStepDevice
    dev_kw: dict = {}
    upd_kw: dict = {}
    for name, value in non_default.items():
        if name == "device":
            device_cls = getattr(configs, value)
        elif name.startswith("device."):
            dev_kw[name[len("device."):]] = value
        elif name.startswith("update."):
            if name == "update.pulse_type":
                value = value.split(".")[-1]
            upd_kw[name[len("update."):]] = value
        else:
            raise AssertionError(f"unexpected config entry {name}")
    return SingleRPUConfig(device=device_cls(**dev_kw), update=UpdateParameters(backend=backend, **upd_kw))


# Everything is jitted: eager op-by-op dispatch compiles every small op anew.
_BL_A_B = jax.jit(probabilities.bl_a_b, static_argnums=(0, 4))
_INPUTS = jax.jit(probabilities.pulse_inputs, static_argnums=(0, 5))


@functools.lru_cache(maxsize=None)
def _device_params(device, d_size: int, x_size: int, seed: int) -> dict:
    """Per-cross-point device parameters, cached per (device, shape): case a's variants share
    devices, and sampling compiles a program."""
    sample = jax.jit(sample_device_parameters, static_argnums=(0, 2, 3))
    return sample(device, jax.random.key(seed), d_size, x_size)


def _zero_tile(cfg: SingleRPUConfig, d_size: int, x_size: int, seed: int) -> tile.TileState:
    """A tile at W = 0 (inside every bound, so set_weights' clip is a no-op; no write noise in
    case a)."""
    params = _device_params(tile.effective_device(cfg), d_size, x_size, seed)
    return tile.TileState(weights=jnp.zeros((d_size, x_size), jnp.float32), device=dict(params), rpu_config=cfg)


def _std_se(samples: np.ndarray, n: int, axis: int = 0) -> np.ndarray:
    """Standard error of a sample std from ``n`` draws: ``sqrt(mu4 - sigma^4) / (2 sigma sqrt(n))``
    (delta method), with the central moments estimated from ``samples``; 0 where sigma is 0."""
    c = samples - samples.mean(axis=axis, keepdims=True)
    var = (c**2).mean(axis=axis)
    mu4 = (c**4).mean(axis=axis)
    sigma = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(np.maximum(mu4 - var**2, 0.0) / n) / (2.0 * sigma)
    return np.where(sigma > 0, se, 0.0)


def _assert_close(name: str, ours: np.ndarray, ref: np.ndarray, tol: np.ndarray) -> None:
    bad = np.abs(ours - ref) > tol
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} entries outside tolerance, e.g. at {idx}: ours "
            f"{ours[bad][:5]}, reference {ref[bad][:5]}, tolerance {tol[bad][:5]}"
        )


# ---------------------------------------------------------------------------------------------
# case a: one update of an 8x16 ConstantStep tile, per-element mean/std of dW over repeats
# ---------------------------------------------------------------------------------------------

R_A = CASE_A["repeats"]  # the same number of repeats as the reference: 20000


def _repeat_updates(cfg: SingleRPUConfig, xb: np.ndarray, db: np.ndarray, lr: float, repeats: int) -> np.ndarray:
    """``(repeats, D, X)`` weight changes of independent update calls on a zero tile."""
    state = _zero_tile(cfg, db.shape[1], xb.shape[1], seed=3)
    keys = jax.random.split(jax.random.key(20240), repeats)
    xb = jnp.asarray(xb, jnp.float32)
    db = jnp.asarray(db, jnp.float32)

    @jax.jit
    def one(key):
        return tile.update(state, xb, db, lr, key).weights - state.weights

    return np.asarray(jax.lax.map(one, keys, batch_size=5000), np.float64)


def _compare_moments(name: str, dw: np.ndarray, ref_mean, ref_std, r_ref: int, c2c: float) -> None:
    """Per element: ``|mean - mean_ref| <= 5 sqrt(s_ref^2/R_ref + s^2/R) + sys + floor`` and
    ``|std - std_ref| <= 5 sqrt(SE_std(R)^2 + SE_std(R_ref)^2) + sys + floor``.

    ``sys`` is aihwkit's Gaussian-table bias, zero without cycle-to-cycle noise: the mean step is
    scaled by ``(1 + c2c*eps)``, ``eps ~ N(0, 1/TABLE)``, so ``5 c2c |mean| / sqrt(TABLE)``; the
    std by at most ``(1 + eta/2)``, ``eta ~ N(0, 2/TABLE)``, so ``5 std sqrt(2/TABLE)/2``.
    """
    r = dw.shape[0]
    ref_mean = np.asarray(ref_mean, np.float64)
    ref_std = np.asarray(ref_std, np.float64)
    mean = dw.mean(axis=0)
    std = dw.std(axis=0, ddof=1)
    floor_m = REL_FLOOR * np.maximum(np.abs(ref_mean), np.abs(mean)) + ABS_FLOOR
    floor_s = REL_FLOOR * np.maximum(ref_std, std) + ABS_FLOOR
    sys_m = Z * c2c * np.abs(mean) / math.sqrt(TABLE) if c2c > 0 else 0.0
    sys_s = Z * ref_std * math.sqrt(2.0 / TABLE) / 2.0 if c2c > 0 else 0.0
    tol_m = Z * np.sqrt(ref_std**2 / r_ref + std**2 / r) + sys_m + floor_m
    _assert_close(f"{name} mean", mean, ref_mean, tol_m)
    se_s = np.sqrt(_std_se(dw, r) ** 2 + _std_se(dw, r_ref) ** 2)
    tol_s = Z * se_s + sys_s + floor_s
    _assert_close(f"{name} std", std, ref_std, tol_s)


@pytest.mark.parametrize("variant", sorted(CASE_A["variants"]))
def test_case_a_single_update(variant: str, backend: str) -> None:
    """Every update variant of case a (UM/BL settings, pulse types, c2c noise, up/down asymmetry)."""
    spec = CASE_A["variants"][variant]
    cfg = _config(spec["config"]["non_default"], backend)
    x = np.asarray(CASE_A["inputs"]["x"], np.float32)[None]
    d = np.asarray(CASE_A["inputs"]["d"], np.float32)[None]
    dw = _repeat_updates(cfg, x, d, CASE_A["lr"], R_A)
    _compare_moments(variant, dw, spec["mean"], spec["std"], CASE_A["repeats"], cfg.device.dw_min_std)


def test_case_a_batch_of_two_uses_per_sample_management(backend: str) -> None:
    """Batch of two samples with different magnitudes: BL/A/B are per sample (CPU loops)."""
    spec = CASE_A["batch2_per_sample_um"]
    cfg = _config(spec["config"]["non_default"], backend)
    x = np.asarray(CASE_A["inputs"]["x"], np.float32)
    x2 = np.asarray(spec["x2"], np.float32)
    d = np.asarray(CASE_A["inputs"]["d"], np.float32)
    dw = _repeat_updates(cfg, np.stack([x, x2]), np.stack([d, d]), CASE_A["lr"], R_A)
    _compare_moments("batch2", dw, spec["mean"], spec["std"], CASE_A["repeats"], cfg.device.dw_min_std)


def _analytic_cases():
    for name, spec in sorted(CASE_A["variants"].items()):
        if "analytic_BL_A_B" in spec:
            yield pytest.param(spec, [spec["analytic_BL_A_B"]], [CASE_A["inputs"]["x"]], id=name)
    spec = CASE_A["batch2_per_sample_um"]
    yield pytest.param(spec, spec["per_sample_BL_A_B"], [CASE_A["inputs"]["x"], spec["x2"]], id="batch2")


@pytest.mark.parametrize(("spec", "expected", "xs"), list(_analytic_cases()))
def test_case_a_bl_a_b_match_aihwkit(spec: dict, expected: list, xs: list) -> None:
    """Per-sample BL, A, B equal the reference's mirror of aihwkit's calculateBlAB/UM (float32)."""
    cfg = _config(spec["config"]["non_default"])
    x = jnp.asarray(xs, jnp.float32)
    d = jnp.broadcast_to(jnp.asarray(CASE_A["inputs"]["d"], jnp.float32), (x.shape[0], 8))
    g = weight_granularity(cfg.device)
    bl, a, b = _BL_A_B(
        cfg.update, jnp.max(jnp.abs(x), 1), jnp.max(jnp.abs(d), 1), jnp.float32(CASE_A["lr"]), g
    )
    np.testing.assert_array_equal(np.asarray(bl), [e["BL"] for e in expected])
    # The reference prints 7 significant digits.
    np.testing.assert_allclose(np.asarray(a), [e["A"] for e in expected], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(b), [e["B"] for e in expected], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# case c: pulse-response trajectories of a 64x64 tile, 2000 up then 2000 down steps
# ---------------------------------------------------------------------------------------------

N_STEPS = 4000
EVERY = 200
D_C = X_C = 64
#: Independent tiles per device when the pulse counts are random (see _counts_are_random).
REPLICAS = 16


def _counts_are_random(cfg: SingleRPUConfig, lr: float) -> bool:
    """True if x = 1, d = +-1 give pulse probabilities < 1 (random counts, e.g. ExpStep): then
    elements sharing a row or column bit line are correlated and the tile mean is not an average
    of 4096 independent values."""
    g = weight_granularity(cfg.device)
    ones = jnp.ones((1, X_C), jnp.float32)
    _, px, pd = _INPUTS(cfg.update, ones, -jnp.ones((1, D_C)), lr, jnp.zeros(2, jnp.uint32), g)
    return bool(jnp.any(jnp.abs(px) < 1) | jnp.any(jnp.abs(pd) < 1))


def _trajectories(cfg: SingleRPUConfig, lr: float, replicas: int) -> np.ndarray:
    """``(replicas, 21, D*X)`` weights at pulse 0, 200, ..., 4000 of independent tiles."""
    x = jnp.ones((1, X_C), jnp.float32)

    def run(seed_key):
        k_init, k_set, k_upd = jax.random.split(seed_key, 3)
        state = tile.init(k_init, D_C, X_C, cfg)
        state = tile.set_weights(state, jnp.zeros((D_C, X_C), jnp.float32), key=k_set)

        def step(state, i):
            d = jnp.where(i < N_STEPS // 2, -1.0, 1.0) * jnp.ones((1, D_C), jnp.float32)
            state = tile.update(state, x, d, lr, jax.random.fold_in(k_upd, i))
            return state, state.weights

        _, ws = jax.lax.scan(step, state, jnp.arange(N_STEPS))
        ws = ws[EVERY - 1 :: EVERY].reshape(N_STEPS // EVERY, -1)
        return jnp.concatenate([jnp.zeros((1, D_C * X_C)), ws], axis=0)

    keys = jax.random.split(jax.random.key(99), replicas)
    return np.asarray(jax.jit(jax.vmap(run))(keys), np.float64)


@pytest.mark.parametrize("device", sorted(CASE_C["devices"]))
def test_case_c_pulse_response(device: str, backend: str) -> None:
    """Mean and std over the 4096 devices every 200 pulses.

    Independent devices (deterministic counts): ``SE_mean = sqrt(s_ref^2 + s^2)/sqrt(4096)`` and
    the delta-method SE of the std on both sides. Random counts (ExpStep, whose granularity makes
    the per-step count random near 1, see the case description): the tile mean and std are
    averages over correlated devices, so their standard errors come from the spread over
    ``REPLICAS`` independent tiles: ``SE = sd_replicas * sqrt(1 + 1/REPLICAS)`` (ours is the mean
    over the replicas, the reference is one tile). With cycle-to-cycle noise, aihwkit's table
    bias adds ``5 c2c L(t)/sqrt(TABLE)`` to the mean tolerance, ``L(t)`` the path length of the
    mean trajectory up to t (a step multiplier (1 + c2c eps) moves a non-expanding trajectory by at
    most c2c |eps| L(t)), and ``5 std sqrt(2/TABLE)/2`` to the std tolerance. Deterministic parts
    get a float32 accumulation floor ``t * 2^-24 * 0.6``: one half-ulp rounding of |w| <= 0.6 per
    pulse on each side.
    """
    spec = CASE_C["devices"][device]
    cfg = _config(spec["config"]["non_default"], backend)
    lr = spec["weight_granularity_used_as_lr"]
    ref_mean = np.asarray(spec["mean"], np.float64)
    ref_std = np.asarray(spec["std"], np.float64)
    pulses = np.asarray(spec["pulse"], np.float64)

    random_counts = _counts_are_random(cfg, lr)
    replicas = REPLICAS if random_counts else 1
    ws = _trajectories(cfg, lr, replicas)  # (R, T, N)
    means = ws.mean(axis=2)
    stds = ws.std(axis=2)
    mean = means.mean(axis=0)
    std = stds.mean(axis=0)

    floor = pulses * 2.0**-24 * 0.6 + ABS_FLOOR
    c2c = cfg.device.dw_min_std
    path = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(ref_mean)))])
    sys_m = Z * c2c * path / math.sqrt(TABLE) if c2c > 0 else 0.0
    sys_s = Z * ref_std * math.sqrt(2.0 / TABLE) / 2.0 if c2c > 0 else 0.0
    n = D_C * X_C
    if random_counts:
        se_m = means.std(axis=0, ddof=1) * math.sqrt(1.0 + 1.0 / replicas)
        se_s = stds.std(axis=0, ddof=1) * math.sqrt(1.0 + 1.0 / replicas)
    else:
        se_m = np.sqrt((ref_std**2 + std**2) / n)
        samples = ws[0].T  # (N, T)
        se_s = np.sqrt(2.0) * _std_se(samples, n)
    _assert_close(f"{device} mean", mean, ref_mean, Z * se_m + sys_m + floor)
    _assert_close(f"{device} std", std, ref_std, Z * se_s + sys_s + floor)
