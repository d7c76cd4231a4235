"""Unit tests of the IO configuration and of each stage of the analog forward/backward MVM.

Deterministic stages are compared with a small NumPy re-implementation of spec tile-core §2.3
written in the test (noise off, float32 like aihwkit's CPU tile). Statistical checks use fixed keys
and 5-sigma tolerances from the standard error: SE of a mean = σ/sqrt(N), of a std ≈ σ/sqrt(2N),
of a fraction = sqrt(p(1−p)/N).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpujax.configs import SingleRPUConfig
from rpujax.configs.io import (
    AnalogMVType,
    BoundManagementType,
    IOParameters,
    NoiseManagementType,
    WeightNoiseType,
    backward_io,
)
from rpujax.tile import mvm
from rpujax.tile.state import TileState

Z = 5.0
F32 = np.float32
QUIET = dict(out_noise=0.0)  # noise-free forward


def make_state(w, fwd_io=None, bwd_io=None, *, bias=False, key=0, fwd=None, bwd=None) -> TileState:
    fwd_io = fwd_io or IOParameters()
    bwd_io = bwd_io or IOParameters()
    w = jnp.asarray(w, jnp.float32)
    d, x = w.shape
    k1, k2 = jax.random.split(jax.random.key(key))
    return TileState(
        weights=w,
        fwd=mvm.sample_periphery_parameters(fwd_io, k1, d, x) if fwd is None else fwd,
        bwd=mvm.sample_periphery_parameters(bwd_io, k2, x, d) if bwd is None else bwd,
        rpu_config=SingleRPUConfig(forward=fwd_io, backward=bwd_io),
        bias=bias,
    )


# ------------------------------------------------------------------------------------------------
# A NumPy reference of the noise-free CPU pipeline (ONE_PASS), one sample at a time.


def _q(v, res):
    return v if res <= 0 else (np.round(v / F32(res)) * F32(res)).astype(F32)


def ref_forward(io: IOParameters, w: np.ndarray, x: np.ndarray, backward: bool = False):
    """Noise-free §2.3 (forward) / §2.10 (backward) for one sample; returns (y, number of passes)."""
    w = np.asarray(w, F32)
    x = np.asarray(x, F32)
    mat = w.T if backward else w
    if io.perfect:
        return (mat.astype(np.float64) @ x).astype(F32) * F32(io.out_scale), 1
    nm = io.noise_management
    a = F32(np.max(np.abs(x)))
    thr = F32(io.nm_thres_eff)

    def npsum():
        a2 = min(a, thr) if thr > 0 else a
        total = F32(max(x[x > 0].sum(), -x[x < 0].sum()))
        bound = F32(io.out_bound if math.isfinite(io.out_bound) else 1.0)
        n = F32(total * F32(io.nm_assumed_wmax) / bound)
        if io.inp_res_eff > 0:
            n = min(F32(a2 / F32(io.inp_res_eff) * F32(io.max_bm_res)), n)
        return F32(max(a2, n))

    if nm is NoiseManagementType.NONE:
        nu = F32(1)
    elif nm is NoiseManagementType.ABS_MAX:
        nu = min(a, thr) if thr > 0 else a
    elif nm is NoiseManagementType.MAX:
        nu = F32(x.max())
        nu = min(nu, thr) if thr > 0 else nu
    elif nm is NoiseManagementType.CONSTANT:
        nu = thr if thr > 0 else F32(1)
    elif nm is NoiseManagementType.ABS_MAX_NP_SUM:
        nu = npsum()
    else:
        raise NotImplementedError(nm)
    nm_on = nm is not NoiseManagementType.NONE
    if nm_on and nu <= 0 and (backward or io.inp_noise <= 0):
        return np.zeros(mat.shape[0], F32), 0
    bm = io.bound_management if not backward else BoundManagementType.NONE
    bm_on = bm is not BoundManagementType.NONE
    r = F32(1)
    rnd = 0
    while True:
        if rnd == 1 and bm is BoundManagementType.ITERATIVE_WORST_CASE and nm is not NoiseManagementType.ABS_MAX_NP_SUM:
            nu = npsum()
            r = F32(1)
        scale = F32(1)
        if nm_on and nu > 0:
            scale = F32(scale / nu)
        if bm_on:
            scale = F32(scale / r)
        v = _q((x * scale).astype(F32), io.inp_res_eff)
        if math.isfinite(io.inp_bound):
            v = np.clip(v, -F32(io.inp_bound), F32(io.inp_bound))
        if io.inp_asymmetry != 0:
            v = np.where(v < 0, v * F32(1 - io.inp_asymmetry), v).astype(F32)
        y = (mat.astype(np.float64) @ v.astype(np.float64)).astype(F32)
        if io.out_asymmetry > 0:
            y = np.where(y < 0, y * F32(1 - io.out_asymmetry), y).astype(F32)
        y = _q(y, io.out_res_eff)
        passed = True
        if math.isfinite(io.out_bound):
            b = F32(io.out_bound)
            for i in range(len(y)):  # the CPU loop, flag overwrite included (spec §7.3)
                if y[i] > b:
                    y[i] = b
                    passed = False
                elif y[i] < -b:
                    y[i] = -b
                    passed = not io.bm_test_negative_bound
        rnd += 1
        if not bm_on:
            break
        if passed or int(r) > io.max_bm_factor or (io.inp_res_eff > 0 and r > F32(io.max_bm_res) / F32(io.inp_res_eff)):
            break
        r = F32(2 * r)
    if backward:
        return (y * F32(F32(io.out_scale) * (nu if nm_on else F32(1)))).astype(F32), rnd
    return (y * F32(F32(io.out_scale) / scale)).astype(F32), rnd


def run_forward(io, w, x, key=0):
    state = make_state(w, io)
    return np.asarray(mvm.forward(state, jnp.asarray(x, jnp.float32), jax.random.key(key)))


def assert_matches_ref(io, w, xs, backward=False, rtol=1e-6):
    state = make_state(w, IOParameters() if backward else io, io if backward else IOParameters())
    fn = mvm.backward if backward else mvm.forward
    got = np.asarray(fn(state, jnp.asarray(xs, jnp.float32), jax.random.key(0)))
    want = np.stack([ref_forward(io, w, x, backward)[0] for x in np.asarray(xs, F32)])
    scale = np.max(np.abs(want)) + 1e-30
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
    return got


# ------------------------------------------------------------------------------------------------
# Config


def test_defaults_and_derived_values():
    io = IOParameters()
    assert io.mv_type is AnalogMVType.ONE_PASS
    assert io.bound_management is BoundManagementType.ITERATIVE
    assert io.noise_management is NoiseManagementType.ABS_MAX
    assert io.w_noise_type is WeightNoiseType.NONE
    assert (io.inp_bound, io.out_bound, io.out_noise, io.v_offset_w_min) == (1.0, 12.0, 0.06, -1.0)
    assert io.inp_res == 1 / 126 and io.out_res == 1 / 510
    assert (io.nm_assumed_wmax, io.nm_decay, io.r_series_max_total) == (0.6, 1e-3, math.inf)
    # float32 bin widths, computed as aihwkit does: res' · (2·bound) in float32
    assert io.inp_res_eff == float(F32(F32(1 / 126) * F32(2)))
    assert io.out_res_eff == float(F32(F32(1 / 510) * F32(24)))
    assert F32(255) * F32(io.out_res_eff) > F32(12)  # the top ADC level sits 1 ulp above the bound
    assert not io.perfect and IOParameters(is_perfect=True).perfect and IOParameters(mv_type="IDEAL").perfect
    hash(io)
    with pytest.raises(dataclasses.FrozenInstanceError):
        io.out_noise = 0.1  # type: ignore[misc]


def test_resolution_steps_and_unbounded_ranges():
    # res > 1 is a number of steps over the full range 2·bound.
    assert IOParameters(inp_res=126).inp_res_eff == pytest.approx(2 / 126, rel=1e-6)
    assert IOParameters(out_res=4).out_res_eff == pytest.approx(24 / 4, rel=1e-6)
    assert IOParameters(out_res=0).out_res_eff == 0.0
    assert IOParameters(out_bound=math.inf).out_res_eff == 0.0
    assert IOParameters(inp_bound=math.inf, noise_management="NONE").inp_res_eff == 0.0
    assert IOParameters(noise_management="NONE", nm_thres=3.0).nm_thres_eff == 0.0
    assert backward_io(IOParameters()).bound_management is BoundManagementType.NONE


def test_enum_coercion():
    io = IOParameters(noise_management="abs_max_np_sum", bound_management="ITERATIVE_WORST_CASE", w_noise_type="pcm_read")
    assert io.noise_management is NoiseManagementType.ABS_MAX_NP_SUM
    assert io.bound_management is BoundManagementType.ITERATIVE_WORST_CASE
    assert io.w_noise_type is WeightNoiseType.PCM_READ


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(out_noise=-0.1), "IOParameters.out_noise"),
        (dict(inp_noise=-1e-3), "IOParameters.inp_noise"),
        (dict(out_noise_std=-1.0), "IOParameters.out_noise_std"),
        (dict(w_noise=-0.01), "IOParameters.w_noise"),
        (dict(v_offset_std=-0.1), "IOParameters.v_offset_std"),
        (dict(out_nonlinearity_std=-0.1), "IOParameters.out_nonlinearity_std"),
        (dict(w_read_asymmetry_dtod=-0.1), "IOParameters.w_read_asymmetry_dtod"),
        (dict(inp_res=-1.0), "use 0 to switch"),
        (dict(out_res=float("nan")), "IOParameters.out_res"),
        (dict(out_bound=0.0), "math.inf"),
        (dict(out_bound=-1.0), "math.inf"),
        (dict(inp_bound=-1.0, noise_management="NONE"), "math.inf"),
        (dict(noise_management="BOGUS"), "NoiseManagementType"),
        (dict(mv_type="SPLIT_MODE"), "AnalogMVType"),
        (dict(bound_management=BoundManagementType.SHIFT), "not supported by aihwkit's C\\+\\+ tile"),
        (dict(inp_bound=2.0), "must be exactly 1.0"),
        (dict(max_bm_factor=0), "IOParameters.max_bm_factor"),
        (dict(nm_decay=1.5), "IOParameters.nm_decay"),
        (dict(is_perfect=1), "IOParameters.is_perfect"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IOParameters(**kwargs)


def test_inp_bound_other_than_one_allowed_without_nm():
    io = IOParameters(inp_bound=2.0, noise_management="NONE")
    assert io.inp_res_eff == pytest.approx(4 / 126, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Quantiser


def test_quantiser_round_half_to_even():
    r = 0.25
    v = jnp.asarray([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 0.51], jnp.float32) * r
    got = np.asarray(mvm._quantize(v, r, False, jax.random.key(0)))
    np.testing.assert_array_equal(got, np.array([0, 2, 2, -0, -2, -2, 0, 1], F32) * F32(r))


@pytest.mark.parametrize("frac", [0.3, 0.75])
def test_quantiser_stochastic_rounding_is_unbiased(frac):
    r, n = 0.125, 200_000
    v = jnp.full((n,), (3 + frac) * r, jnp.float32)
    got = np.asarray(mvm._quantize(v, r, True, jax.random.key(1)))
    assert set(np.unique(got / r).tolist()) == {3.0, 4.0}  # only the two neighbouring levels
    p_up = np.mean(got / r == 4.0)
    assert abs(p_up - frac) <= Z * math.sqrt(frac * (1 - frac) / n)


def test_adc_levels_and_bins():
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, inp_res=0.0)
    rng = np.random.default_rng(0)
    w = rng.uniform(-0.5, 0.5, (16, 32))
    x = rng.uniform(-1, 1, (8, 32))
    y = assert_matches_ref(io, w, x)
    k = y / F32(io.out_res_eff)
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)  # on the ADC lattice
    assert np.max(np.abs(y - x @ w.T)) <= io.out_res_eff / 2 + 1e-6


def test_dac_quantise_then_clip_and_steps():
    # identity weights expose the DAC output; NM off so x is used as is.
    w = np.eye(6, dtype=F32)
    x = np.array([[0.0, 0.3, -0.3, 0.74, 1.7, -2.0]], F32)
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, out_res=0.0, inp_res=4)
    y = run_forward(io, w, x)
    np.testing.assert_allclose(y, [[0.0, 0.5, -0.5, 0.5, 1.0, -1.0]], atol=1e-7)  # steps of 2/4, clipped at 1
    assert_matches_ref(IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0), w, x)


def test_input_noise_after_clip_and_asymmetry():
    w = np.eye(2, dtype=F32)
    n = 20_000
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, out_res=0.0, inp_noise=0.1)
    x = np.tile(np.array([[5.0, 0.0]], F32), (n, 1))
    y = run_forward(io, w, x, key=3)
    # CPU order: clip to 1, then noise: half of the values exceed the bound, mean is 1.
    frac = np.mean(y[:, 0] > 1.0)
    assert abs(frac - 0.5) <= Z * math.sqrt(0.25 / n)
    assert abs(y[:, 0].mean() - 1.0) <= Z * 0.1 / math.sqrt(n)
    assert abs(y[:, 0].std() - 0.1) <= Z * 0.1 / math.sqrt(2 * n)
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, out_res=0.0, inp_res=0.0, inp_asymmetry=0.25)
    y = run_forward(io, w, np.array([[-0.8, 0.8]], F32))
    np.testing.assert_allclose(y, [[-0.6, 0.8]], rtol=1e-6)


def test_out_bound_inf_disables_quantisation_and_clipping():
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.5, 0.5, (8, 16)).astype(F32)
    x = (rng.normal(size=(4, 16)) * 20).astype(F32)
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, inp_res=0.0,
                      inp_bound=math.inf, out_bound=math.inf)
    y = run_forward(io, w, x)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-4)
    assert np.max(np.abs(y)) > 12  # not clipped


def test_adc_clips_without_bm():
    w = np.full((2, 4), 0.5, F32) * np.array([[1.0], [-1.0]], F32)
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, out_bound=1.0)
    y = run_forward(io, w, np.ones((1, 4), F32))
    np.testing.assert_array_equal(y, [[1.0, -1.0]])


def test_out_scale_and_out_asymmetry():
    rng = np.random.default_rng(2)
    w = rng.uniform(-0.5, 0.5, (8, 16))
    x = rng.normal(size=(5, 16))
    base = IOParameters(out_noise=0.0)
    y1 = run_forward(base, w, x)
    y2 = run_forward(dataclasses.replace(base, out_scale=2.0), w, x)
    np.testing.assert_array_equal(y2, 2 * y1)
    assert_matches_ref(dataclasses.replace(base, out_asymmetry=0.3), w, x)
    # aihwkit's CPU tile applies out_asymmetry only when it is positive
    np.testing.assert_array_equal(run_forward(dataclasses.replace(base, out_asymmetry=-0.5), w, x), y1)


# ------------------------------------------------------------------------------------------------
# Noise management


def test_nm_scale_per_type():
    x = jnp.asarray([[0.5, -2.0, 1.0, 0.25], [-0.5, -0.1, -0.3, -0.2]], jnp.float32)
    unset = jnp.asarray(-1.0, jnp.float32)

    def nu(**kw):
        return np.asarray(mvm._nm_scale(IOParameters(**kw), x, unset)[0])

    np.testing.assert_allclose(nu(), [2.0, 0.5])
    np.testing.assert_allclose(nu(nm_thres=1.0), [1.0, 0.5])
    np.testing.assert_allclose(nu(noise_management="MAX"), [1.0, -0.1])
    np.testing.assert_allclose(nu(noise_management="CONSTANT"), [1.0, 1.0])
    np.testing.assert_allclose(nu(noise_management="CONSTANT", nm_thres=3.0), [3.0, 3.0])
    np.testing.assert_allclose(nu(noise_management="NONE"), [1.0, 1.0])
    # ABS_MAX_NP_SUM: max(a, max(Σ+, Σ|−|)·0.6/12) capped by a·max_bm_res/inp_res_eff
    xs = jnp.ones((1, 512), jnp.float32)
    got = np.asarray(mvm._nm_scale(IOParameters(noise_management="ABS_MAX_NP_SUM"), xs, unset)[0])
    np.testing.assert_allclose(got, [min(512 * 0.6 / 12, 0.25 / IOParameters().inp_res_eff)], rtol=1e-6)
    got = np.asarray(mvm._nm_scale(IOParameters(noise_management="ABS_MAX_NP_SUM"), x, unset)[0])
    np.testing.assert_allclose(got, [2.0, 0.5])


def test_average_abs_max_running_value_per_sample_shared_and_in_eval():
    io = IOParameters(noise_management="AVERAGE_ABS_MAX", nm_decay=0.1, out_noise=0.0)
    rng = np.random.default_rng(3)
    w = rng.uniform(-0.5, 0.5, (4, 8))
    x = rng.normal(size=(5, 8)).astype(F32)
    d = rng.normal(size=(3, 4)).astype(F32)
    state = make_state(w, io, io)

    m = None
    expect = []
    for a in np.abs(x).max(1):
        m = a if m is None else m * (1 - 0.1) + 0.1 * a
        expect.append(m)
    y, s1 = mvm.forward_with_state(state, jnp.asarray(x), jax.random.key(0), is_test=True)
    assert float(s1.nm_value) == pytest.approx(expect[-1], rel=1e-5)
    # every sample used its own running value as NM scale (noise-free: compare with ABS_MAX at ν_b)
    for b in range(5):
        io_c = dataclasses.replace(io, noise_management="CONSTANT", nm_thres=float(expect[b]))
        np.testing.assert_allclose(np.asarray(y[b]), ref_forward(io_c, w, x[b])[0], rtol=1e-5, atol=1e-5)
    # the backward continues the same running value
    _, s2 = mvm.backward_with_state(s1, jnp.asarray(d), jax.random.key(1))
    for a in np.abs(d).max(1):
        m = m * (1 - 0.1) + 0.1 * a
    assert float(s2.nm_value) == pytest.approx(m, rel=1e-5)
    # forward() discards the update; other NM types leave it untouched
    assert float(state.nm_value) == -1.0
    _, s3 = mvm.forward_with_state(make_state(w), jnp.asarray(x), jax.random.key(0))
    assert float(s3.nm_value) == -1.0


def test_zero_shortcut_gives_exact_zeros():
    w = np.random.default_rng(4).uniform(-0.5, 0.5, (8, 16))
    state = make_state(w, IOParameters(out_noise=0.5), IOParameters(out_noise=0.5, inp_noise=0.3))
    y = mvm.forward(state, jnp.zeros((3, 16)), jax.random.key(0))
    assert np.all(np.asarray(y) == 0.0)
    # MAX with an all-negative input: ν ≤ 0 → zeros
    state_max = make_state(w, IOParameters(noise_management="MAX", out_noise=0.5))
    assert np.all(np.asarray(mvm.forward(state_max, -jnp.ones((2, 16)), jax.random.key(0))) == 0.0)
    # forward with input noise: no shortcut (noise passes through)
    state_noisy = make_state(w, IOParameters(out_noise=0.0, inp_noise=0.3, inp_res=0.0))
    assert np.any(np.asarray(mvm.forward(state_noisy, jnp.zeros((2, 16)), jax.random.key(0))) != 0.0)
    # backward: zeros whatever the input noise
    assert np.all(np.asarray(mvm.backward(state, jnp.zeros((2, 8)), jax.random.key(0))) == 0.0)


# ------------------------------------------------------------------------------------------------
# Bound management


def _saturating_case(scale):
    w = np.full((2, 64), scale, F32)
    w[1] *= 0.01  # a non-saturating second output
    return w, np.ones((1, 64), F32)


@pytest.mark.parametrize(
    "kwargs, passes, factor",
    [
        (dict(), 5, 16.0),  # r = 1, 2, 4, 8, 16; the last result accepted though it clips
        (dict(bound_management="ITERATIVE_WORST_CASE"), 6, 16.0),  # r = 1 (ABS_MAX), 1 (NP_SUM), 2, 4, 8, 16
        (dict(inp_res=0.0, max_bm_factor=4), 4, 8.0),  # int(r) > 4 ends after r = 8
    ],
)
def test_bm_retry_limits(kwargs, passes, factor):
    io = IOParameters(out_noise=0.0, **kwargs)
    w, x = _saturating_case(100.0)  # W x = 6400 never fits
    y_ref, n_passes = ref_forward(io, w, x[0])
    assert n_passes == passes
    nu = 1.0
    if io.bound_management is BoundManagementType.ITERATIVE_WORST_CASE:
        nu = 64 * 0.6 / 12  # the NP_SUM scale of the later rounds
    assert y_ref[0] == pytest.approx(12 * nu * factor, rel=1e-6)
    got = assert_matches_ref(io, w, x)
    assert got[0, 0] == pytest.approx(12 * nu * factor, rel=1e-6)  # clipped at the bound in the last round


@pytest.mark.parametrize("scale, passes", [(0.1, 1), (0.3, 2), (0.5, 3), (1.2, 4)])
def test_bm_halves_until_it_fits(scale, passes):
    io = IOParameters(out_noise=0.0)
    w, x = _saturating_case(scale)  # y/ν = 64·scale: fits at r with 64·scale/r ≤ 12
    assert ref_forward(io, w, x[0])[1] == passes
    assert_matches_ref(io, w, x)
    y = run_forward(io, w, x)
    r = 2 ** (passes - 1)  # DAC error ≤ step/2 per input (× Σ|W| × r), ADC error ≤ step/2 × r
    assert abs(y[0, 0] - 64 * scale) <= (io.inp_res_eff / 2 * 64 * scale + io.out_res_eff / 2) * r + 1e-5


def test_bm_is_per_sample():
    io = IOParameters(out_noise=0.0)
    rng = np.random.default_rng(5)
    w = rng.uniform(0, 0.5, (8, 64)).astype(F32)
    x = np.abs(rng.normal(size=(6, 64))).astype(F32)
    x[2] = 1.0  # saturates: y/ν ≈ 16 > 12
    y = assert_matches_ref(io, w, x)
    solo = run_forward(io, w, x[[0]])
    np.testing.assert_array_equal(y[0], solo[0])


@pytest.mark.parametrize("negative_first", [True, False])
@pytest.mark.parametrize("test_negative", [True, False])
def test_bm_negative_bound_flag_overwrite_quirk(negative_first, test_negative):
    # Output 0 saturates negative, output 1 positive (or the reverse order). With
    # bm_test_negative_bound=False the CPU tile's flag is overwritten by the last clipping output.
    w = np.full((2, 64), 0.5, F32)
    w[0 if negative_first else 1] *= -1
    x = np.ones((1, 64), F32)
    io = IOParameters(out_noise=0.0, bm_test_negative_bound=test_negative)
    y_ref, passes = ref_forward(io, w, x[0])
    retried = passes > 1
    assert retried == (test_negative or negative_first)
    assert_matches_ref(io, w, x)


def test_backward_never_uses_bm():
    w, x = _saturating_case(1.0)
    io = IOParameters(out_noise=0.0)
    d = np.ones((1, 2), F32)
    got = assert_matches_ref(io, w, d, backward=True)
    assert np.max(np.abs(got)) <= 12.0 + 1e-6  # clipped, not retried


# ------------------------------------------------------------------------------------------------
# mv types and analog non-idealities


def test_mv_types_noise_free_and_digital_sum_noise():
    rng = np.random.default_rng(6)
    w = rng.uniform(-0.5, 0.5, (8, 32)).astype(F32)
    x = rng.normal(size=(4, 32)).astype(F32)
    quiet = IOParameters(out_noise=0.0, inp_res=0.0, out_res=0.0)
    y1 = run_forward(quiet, w, x)
    for mv_type in ("POS_NEG_SEPARATE", "POS_NEG_SEPARATE_DIGITAL_SUM"):
        np.testing.assert_allclose(run_forward(dataclasses.replace(quiet, mv_type=mv_type), w, x), y1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run_forward(dataclasses.replace(quiet, mv_type="IDEAL"), w, x), x @ w.T, rtol=1e-5, atol=1e-5)
    # Noise: one output noise for ONE_PASS / POS_NEG_SEPARATE, two for the digital sum.
    n = 4000
    xs = np.tile(x[:1], (n, 1))
    nu = np.abs(x[0]).max()
    for mv_type, copies in (("ONE_PASS", 1), ("POS_NEG_SEPARATE", 1), ("POS_NEG_SEPARATE_DIGITAL_SUM", 2)):
        io = IOParameters(out_noise=0.06, inp_res=0.0, out_res=0.0, mv_type=mv_type)
        y = run_forward(io, w, xs, key=7)
        want = math.sqrt(copies) * 0.06 * nu
        assert np.all(np.abs(y.std(0) - want) <= Z * want / math.sqrt(2 * n))


def test_read_asymmetry_on_negative_pass():
    rng = np.random.default_rng(7)
    w = rng.uniform(-0.5, 0.5, (4, 8)).astype(F32)
    x = rng.normal(size=(3, 8)).astype(F32)
    io = IOParameters(noise_management="NONE", bound_management="NONE", out_noise=0.0, inp_res=0.0, out_res=0.0,
                      inp_bound=math.inf, out_bound=math.inf, mv_type="POS_NEG_SEPARATE", w_read_asymmetry_dtod=0.2)
    state = make_state(w, io)
    wa = np.asarray(state.fwd["w_asymmetry"])
    assert wa.shape == (4, 8)
    y = np.asarray(mvm.forward(state, jnp.asarray(x), jax.random.key(0)))
    want = np.minimum(x, 0) @ (w * wa).T + np.maximum(x, 0) @ w.T
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def _open_io(**kw):
    base = dict(noise_management="NONE", bound_management="NONE", out_noise=0.0, inp_res=0.0, out_res=0.0,
                inp_bound=math.inf, out_bound=math.inf)
    base.update(kw)
    return IOParameters(**base)


def test_ir_drop_formula():
    rng = np.random.default_rng(8)
    w = rng.uniform(-0.5, 0.5, (5, 16)).astype(np.float64)
    x = rng.normal(size=(2, 16))
    io = _open_io(ir_drop=1.0, ir_drop_g_ratio=100.0)
    y = run_forward(io, w, x)
    n = 16
    a = n / 100.0 * (np.abs(x) @ np.abs(w).T)
    c = a * (a * (0.05 * a - 0.2) + 0.5)
    xp = x * (1 - (1 - np.arange(n) / n) ** 2)
    want = x @ w.T - c * (xp @ w.T)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w_min, r_series", [(0.0, 0.0), (0.0, 0.1), (-1.0, 0.0), (-1.0, 0.1)])
def test_voltage_offsets_and_series_resistance(w_min, r_series):
    rng = np.random.default_rng(9)
    w = rng.uniform(-0.5, 0.5, (5, 8))
    x = rng.normal(size=(3, 8))
    io = _open_io(v_offset_std=0.1, v_offset_w_min=w_min, r_series=r_series)
    v = np.array([0.0, 0.05, -0.1, 0.2, 0.0], F32)
    params = {"v_offset": jnp.asarray(v)}
    if io.has_nl_calibration:  # r_series > 0 switches the NL calibration on; make it neutral
        params["out_nonlinearity"] = jnp.zeros(5)
        params["out_nonlinearity_factor"] = jnp.asarray(1.0)
    state = make_state(w, io, fwd=params)
    y = np.asarray(mvm.forward(state, jnp.asarray(x, jnp.float32), jax.random.key(0)))
    yi = x @ w.T
    if w_min == 0:
        want = (1 - v) * yi / (1 + r_series * np.abs(yi))
    else:
        y_ref = -w_min * x.sum(1, keepdims=True)
        want = (1 - v) * (yi + y_ref) / (1 + r_series * np.abs(yi + y_ref)) - (1 + v) * y_ref / (1 + r_series * np.abs(y_ref))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_output_nonlinearity_and_out_noise_values():
    rng = np.random.default_rng(10)
    w = rng.uniform(-0.5, 0.5, (4, 8))
    x = rng.normal(size=(3, 8))
    io = _open_io(out_nonlinearity=0.5)
    nl = np.array([0.1, 0.2, 0.0, 0.4], F32)
    state = make_state(w, io, fwd={"out_nonlinearity": jnp.asarray(nl), "out_nonlinearity_factor": jnp.asarray(1.5)})
    y = np.asarray(mvm.forward(state, jnp.asarray(x, jnp.float32), jax.random.key(0)))
    yi = x @ w.T
    np.testing.assert_allclose(y, 1.5 * yi / (1 + np.abs(nl * yi)), rtol=1e-5, atol=1e-6)
    # per-output noise levels
    io = _open_io(out_noise=0.05, out_noise_std=0.5)
    sig = np.array([0.01, 0.05, 0.1, 0.2], F32)
    state = make_state(w, io, fwd={"out_noise_values": jnp.asarray(sig)})
    n = 20_000
    y = np.asarray(mvm.forward(state, jnp.asarray(np.tile(x[:1], (n, 1)), jnp.float32), jax.random.key(2)))
    assert np.all(np.abs(y.std(0) - sig) <= Z * sig / math.sqrt(2 * n))


@pytest.mark.parametrize("kind", ["ADDITIVE_CONSTANT", "PCM_READ"])
def test_output_weight_noise(kind):
    rng = np.random.default_rng(11)
    w = rng.uniform(-0.5, 0.5, (4, 16))
    x = rng.normal(size=(1, 16))
    io = _open_io(w_noise=0.02, w_noise_type=kind)
    n = 20_000
    y = run_forward(io, w, np.tile(x, (n, 1)), key=4)
    if kind == "ADDITIVE_CONSTANT":
        want = 0.02 * np.linalg.norm(x[0]) * np.ones(4)
    else:
        want = 0.02 * np.sqrt(np.abs(w) @ (x[0] ** 2))
    np.testing.assert_allclose(y.mean(0), (x @ w.T)[0], atol=Z * want.max() / math.sqrt(n))
    assert np.all(np.abs(y.std(0) - want) <= Z * want / math.sqrt(2 * n))


# ------------------------------------------------------------------------------------------------
# Periphery parameters (§1.5)


def test_periphery_parameters_only_when_active():
    assert mvm.sample_periphery_parameters(IOParameters(), jax.random.key(0), 4, 8) == {}
    p = mvm.sample_periphery_parameters(IOParameters(r_series=0.1), jax.random.key(0), 4, 8)
    assert set(p) == {"v_offset", "out_nonlinearity", "out_nonlinearity_factor"}
    assert np.all(np.asarray(p["v_offset"]) == 0.0)  # draws happen, std 0 gives zeros
    p = mvm.sample_periphery_parameters(IOParameters(is_perfect=True, out_nonlinearity=1.0), jax.random.key(0), 4, 8)
    assert "out_nonlinearity" not in p


def test_periphery_parameter_laws():
    n = 40_000
    io = IOParameters(v_offset_std=0.1, out_nonlinearity=0.6, out_nonlinearity_std=0.2, slope_calibration=0.5,
                      w_read_asymmetry_dtod=0.3, out_noise=0.06, out_noise_std=0.4)
    p = mvm.sample_periphery_parameters(io, jax.random.key(5), n, 2)
    v = np.asarray(p["v_offset"], np.float64)
    nz = v[v != 0]
    assert abs(len(nz) / n - 0.5) <= Z * math.sqrt(0.25 / n)  # MAX macro: 0 with probability 1/2
    assert abs(nz.mean()) <= Z * 0.1 / math.sqrt(len(nz))  # otherwise a fresh N(0, σ²): mean 0
    assert abs(nz.std() - 0.1) <= Z * 0.1 / math.sqrt(2 * len(nz))
    nl = np.asarray(p["out_nonlinearity"], np.float64)
    assert abs(nl.mean() - 0.6 / 12) <= Z * 0.6 / 12 * 0.2 / math.sqrt(n)  # |0.05(1+0.2ξ)|, sign flips negligible
    f = 1 + (nl.mean() + 0.0) * 0.5 * 12
    assert float(p["out_nonlinearity_factor"]) == pytest.approx(f * f, rel=1e-5)
    wa = np.asarray(p["w_asymmetry"], np.float64)
    assert wa.shape == (n, 2)
    assert abs(wa.mean() - 1) <= Z * 0.3 / math.sqrt(wa.size)
    assert abs(wa.std() - 0.3) <= Z * 0.3 / math.sqrt(2 * wa.size)
    on = np.asarray(p["out_noise_values"], np.float64)
    assert np.all(on >= 0)
    assert abs(on.mean() - 0.06) <= Z * 0.06 * 0.4 / math.sqrt(n)  # |0.06(1+0.4ξ)|: P(1+0.4ξ<0) ≈ 3e-7


# ------------------------------------------------------------------------------------------------
# Tile-level: bias column, gradients, shapes, jit / vmap


def test_analog_bias_column():
    rng = np.random.default_rng(12)
    w = rng.uniform(-0.5, 0.5, (6, 9)).astype(F32)
    x = rng.normal(size=(2, 3, 8)).astype(F32)
    d = rng.normal(size=(2, 3, 6)).astype(F32)
    with_bias = make_state(w, bias=True)
    plain = make_state(w)
    xb = np.concatenate([x, np.ones((2, 3, 1), F32)], axis=-1)
    key = jax.random.key(8)
    y = mvm.forward(with_bias, jnp.asarray(x), key)
    assert y.shape == (2, 3, 6)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(mvm.forward(plain, jnp.asarray(xb), key)))
    dx = mvm.backward(with_bias, jnp.asarray(d), key)
    assert dx.shape == (2, 3, 8)
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(mvm.backward(plain, jnp.asarray(d), key))[..., :8])


def test_vjp_perfect_equals_transpose_and_backward():
    rng = np.random.default_rng(13)
    w = rng.uniform(-0.5, 0.5, (5, 7)).astype(F32)
    x = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    perfect = IOParameters(is_perfect=True)
    state = make_state(w, perfect, perfect)
    key = jax.random.key(1)
    gx = jax.grad(lambda x: jnp.sum(mvm.forward(state, x, key) * c))(x)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(c) @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(gx), np.asarray(mvm.backward(state, c, key)))


def test_vjp_uses_analog_backward_mask_and_dense_weight_gradient():
    rng = np.random.default_rng(14)
    w = rng.uniform(-0.5, 0.5, (5, 7)).astype(F32)
    x = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    state = make_state(w, IOParameters(out_bound=1.0, bound_management="NONE"), IOParameters(), bias=True)
    key = jax.random.key(2)

    def loss(s, x):
        return jnp.sum(mvm.forward(s, x, key) * c)

    gs, gx = jax.jit(jax.grad(loss, argnums=(0, 1), allow_int=True))(state, x)
    y = mvm.forward(state, x, key)
    masked = jnp.where(jnp.abs(y) < 0.999 * 1.0, c, 0.0)
    assert np.any(np.asarray(masked) == 0) and np.any(np.asarray(masked) != 0)  # the mask acts here
    want_dx = mvm.backward(state, masked, jax.random.fold_in(key, mvm.VJP_BACKWARD_FOLD))
    np.testing.assert_array_equal(np.asarray(gx), np.asarray(want_dx))
    xb = np.concatenate([np.asarray(x), np.ones((4, 1), F32)], axis=1)
    np.testing.assert_allclose(np.asarray(gs.weights), np.asarray(c).T @ xb, rtol=1e-5, atol=1e-6)  # unmasked d
    assert float(jnp.sum(jnp.abs(gs.nm_value))) == 0.0


def test_shape_and_dtype_errors():
    state = make_state(np.zeros((3, 5), F32))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(\.\.\., 5\).*\(3, 5\)"):
        mvm.forward(state, jnp.zeros((2, 4)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(\.\.\., 3\).*\(3, 5\)"):
        mvm.backward(state, jnp.zeros((2, 5)), jax.random.key(0))
    with pytest.raises(TypeError, match="int32"):
        mvm.forward(state, jnp.zeros((2, 5), jnp.int32), jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        mvm.forward(state.replace(weights=jnp.zeros((2, 3, 5))), jnp.zeros((2, 5)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(2, 6\)"):  # the bias column is appended internally
        mvm.forward(make_state(np.zeros((3, 6), F32), bias=True), jnp.zeros((2, 6)), jax.random.key(0))
    with pytest.raises(KeyError, match="v_offset"):
        mvm.forward(make_state(np.zeros((3, 5), F32), IOParameters(v_offset_std=0.1), fwd={}), jnp.ones((2, 5)), jax.random.key(0))


def test_same_key_same_result_jit_nojit_vmap():
    rng = np.random.default_rng(15)
    w = rng.uniform(0, 0.5, (8, 64)).astype(F32)
    x = jnp.asarray(np.abs(rng.normal(size=(5, 64))), jnp.float32)
    x = x.at[0].set(1.0)  # saturates: bound-management retries
    io = IOParameters(inp_noise=0.01, inp_sto_round=True, out_sto_round=True, w_noise=0.01, w_noise_type="PCM_READ")
    state = make_state(w, io, io)
    key = jax.random.key(3)
    y = mvm.forward(state, x, key)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.jit(mvm.forward)(state, x, key)))
    with jax.disable_jit():  # op by op, the BM while_loop as a Python loop
        y_nojit = mvm.forward(state, x, key)
    # same draws; op-by-op float rounding may differ from the fused program in the last bits
    np.testing.assert_allclose(np.asarray(y_nojit), np.asarray(y), rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(y))))
    keys = jax.random.split(key, 3)
    y_vmap = jax.vmap(lambda k: mvm.forward(state, x, k))(keys)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(y_vmap[i]), np.asarray(mvm.forward(state, x, keys[i])))
    # vmap over a batch of tile states with their own weights and keys
    ws = jnp.stack([jnp.asarray(w), jnp.asarray(w) * 0.5, jnp.asarray(w) * 0.25])
    states = jax.vmap(lambda wi: state.replace(weights=wi))(ws)
    y_states = jax.jit(jax.vmap(mvm.forward, in_axes=(0, None, 0)))(states, x, keys)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(y_states[i]), np.asarray(mvm.forward(state.replace(weights=ws[i]), x, keys[i])))
    # different keys give different noise
    assert not np.array_equal(np.asarray(y_vmap[0]), np.asarray(y_vmap[1]))
