"""The FFI kernel of the pulsed update against the pure-JAX path and against the contract.

``rpujax.pulsed.ffi_backend.apply_pulses`` (ffi/pulsed_cpu.cc) and
``rpujax.pulsed.jax_backend.apply_pulses`` implement the same contract (ffi/README.md): for the same
key they draw the same random numbers, so

- coincidence counts must be *identical*: they come from integer Threefry words, exact
  ``float(top 24 bits) * 2^-24 < p`` comparisons and popcounts (mode 0), or from one float
  division / product and ``rint`` (modes 1, 2). They are checked against an independent numpy
  implementation of the contract written here.
- weights agree to float rounding only. The normals differ in the last bits: the kernel computes
  log and cos with its own polynomials (vectorised), the JAX path with XLA's (each within about
  1-2 ulp of the exact value), and the kernel's summed ConstantStep form takes one square root of
  ``n (-2 ln u1)`` where JAX multiplies ``sqrt(n)`` and ``sqrt(-2 ln u1)``; XLA and gcc also fuse
  different multiply-adds. Each pulse is a few float operations on a weight ``|w| <= 1`` whose
  rounding may differ by an ulp or so, and the device rules do not amplify differences
  (``|dw'/dw| <= 1 + |slope|`` with slopes ~1e-3). Hence the bound used below:
  ``|w_ffi - w_jax| <= 4 ulp(1) (1 + N)`` per element, with N the element's total number of
  pulses in the call. A wrong rule, sign, noise term or pulse count is off by at least a fraction of
  one step (dw_min ~ 1e-3 times the noise factor), i.e. >= ~1e-4, above the bound for every case
  below (N <= ~100), so these comparisons fail on real deviations.

The extension is required (``ffi`` fixture): without it these tests are skipped, and they fail
under RPUJAX_REQUIRE_FFI=1 (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpujax import _rng, devices
from rpujax import configs as C
from rpujax.pulsed import jax_backend

EPS = float(np.finfo(np.float32).eps)  # ulp(1.0)

# (id, device): every kind, with and without write noise where the kind supports it, and the noise
# variants of the rules (additive / multiplicative, ExpStep's complex noise, piecewise nodes).
CASES = [
    ("constant_step", C.ConstantStepDevice()),
    ("soft_bounds_wn", C.SoftBoundsDevice(write_noise_std=0.5)),
    ("linear_step_additive", C.LinearStepDevice(gamma_up=0.3, gamma_down=0.2, mult_noise=False)),
    ("exp_step_wn", C.ExpStepDevice(write_noise_std=0.5)),
    ("exp_step_complex", C.ExpStepDevice(dw_min_std_add=0.001, dw_min_std_slope=0.2)),
    ("pow_step", C.PowStepDevice()),
    ("pow_step_wn", C.PowStepDevice(pow_gamma=1.7, write_noise_std=0.4)),
    ("pow_step_reference", C.PowStepReferenceDevice(reference_std=0.05)),
    ("soft_bounds_reference_wn", C.SoftBoundsReferenceDevice(reference_std=0.05, write_noise_std=0.3)),
    ("soft_bounds_reference_mult", C.SoftBoundsReferenceDevice(reference_std=0.05, mult_noise=True)),
    (
        "piecewise_wn",
        C.PiecewiseStepDevice(piecewise_up=[1.5, 1.0, 0.5, 0.3], piecewise_down=[0.3, 0.5, 1.0, 1.4], write_noise_std=0.2),
    ),
    ("piecewise_one_node", C.PiecewiseStepDevice(piecewise_up=[1.2], piecewise_down=[0.7])),
]

D, X, B, BL_MAX = 19, 37, 5, 31  # X is not a multiple of 16: the kernel's row tails are exercised


def _inputs(mode: int, seed: int, *, d: int = D, x: int = X, b: int = B, bl_max: int = BL_MAX):
    """``(px, pd, bl)`` in the format of ``mode`` (ffi/README.md §2), with a skipped sample
    (bl = 0), a short pulse train, zeros, and probabilities >= 1 (mode 0)."""
    rng = np.random.default_rng(seed)
    bl = np.full(b, bl_max, np.int32)
    if mode == 1:
        # BL with an inexact reciprocal: (cd_i / BL) cx_j then hits rint's ties (x.5) often, where
        # only the exact float division gives the contract's count
        bl[:] = 20
    if b >= 3:
        bl[1] = 0
        bl[2] = max(bl_max // 3, 1)
    if mode == 0:
        px = rng.uniform(-1.2, 1.2, (b, x))
        pd = rng.uniform(-1.0, 1.0, (b, d))
    elif mode == 1:  # signed integer counts |c| <= BL
        px = np.rint(rng.uniform(-1, 1, (b, x)) * bl[:, None])
        pd = np.rint(rng.uniform(-1, 1, (b, d)) * bl[:, None])
    else:  # signed quantised probabilities in [-1, 1]
        px = np.round(rng.uniform(-1, 1, (b, x)) * 16) / 16
        pd = np.round(rng.uniform(-1, 1, (b, d)) * 16) / 16
    px[:, ::7] = 0.0
    pd[:, ::5] = 0.0
    return px.astype(np.float32), pd.astype(np.float32), bl


def _key_data(seed: int) -> jax.Array:
    return jax.random.key_data(jax.random.key(seed))


def reference_counts(mode: int, px, pd, bl, key_data, bl_max: int) -> np.ndarray:
    """Signed counts ``int[B, D, X]`` (+n: n down pulses, -n: up) straight from the contract
    (ffi/README.md §1-§2), independently of both backends."""
    px = np.asarray(px, np.float32)
    pd = np.asarray(pd, np.float32)
    k0, k1 = (np.uint32(v) for v in np.asarray(key_data))
    out = np.zeros((px.shape[0], pd.shape[1], px.shape[1]), np.int64)
    for b in range(px.shape[0]):
        if bl[b] <= 0:
            continue
        if mode == 0:
            s0, s1 = _rng.sample_key(k0, k1, b)
            k = np.arange(bl_max, dtype=np.uint32)[:, None]

            def bits(purpose, p):
                idx = np.arange(p.shape[0], dtype=np.uint32)[None, :]
                y0, _ = _rng.threefry(s0, s1, _rng.stream_c0(purpose, k), idx)
                fire = np.asarray(_rng.uniform24(y0)) < np.abs(p)[None, :]
                return (fire & (k < bl[b])).astype(np.int64)

            n = bits(_rng.DBIT, pd[b]).T @ bits(_rng.XBIT, px[b])
            down = (pd[b][:, None] > 0) == (px[b][None, :] > 0)
            out[b] = np.where(down, n, -n)
        elif mode == 1:  # aihwkit: rint((cd_i / BL) * cx_j), IEEE float32 division
            q = pd[b] / np.float32(bl[b])
            out[b] = np.rint(q[:, None] * px[b][None, :]).astype(np.int64)
        else:  # rint((BL |pd_i|) |px_j|), direction sign(px_j) sign(pd_i)
            a = np.float32(bl[b]) * np.abs(pd[b])
            n = np.rint(a[:, None] * np.abs(px[b])[None, :]).astype(np.int64)
            down = (pd[b][:, None] > 0) == (px[b][None, :] > 0)
            out[b] = np.where(down, n, -n)
    return out


def applied_counts(backend, mode: int, px, pd, bl, key_data, bl_max: int) -> np.ndarray:
    """Signed counts as a backend (module with ``apply_pulses``) applies them: a ConstantStep device
    with unit steps, no noise and far bounds moves a weight from 0 to exactly -c (integers are
    exact in float32); one call per sample with the other samples switched off (bl = 0), same key,
    so every sample keeps its index and its random streams."""
    d, x = pd.shape[1], px.shape[1]
    params = jnp.stack([jnp.full((d, x), 1e6), jnp.full((d, x), -1e6), jnp.ones((d, x)), jnp.ones((d, x))])
    call = jax.jit(
        lambda bl_b: backend.apply_pulses(
            jnp.zeros((d, x), jnp.float32), None, params.astype(jnp.float32), px, pd, bl_b, key_data,
            kind=0, scalars=(0.0,), mode=mode, bl_max=bl_max,
        )[0]
    )
    out = np.zeros((px.shape[0], d, x), np.int64)
    for b in range(px.shape[0]):
        w = np.asarray(call(np.where(np.arange(px.shape[0]) == b, bl, 0).astype(np.int32)))
        assert np.all(w == np.rint(w))
        out[b] = -w.astype(np.int64)
    return out


def _device_setup(device, seed: int, d: int = D, x: int = X):
    kind, _, scalars = devices.kernel_layout(device)
    params = devices.pack_params(device, devices.sample_device_parameters(device, jax.random.key(seed), d, x))
    rng = np.random.default_rng(seed + 1)
    b_max = np.asarray(params[0])
    b_min = np.asarray(params[1])
    # weights anywhere inside the bounds, some at the bounds themselves
    u = rng.uniform(0.0, 1.0, (d, x))
    w = b_min + u * (b_max - b_min)
    w[0, :] = b_max[0, :]
    w[1, :] = b_min[1, :]
    w = jnp.asarray(w, jnp.float32)
    persistent = w - 0.01 * jnp.sign(w) if devices.uses_persistent_weights(device) else None
    return kind, scalars, params, w, persistent


def _tolerance(counts: np.ndarray) -> np.ndarray:
    return 4.0 * EPS * (1.0 + np.abs(counts).sum(axis=0))


def _assert_within(got, want, tol, what: str = "weights") -> None:
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), (
        f"{what}: |ffi - jax| = {err[worst]:.3g} at {worst} exceeds {tol[worst]:.3g}; "
        f"{int((err > tol).sum())} of {err.size} elements out of tolerance"
    )


@pytest.fixture(scope="module")
def fb(ffi):
    from rpujax.pulsed import ffi_backend

    return ffi_backend


# ---- counts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_counts_match_contract(fb, mode):
    px, pd, bl = _inputs(mode, seed=10 + mode)
    kd = _key_data(3)
    ref = reference_counts(mode, px, pd, bl, kd, BL_MAX)
    got = applied_counts(fb, mode, px, pd, bl, kd, BL_MAX)
    assert np.abs(ref).sum() > 1000  # the case has pulses in both directions
    assert (ref > 0).any() and (ref < 0).any()
    np.testing.assert_array_equal(got, ref)


def test_counts_long_pulse_trains(fb):
    """bl_max > 32: the bit lines take two uint32 words per index."""
    px, pd, bl = _inputs(0, seed=4, bl_max=45)
    kd = _key_data(8)
    ref = reference_counts(0, px, pd, bl, kd, 45)
    assert np.abs(ref).max() > 32
    np.testing.assert_array_equal(applied_counts(fb, 0, px, pd, bl, kd, 45), ref)


def test_jax_counts_match_contract():
    """The same reference pins the pure-JAX side (its counts through the same unit-step device)."""
    for mode in (0, 1, 2):
        px, pd, bl = _inputs(mode, seed=10 + mode)
        kd = _key_data(3)
        ref = reference_counts(mode, px, pd, bl, kd, BL_MAX)
        np.testing.assert_array_equal(applied_counts(jax_backend, mode, px, pd, bl, kd, BL_MAX), ref, err_msg=f"mode {mode}")


# ---- FFI vs pure JAX ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize(("name", "device"), CASES, ids=[c[0] for c in CASES])
def test_ffi_matches_jax(fb, name, device, mode):
    kind, scalars, params, w, persistent = _device_setup(device, seed=zlib.crc32(name.encode()) % 1000)
    px, pd, bl = _inputs(mode, seed=20 + mode)
    kd = _key_data(5)
    kw = dict(kind=kind, scalars=scalars, mode=mode, bl_max=BL_MAX)
    w_j, p_j = jax_backend.apply_pulses(w, persistent, params, px, pd, bl, kd, **kw)
    w_f, p_f = jax.jit(lambda *a: fb.apply_pulses(*a, **kw))(w, persistent, params, px, pd, bl, kd)
    counts = reference_counts(mode, px, pd, bl, kd, BL_MAX)
    tol = _tolerance(counts)
    moved = np.abs(np.asarray(w_j) - np.asarray(w)) > 1e-5
    assert moved.mean() > 0.3, "the case must actually move the weights"
    _assert_within(w_f, w_j, tol)
    if persistent is None:
        assert p_f is None
    else:
        _assert_within(p_f, p_j, tol, "persistent weights")
        # write noise redraws exactly the touched elements
        touched = np.abs(counts).sum(axis=0) > 0
        assert touched.any() and (~touched).any()
        np.testing.assert_array_equal(np.asarray(w_f)[~touched], np.asarray(w)[~touched])


def test_constant_step_guard_fallback(fb):
    """Weights next to their bounds with long pulse trains: the summed form's guard fails for many
    elements, which then take the per-pulse path with PULSE_NORMAL draws. A kernel that used the
    summed form there (or drew the wrong normals) would differ from JAX by ~dw_min."""
    device = C.ConstantStepDevice(dw_min_std=0.5)
    kind, scalars, params, _, _ = _device_setup(device, seed=1)
    b_max, b_min = np.asarray(params[0]), np.asarray(params[1])
    rng = np.random.default_rng(2)
    near_top = rng.uniform(0, 1, (D, X)) < 0.5
    gap = rng.uniform(0.0, 0.03, (D, X))
    w = jnp.asarray(np.where(near_top, b_max - gap, b_min + gap), jnp.float32)
    px = np.where(rng.uniform(size=(8, X)) < 0.5, 1.0, -1.0).astype(np.float32) * 0.9
    pd = np.where(rng.uniform(size=(8, D)) < 0.5, 1.0, -1.0).astype(np.float32) * 0.9
    bl = np.full(8, BL_MAX, np.int32)
    kd = _key_data(12)
    counts = reference_counts(0, px, pd, bl, kd, BL_MAX)
    s = np.where(counts[0] > 0, np.asarray(params[3]), np.asarray(params[2]))
    reach = np.abs(counts[0]) * s * (1 + devices.XI_MAX * 0.5)
    guard_fails = (np.asarray(w) - reach < b_min) | (np.asarray(w) + reach > b_max)
    assert guard_fails.mean() > 0.5
    kw = dict(kind=kind, scalars=scalars, mode=0, bl_max=BL_MAX)
    w_j, _ = jax_backend.apply_pulses(w, None, params, px, pd, bl, kd, **kw)
    w_f, _ = fb.apply_pulses(w, None, params, px, pd, bl, kd, **kw)
    _assert_within(w_f, w_j, _tolerance(counts))
    w_f = np.asarray(w_f)
    assert np.all((w_f <= b_max) & (w_f >= b_min))
    assert (w_f == b_max).sum() > 10 and (w_f == b_min).sum() > 10  # clipped at the bounds


def test_no_pulses_leaves_weights_unchanged(fb):
    device = C.SoftBoundsDevice(write_noise_std=0.3)
    kind, scalars, params, w, persistent = _device_setup(device, seed=3)
    px, pd, bl = _inputs(0, seed=1)
    for bl0, pd0 in ((np.zeros_like(bl), pd), (bl, np.zeros_like(pd))):
        w_f, p_f = fb.apply_pulses(w, persistent, params, px, pd0, bl0, _key_data(1), kind=kind, scalars=scalars,
                                   mode=0, bl_max=BL_MAX)
        np.testing.assert_array_equal(np.asarray(w_f), np.asarray(w))
        np.testing.assert_array_equal(np.asarray(p_f), np.asarray(persistent))


def test_write_noise_statistics(fb):
    """apparent - persistent of the touched elements is N(0, write_noise^2): sample std within
    5 standard errors (se of a std estimate = sigma / sqrt(2 n)); untouched elements keep their
    apparent weight exactly."""
    device = C.SoftBoundsDevice(write_noise_std=2.0)  # write_noise = 2 dw_min = 0.002
    kind, scalars, params, w, persistent = _device_setup(device, seed=4, d=64, x=64)
    px, pd, bl = _inputs(0, seed=6, d=64, x=64, b=1)
    bl[:] = BL_MAX
    w_f, p_f = fb.apply_pulses(w, persistent, params, px, pd, bl, _key_data(2), kind=kind, scalars=scalars, mode=0,
                               bl_max=BL_MAX)
    counts = reference_counts(0, px, pd, bl, _key_data(2), BL_MAX)[0]
    touched = counts != 0
    noise = (np.asarray(w_f) - np.asarray(p_f))[touched]
    sigma = scalars[2]
    n = noise.size
    assert n > 1000
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.std() - sigma) < 5 * sigma / np.sqrt(2 * n)
    np.testing.assert_array_equal(np.asarray(w_f)[~touched], np.asarray(w)[~touched])


# ---- row shards (row_offset) ----------------------------------------------------------------------

ROW_CASES = [
    ("constant_step", C.ConstantStepDevice(dw_min_std=0.3), 0),
    ("constant_step_mean_count", C.ConstantStepDevice(dw_min_std=0.3), 1),
    ("soft_bounds_wn", C.SoftBoundsDevice(write_noise_std=0.5), 0),
    ("exp_step_wn", C.ExpStepDevice(write_noise_std=0.5), 0),
]
ROW0, ROW1 = 7, 15  # a slice of rows in the middle of the tile, not aligned to anything


@pytest.mark.parametrize(("name", "device", "mode"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_row_offset_slice_matches_jax_and_the_whole_tile(fb, name, device, mode):
    """The kernel on rows [ROW0, ROW1) with row_offset = ROW0 equals the pure-JAX backend with the
    same row_offset (to the FFI-vs-JAX tolerance, counts of the whole tile's rows) and is
    bit-identical to the same rows of the kernel's whole-tile update."""
    kind, scalars, params, w, persistent = _device_setup(device, seed=zlib.crc32(name.encode()) % 1000)
    px, pd, bl = _inputs(mode, seed=30 + mode)
    kd = _key_data(6)
    kw = dict(kind=kind, scalars=scalars, mode=mode, bl_max=BL_MAX)
    rows = slice(ROW0, ROW1)
    sl = (w[rows], None if persistent is None else persistent[rows], params[:, rows], px, pd[:, rows], bl, kd)
    w_j, p_j = jax_backend.apply_pulses(*sl, row_offset=ROW0, **kw)
    # traced offset, as inside shard_map
    w_f, p_f = jax.jit(lambda ro, *a: fb.apply_pulses(*a, row_offset=ro, **kw))(jnp.int32(ROW0), *sl)
    w_whole, p_whole = fb.apply_pulses(w, persistent, params, px, pd, bl, kd, **kw)
    tol = _tolerance(reference_counts(mode, px, pd, bl, kd, BL_MAX)[:, rows])
    assert (np.abs(np.asarray(w_j) - np.asarray(w[rows])) > 1e-5).mean() > 0.3
    _assert_within(w_f, w_j, tol)
    np.testing.assert_array_equal(np.asarray(w_f), np.asarray(w_whole)[rows])
    if persistent is not None:
        _assert_within(p_f, p_j, tol, "persistent weights")
        np.testing.assert_array_equal(np.asarray(p_f), np.asarray(p_whole)[rows])
    # the offset matters: the same rows drawn as rows 0.. of their own tile differ
    w_0, _ = fb.apply_pulses(*sl, **kw)
    assert not np.array_equal(np.asarray(w_0), np.asarray(w_f))


def test_row_offset_per_tile_under_vmap(fb):
    """Shards of one tile as a batch of tiles (row_offset mapped with them): one kernel call that
    reproduces the whole tile; px, bl and the key stay shared."""
    device = C.SoftBoundsDevice(write_noise_std=0.5)
    kind, scalars, params, w, persistent = _device_setup(device, seed=8, d=20)
    px, pd, bl = _inputs(0, seed=9, d=20)
    kd = _key_data(4)
    kw = dict(kind=kind, scalars=scalars, mode=0, bl_max=BL_MAX)
    n = 4
    offsets = jnp.arange(n, dtype=jnp.int32) * (20 // n)

    def one(w, p, prm, pd, ro):
        return fb.apply_pulses(w, p, prm, px, pd, bl, kd, row_offset=ro, **kw)

    split = lambda a, ax: jnp.stack(jnp.split(a, n, axis=ax))  # noqa: E731
    args = (split(w, 0), split(persistent, 0), split(params, 1), split(jnp.asarray(pd), 1), offsets)
    batched = jax.jit(jax.vmap(one))
    w_v, p_v = batched(*args)
    w_whole, p_whole = fb.apply_pulses(w, persistent, params, px, pd, bl, kd, **kw)
    np.testing.assert_array_equal(np.asarray(w_v).reshape(w.shape), np.asarray(w_whole))
    np.testing.assert_array_equal(np.asarray(p_v).reshape(w.shape), np.asarray(p_whole))
    assert batched.lower(*args).as_text().count("@rpujax_pulsed_update") == 1


def test_row_offset_out_of_range_is_an_error(fb):
    device = C.ConstantStepDevice()
    kind, scalars, params, w, _ = _device_setup(device, seed=0)
    px, pd, bl = _inputs(0, seed=0)
    kw = dict(kind=kind, scalars=scalars, mode=0, bl_max=BL_MAX)
    for ro in (-1, 2**32 // X):  # negative; global rows past a 2^32-element tile
        with pytest.raises(Exception, match="row_offset"):
            jax.block_until_ready(fb.apply_pulses(w, None, params, px, pd, bl, _key_data(0), row_offset=ro, **kw))
    with pytest.raises(ValueError, match="row_offset has shape"):
        fb.apply_pulses(w, None, params, px, pd, bl, _key_data(0), row_offset=jnp.zeros(2, jnp.int32), **kw)


# ---- batching, jit, threads -----------------------------------------------------------------------


def _batched_case(t: int = 3):
    device = C.SoftBoundsDevice(write_noise_std=0.5)
    kind, _, scalars = devices.kernel_layout(device)
    keys = jax.random.split(jax.random.key(0), t)
    params = jax.vmap(lambda k: devices.pack_params(device, devices.sample_device_parameters(device, k, D, X)))(keys)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.uniform(-0.3, 0.3, (t, D, X)), jnp.float32)
    pers = w * 0.9
    px, pd, bl = _inputs(0, seed=7)
    kd = jax.vmap(jax.random.key_data)(jax.random.split(jax.random.key(9), t))
    return dict(kind=kind, scalars=scalars, mode=0, bl_max=BL_MAX), params, w, pers, px, pd, bl, kd


def test_vmap_over_tiles_is_one_call_and_equals_a_loop(fb):
    kw, params, w, pers, px, pd, bl, kd = _batched_case()

    def one(w, p, prm, k):
        return fb.apply_pulses(w, p, prm, px, pd, bl, k, **kw)

    batched = jax.jit(jax.vmap(one))
    w_v, p_v = batched(w, pers, params, kd)
    for t in range(w.shape[0]):
        w1, p1 = one(w[t], pers[t], params[t], kd[t])
        np.testing.assert_array_equal(np.asarray(w_v[t]), np.asarray(w1))
        np.testing.assert_array_equal(np.asarray(p_v[t]), np.asarray(p1))
    # one kernel call; the shared px, pd, bl enter unbatched (not broadcast per tile)
    calls = [ln for ln in batched.lower(w, pers, params, kd).as_text().splitlines() if "@rpujax_pulsed_update" in ln]
    assert len(calls) == 1
    sig = calls[0].split(" : ")[-1]
    assert f"tensor<{B}x{X}xf32>" in sig and f"tensor<{B}x{D}xf32>" in sig and f"tensor<{B}xi32>" in sig
    assert f"tensor<3x{B}x{X}xf32>" not in sig


def test_vmap_over_inputs_with_shared_key_and_params(fb):
    """The other split: weights, px, pd and bl per tile, one key and one parameter set for all."""
    kw, params, w, pers, _, _, _, kd = _batched_case()
    rng = np.random.default_rng(3)
    px = jnp.asarray(rng.uniform(-1, 1, (3, B, X)), jnp.float32)
    pd = jnp.asarray(rng.uniform(-1, 1, (3, B, D)), jnp.float32)
    bl = jnp.asarray([[31, 20, 31, 0, 31], [5, 31, 31, 31, 1], [31, 31, 0, 31, 31]], jnp.int32)

    def one(w, p, x, d, l):
        return fb.apply_pulses(w, p, params[0], x, d, l, kd[0], **kw)

    w_v, p_v = jax.jit(jax.vmap(one))(w, pers, px, pd, bl)
    for t in range(3):
        w1, p1 = one(w[t], pers[t], px[t], pd[t], bl[t])
        np.testing.assert_array_equal(np.asarray(w_v[t]), np.asarray(w1))
        np.testing.assert_array_equal(np.asarray(p_v[t]), np.asarray(p1))


def test_nested_and_partial_vmap(fb):
    kw, params, w, pers, px, pd, bl, kd = _batched_case()

    def one(w, p, prm, k):
        return fb.apply_pulses(w, p, prm, px, pd, bl, k, **kw)

    w2, p2, kd2 = jnp.stack([w, w + 0.01]), jnp.stack([pers, pers]), jnp.stack([kd, kd[::-1]])
    w_n, _ = jax.vmap(jax.vmap(one), in_axes=(0, 0, None, 0))(w2, p2, params, kd2)
    for a in range(2):
        for t in range(w.shape[0]):
            np.testing.assert_array_equal(np.asarray(w_n[a, t]), np.asarray(one(w2[a, t], p2[a, t], params[t], kd2[a, t])[0]))
    # only the key is mapped: the shared weights become one tile per key
    w_s, _ = jax.vmap(lambda k: one(w[0], pers[0], params[0], k))(kd)
    for t in range(w.shape[0]):
        np.testing.assert_array_equal(np.asarray(w_s[t]), np.asarray(one(w[0], pers[0], params[0], kd[t])[0]))


def test_jit_and_donation_update_in_place(fb):
    kw, params, w, _, px, pd, bl, kd = _batched_case(1)
    params, kd = params[0], kd[0]
    kw = dict(kw, kind=0, scalars=(0.3,))
    params = params[:4]

    def f(w):
        return fb.apply_pulses(w, None, params, px, pd, bl, kd, **kw)[0]

    ref = f(w[0])
    w_in = w[0] + 0.0
    ptr = w_in.unsafe_buffer_pointer()
    out = jax.jit(f, donate_argnums=0)(w_in)
    assert w_in.is_deleted()
    assert out.unsafe_buffer_pointer() == ptr  # the kernel wrote into the donated buffer
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


_THREAD_SCRIPT = r"""
import json, os, sys
cpus = json.loads(sys.argv[1])
os.sched_setaffinity(0, cpus)  # before jax starts: XLA sizes its intra-op pool from the affinity
import jax, jax.numpy as jnp, numpy as np
from rpujax import configs as C, devices
from rpujax import _ffi
from rpujax.pulsed import ffi_backend
assert _ffi.available(), _ffi.unavailable_reason()
out = {}
for name, dev in (("cs", C.ConstantStepDevice()), ("sb", C.SoftBoundsDevice(write_noise_std=0.5))):
    kind, _, scalars = devices.kernel_layout(dev)
    params = devices.pack_params(dev, devices.sample_device_parameters(dev, jax.random.key(1), 96, 80))
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.uniform(-0.55, 0.55, (96, 80)), jnp.float32)
    pers = w - 0.01 * jnp.sign(w) if devices.uses_persistent_weights(dev) else None
    px = jnp.asarray(rng.uniform(-1, 1, (6, 80)), jnp.float32)
    pd = jnp.asarray(rng.uniform(-1, 1, (6, 96)), jnp.float32)
    bl = jnp.full((6,), 31, jnp.int32)
    kd = jax.random.key_data(jax.random.key(4))
    w_new, _ = ffi_backend.apply_pulses(w, pers, params, px, pd, bl, kd, kind=kind, scalars=scalars, mode=0, bl_max=31)
    out[name] = np.asarray(w_new).tobytes().hex()
print(json.dumps(out))
"""


def _run_with_cpus(cpus: list[int], cwd) -> dict:
    # The child must import the very rpujax this process tests (the installed one under CI, not a
    # source tree without the extension that its working directory could put first on sys.path).
    import rpujax

    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(rpujax.__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p
    )
    res = subprocess.run(
        [sys.executable, "-c", _THREAD_SCRIPT, json.dumps(cpus)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_results_do_not_depend_on_thread_count(ffi, tmp_path):
    """XLA sizes the thread pool the kernel uses from the CPU affinity: one CPU vs all of them
    (this machine has 2 or more in CI) must give bit-identical weights."""
    cpus = sorted(os.sched_getaffinity(0))
    one = _run_with_cpus(cpus[:1], tmp_path)
    many = _run_with_cpus(cpus[:4], tmp_path)
    assert one == many


# ---- errors ---------------------------------------------------------------------------------------


def test_shape_mismatch_raises_at_trace_time(fb):
    device = C.ConstantStepDevice()
    kind, scalars, params, w, _ = _device_setup(device, seed=0)
    px, pd, bl = _inputs(0, seed=0)
    kw = dict(kind=kind, scalars=scalars, mode=0, bl_max=BL_MAX)
    with pytest.raises(ValueError, match=rf"px has shape \({B}, {X + 1}\), expected \({B}, {X}\)"):
        jax.jit(lambda px: fb.apply_pulses(w, None, params, px, pd, bl, _key_data(0), **kw)).lower(
            jnp.zeros((B, X + 1), jnp.float32))
    with pytest.raises(ValueError, match=r"params has shape"):
        fb.apply_pulses(w, None, params[:3], px, pd, bl, _key_data(0), **kw)
    with pytest.raises(ValueError, match=r"persistent has shape"):
        fb.apply_pulses(w, w[:-1], params, px, pd, bl, _key_data(0), **kw)


def test_bl_above_bl_max_is_an_error(fb):
    device = C.ConstantStepDevice()
    kind, scalars, params, w, _ = _device_setup(device, seed=0)
    px, pd, bl = _inputs(0, seed=0)
    with pytest.raises(Exception, match="exceeds bl_max"):
        jax.block_until_ready(fb.apply_pulses(w, None, params, px, pd, bl, _key_data(0), kind=kind, scalars=scalars,
                                              mode=0, bl_max=BL_MAX - 1))
