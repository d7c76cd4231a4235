"""Formula tests of the inference physics: noise models, converters, modifiers, clip, remap, tiles.

Statistical checks compare a sample of ``n`` independent draws with the formula: a mean within
``5·σ/sqrt(n)`` (σ from the formula), a standard deviation within ``5·σ·sqrt((κ−1)/(4n))`` (the
standard error of a sample std, κ = 3 for normal draws, measured otherwise), a fraction within
``5·sqrt(p(1−p)/n)``. All keys are fixed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import norm

from rpujax import inference, tile
from rpujax.configs import IOParameters
from rpujax.configs.inference import (
    CustomDriftPCMLikeNoiseModel,
    DualPairConductanceConverter,
    GlobalDriftCompensationWithExactReference,
    HermesNoiseModel,
    InferenceRPUConfig,
    NPairConductanceConverter,
    PCMLikeNoiseModel,
    PerColumnDriftCompensation,
    ReRamCMONoiseModel,
    ReRamWan2022NoiseModel,
    SingleDeviceConductanceConverter,
    SinglePairConductanceConverter,
    StateIndependentNoiseModel,
    TorchInferenceRPUConfig,
    WeightClipParameter,
    WeightModifierParameter,
    WeightModifierType,
    WeightRemapParameter,
)

Z = 5.0
N = 256  # weights are N×N, so one draw gives N² − 1 samples
PERFECT = IOParameters(is_perfect=True)
# One shared tile config (exact IO: these tests are about programming, drift and compensation, and
# sharing the config lets the compiled tile functions be reused across tests).
CFG = InferenceRPUConfig(forward=PERFECT)


def key(i: int) -> jax.Array:
    return jax.random.key(i)


def assert_mean(sample, mu, sigma):
    sample = np.asarray(sample, np.float64).ravel()
    se = sigma / math.sqrt(sample.size)
    assert abs(sample.mean() - mu) <= Z * se, (sample.mean(), mu, se)


def assert_std(sample, sigma, kurtosis=3.0):
    sample = np.asarray(sample, np.float64).ravel()
    se = sigma * math.sqrt((kurtosis - 1.0) / (4.0 * sample.size))
    assert abs(sample.std() - sigma) <= Z * se, (sample.std(), sigma, se)


def assert_fraction(mask, p):
    mask = np.asarray(mask).ravel()
    se = math.sqrt(p * (1 - p) / mask.size)
    assert abs(mask.mean() - p) <= Z * se, (mask.mean(), p, se)


def level_matrix(w0: float, corner: float = 1.0) -> jax.Array:
    """All weights ``w0`` except ``W[0,0] = corner``, which fixes the tile's abs-max scale."""
    return jnp.full((N, N), w0, jnp.float32).at[0, 0].set(corner)


def bulk(a) -> np.ndarray:
    """All elements but the scale-setting corner."""
    return np.asarray(a).ravel()[1:]


def rectified_normal_moments(sigma: float) -> tuple[float, float]:
    """Mean and variance of ``max(σξ, 0)``."""
    return sigma / math.sqrt(2 * math.pi), sigma**2 * (0.5 - 1 / (2 * math.pi))


def folded_normal_moments(mu: float, sigma: float) -> tuple[float, float]:
    """Mean and std of ``|μ + σξ|``."""
    mean = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (1 - 2 * norm.cdf(-mu / sigma))
    return mean, math.sqrt(mu**2 + sigma**2 - mean**2)


def folded_normal_kurtosis(mu: float, sigma: float) -> float:
    """Kurtosis of ``|μ + σξ|`` (Gauss–Hermite quadrature, exact to rounding for this integrand
    away from the fold; 200 nodes)."""
    x, wq = np.polynomial.hermite_e.hermegauss(200)
    wq = wq / wq.sum()
    v = np.abs(mu + sigma * x)
    m = np.sum(wq * v)
    return float(np.sum(wq * (v - m) ** 4) / np.sum(wq * (v - m) ** 2) ** 2)


def pcm_poly(coeffs, x):
    return sum(c * x**i for i, c in enumerate(coeffs))


# ---------------------------------------------------------------------------------------------
# Converters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conv",
    [
        SinglePairConductanceConverter(),
        SinglePairConductanceConverter(g_max=40.0, g_min=2.0),
        NPairConductanceConverter(f_lst=(1.0, 3.0)),
        DualPairConductanceConverter(f_lst=(1.0, 2.0), g_max=10.0, g_min=1.0),
        SingleDeviceConductanceConverter(),
    ],
)
def test_converter_round_trip_and_range(conv):
    w = jax.random.uniform(key(1), (32, 48), minval=-0.7, maxval=0.4)
    g, params = inference.to_conductances(conv, w)
    assert g.shape == (conv.n_slices, 32, 48)
    assert float(g.min()) >= conv.g_min - 1e-5 and float(g.max()) <= conv.g_max + 1e-4
    np.testing.assert_allclose(inference.from_conductances(conv, g, params), w, atol=2e-6)


def test_single_pair_maps_abs_max_to_g_max():
    w = jnp.array([[0.5, -0.25], [0.0, 0.1]])
    g, _ = inference.to_conductances(SinglePairConductanceConverter(), w)
    np.testing.assert_allclose(g[0], [[25.0, 0.0], [0.0, 5.0]], rtol=1e-6)
    np.testing.assert_allclose(g[1], [[0.0, 12.5], [0.0, 0.0]], rtol=1e-6)


def test_single_device_maps_min_max_to_g_range():
    w = jnp.array([[-1.0, 0.0], [1.0, 0.5]])
    g, _ = inference.to_conductances(SingleDeviceConductanceConverter(g_max=50.0, g_min=10.0), w)
    np.testing.assert_allclose(g[0], [[10.0, 30.0], [50.0, 40.0]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Noise models: programming noise
# ---------------------------------------------------------------------------------------------


def _prog_error_us(model, w0, k=2):
    """Programming error of the bulk elements in µS (scale: max|W| = 1 ↦ g_max)."""
    w = level_matrix(w0)
    prog, _ = inference.apply_programming_noise(model, w, key(k))
    return (bulk(prog) - w0) * model.g_max


@pytest.mark.parametrize("w0", [0.5, -0.5, 0.1])
@pytest.mark.parametrize("g_max", [25.0, 50.0])
def test_pcm_programming_noise(w0, g_max):
    """On device: N(0, σ_p(g_T)) with σ_p = poly(g_T/g_max)·g_max/25 µS; off device (target 0):
    ``max(c0·g_max/25·ξ, 0)`` subtracted, so the error has mean ∓c0'/sqrt(2π)."""
    model = PCMLikeNoiseModel(g_max=g_max)
    err = _prog_error_us(model, w0)
    sig_on = pcm_poly((0.26348, 1.9650, -1.1731), abs(w0)) * g_max / 25.0
    off_mean, off_var = rectified_normal_moments(0.26348 * g_max / 25.0)
    sigma = math.sqrt(sig_on**2 + off_var)
    assert_mean(err, -math.copysign(off_mean, w0), sigma)
    assert_std(err, sigma)


def test_pcm_programming_noise_explicit_coefficients_and_reference():
    model = PCMLikeNoiseModel(prog_coeff=(0.5, 0.0, 0.0), prog_coeff_g_max_reference=50.0, prog_noise_scale=2.0)
    err = _prog_error_us(model, 0.5)
    sig = 2.0 * 0.5 * 25.0 / 50.0
    off_mean, off_var = rectified_normal_moments(sig)
    assert_mean(err, -off_mean, math.sqrt(sig**2 + off_var))
    assert_std(err, math.sqrt(sig**2 + off_var))


def test_state_independent_programming_noise():
    model = StateIndependentNoiseModel()
    err = _prog_error_us(model, 0.5)
    off_mean, off_var = rectified_normal_moments(0.2)
    sigma = math.sqrt(0.2**2 + off_var)
    assert_mean(err, -off_mean, sigma)
    assert_std(err, sigma)


def test_hermes_programming_noise():
    model = HermesNoiseModel()
    assert (model.g_max, model.t_0) == (20.7, 300.0)
    err = _prog_error_us(model, 0.5)
    sig_on = pcm_poly((0.16603222, 4.71806468, -8.48101252, 4.68961419), 0.5)
    off_mean, off_var = rectified_normal_moments(0.16603222)
    sigma = math.sqrt(sig_on**2 + off_var)
    assert_mean(err, -off_mean, sigma)
    assert_std(err, sigma)


def test_wan2022_programming_noise():
    model = ReRamWan2022NoiseModel()
    err = _prog_error_us(model, 0.5)
    c_1s = (0.348, 16.030, -43.853, 45.393, -16.815)
    off_mean, off_var = rectified_normal_moments(0.348)
    sigma = math.sqrt(pcm_poly(c_1s, 0.5) ** 2 + off_var)
    assert_mean(err, -off_mean, sigma)
    assert_std(err, sigma)


def _cmo_matrix(w0=0.0):
    return jnp.full((N, N), w0, jnp.float32).at[0, 0].set(1.0).at[0, 1].set(-1.0)


def test_cmo_programming_noise():
    """Single device, [min W, max W] = [-1, 1] ↦ [9, 88.2] µS; σ = a0 + a1·g (0.2 % coefficients,
    the fallback for the default acceptance_range)."""
    model = ReRamCMONoiseModel()
    assert model.acceptance_range == 0.2
    ratio = (model.g_max - model.g_min) / 2.0
    prog, _ = inference.apply_programming_noise(model, _cmo_matrix(), key(3))
    err = np.asarray(prog).ravel()[2:] * ratio
    g = model.g_min + ratio
    sigma = 0.00081107 + 0.00106879 * g
    assert_mean(err, 0.0, sigma)
    assert_std(err, sigma)


# ---------------------------------------------------------------------------------------------
# Noise models: drift exponents, drift and read noise
# ---------------------------------------------------------------------------------------------


def _drift_exponents(model, w0, t_inf, k=4):
    """Recover ν from ``W_t / W_P = (t/t_0)^-ν`` with programming and read noise off."""
    w = level_matrix(w0)
    prog, params = inference.apply_programming_noise(model, w, key(k))
    wt = inference.apply_drift_noise(model, prog, params, t_inf, key(k + 1))
    ratio = bulk(wt) / bulk(prog)
    return -np.log(ratio) / math.log((t_inf + model.t_0) / model.t_0)


@pytest.mark.parametrize(
    "g_rel, mu, sigma",
    [
        # unclamped: μ = -0.0155 ln g + 0.0244, σ = -0.0125 ln g - 0.0059 at g = 0.05
        (0.05, -0.0155 * math.log(0.05) + 0.0244, -0.0125 * math.log(0.05) - 0.0059),
        # clamped to the lower bounds μ = 0.049, σ = 0.008
        (0.5, 0.049, 0.008),
    ],
)
def test_pcm_drift_exponents(g_rel, mu, sigma):
    model = PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0)
    nu = _drift_exponents(model, g_rel, 1000.0)
    m, s = folded_normal_moments(mu, sigma)
    assert_mean(nu, m, s)
    assert_std(nu, s, folded_normal_kurtosis(mu, sigma))


def test_pcm_drift_scale_multiplies_exponents():
    model = PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=2.0)
    nu = _drift_exponents(model, 0.5, 1000.0)
    m, s = folded_normal_moments(0.049, 0.008)
    assert_mean(nu, 2 * m, 2 * s)


def test_custom_drift_model_interpolates():
    table = {"g_lst": [0.0, 10.0, 25.0], "nu_mean_lst": [0.1, 0.05, 0.02], "nu_std_lst": [0.02, 0.01, 0.005]}
    model = CustomDriftPCMLikeNoiseModel(custom_drift_model=table, prog_noise_scale=0.0, read_noise_scale=0.0)
    nu = _drift_exponents(model, 0.2, 1000.0)  # g_T = 5 µS: halfway between the first two points
    m, s = folded_normal_moments(0.075, 0.015)
    assert_mean(nu, m, s)
    assert_std(nu, s, folded_normal_kurtosis(0.075, 0.015))


def test_state_independent_drift_exponents():
    model = StateIndependentNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0)
    nu = _drift_exponents(model, 0.5, 1000.0)
    m, s = folded_normal_moments(0.1, 0.05)
    assert_mean(nu, m, s)
    assert_std(nu, s, folded_normal_kurtosis(0.1, 0.05))


def test_hermes_drift_exponents():
    model = HermesNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0)
    nu = _drift_exponents(model, 0.05, 3600.0)
    mu = min(max(-0.0387 * math.log(0.05) - 0.0182, 0.072), 0.13)
    sigma = min(max(-0.0117 * math.log(0.05) - 0.0057, 0.0091), 0.04)
    m, s = folded_normal_moments(mu, sigma)
    assert_mean(nu, m, s)
    assert_std(nu, s, folded_normal_kurtosis(mu, sigma))


@pytest.mark.parametrize("g_rel, t_inf", [(0.1, 0.0), (0.5, 3600.0)])
def test_pcm_read_noise(g_rel, t_inf):
    """Drift off: ``W_t/W_P − 1 ~ N(0, Q_s·sqrt(ln((t + t_read)/(2 t_read))))``, t = t_inf + t_0,
    ``Q_s = min(0.0088 / (g/g_max)^0.65, 0.2)``; non-zero already at t_inference = 0."""
    model = PCMLikeNoiseModel(prog_noise_scale=0.0, drift_scale=0.0)
    w = level_matrix(g_rel)
    prog, params = inference.apply_programming_noise(model, w, key(5))
    wt = inference.apply_drift_noise(model, prog, params, t_inf, key(6))
    rel = bulk(wt) / g_rel - 1.0
    t = t_inf + 20.0
    sigma = min(0.0088 / g_rel**0.65, 0.2) * math.sqrt(math.log((t + 250e-9) / 500e-9))
    assert_mean(rel, 0.0, sigma)
    assert_std(rel, sigma)


def test_state_independent_read_noise():
    model = StateIndependentNoiseModel(prog_noise_scale=0.0, drift_scale=0.0)
    w = level_matrix(0.5)
    prog, params = inference.apply_programming_noise(model, w, key(7))
    wt = inference.apply_drift_noise(model, prog, params, 60.0, key(8))
    sigma = math.sqrt(math.log((80.0 + 250e-9) / 500e-9)) / 25.0
    assert_std(bulk(wt) / 0.5 - 1.0, sigma)


def test_pcm_mean_drift_of_weights():
    """Full model: the mean of the drifted weights at t is E[(t/t_0)^-ν]·w (read and programming
    noise have zero mean on the on-device away from 0; off-device bias subtracted)."""
    model = PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0)
    w = level_matrix(0.05)
    prog, params = inference.apply_programming_noise(model, w, key(9))
    wt = bulk(inference.apply_drift_noise(model, prog, params, 86400.0, key(10)))
    mu, sig = -0.0155 * math.log(0.05) + 0.0244, -0.0125 * math.log(0.05) - 0.0059
    x, wq = np.polynomial.hermite_e.hermegauss(80)
    factor = np.exp(-np.abs(mu + sig * x) * math.log((86400.0 + 20.0) / 20.0))
    expected = 0.05 * np.sum(wq * factor) / np.sum(wq)
    var = 0.05**2 * np.sum(wq * factor**2) / np.sum(wq) - expected**2
    assert_mean(wt, expected, math.sqrt(var))


def test_wan2022_drift_redraws_around_target():
    """At a model time the conductance is redrawn from the *target* with that time's polynomial
    (programming noise discarded) and converted back with the programmed weights' scale."""
    model = ReRamWan2022NoiseModel()
    w = level_matrix(0.5)
    prog, params = inference.apply_programming_noise(model, w, key(11))
    wt = inference.apply_drift_noise(model, prog, params, 86400.0, key(12))
    scale = 25.0 / float(jnp.max(jnp.abs(prog)))
    err = bulk(wt) * scale - 12.5
    c_1d = (0.701, 22.086, -50.773, 47.095, -16.458)
    off_mean, off_var = rectified_normal_moments(0.701)
    sigma = math.sqrt(pcm_poly(c_1d, 0.5) ** 2 + off_var)
    assert_mean(err, -off_mean, sigma)
    assert_std(err, sigma)
    with pytest.raises(ValueError, match="not one of the model's times"):
        inference.apply_drift_noise(model, prog, params, 3600.0, key(13))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda t: inference.apply_drift_noise(model, prog, params, t, key(13)))(86400.0)


def test_cmo_relaxation_and_read_noise():
    w = _cmo_matrix()
    base = ReRamCMONoiseModel(prog_noise_scale=0.0)
    ratio = (base.g_max - base.g_min) / 2.0
    g0 = base.g_min + ratio
    t = 3600.0
    relax = dataclass_replace(base, read_noise_scale=0.0)
    prog, params = inference.apply_programming_noise(relax, w, key(14))
    dg = (np.asarray(inference.apply_drift_noise(relax, prog, params, t, key(15))).ravel()[2:]) * ratio
    sigma = 0.04201137 * math.log(t) + 0.41183342
    assert_mean(dg, -0.08900206 * math.log(t), sigma)
    assert_std(dg, sigma)
    read = dataclass_replace(base, drift_scale=0.0)
    dg = np.asarray(inference.apply_drift_noise(read, prog, params, t, key(16))).ravel()[2:] * ratio
    sigma = 0.0277316483 * math.log10(g0) * math.sqrt(math.log((t + 1e-6) / 2e-6))
    assert_mean(dg, 0.0, sigma)
    assert_std(dg, sigma)
    np.testing.assert_array_equal(inference.apply_drift_noise(base, prog, params, 0.0, key(17)), prog)


def dataclass_replace(obj, **kw):
    import dataclasses

    fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    fields.update(kw)
    return type(obj)(**fields)


def test_apply_noise_one_shot_resamples():
    model = PCMLikeNoiseModel()
    w = jax.random.uniform(key(18), (16, 16), minval=-1, maxval=1)
    a = inference.apply_noise(model, w, 3600.0, key(19))
    b = inference.apply_noise(model, w, 3600.0, key(20))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, inference.apply_noise(model, w, 3600.0, key(19)))


# ---------------------------------------------------------------------------------------------
# Weight modifiers (RPUCuda formulas)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def w_mod():
    return jax.random.uniform(key(30), (N, N), minval=-0.6, maxval=0.6)


def _amax(w):
    return float(jnp.max(jnp.abs(w)))


def test_add_normal(w_mod):
    mod = WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1)
    d = np.asarray(inference.modify_weights(mod, w_mod, key(31)) - w_mod)
    assert_mean(d, 0.0, 0.1 * _amax(w_mod))
    assert_std(d, 0.1 * _amax(w_mod))
    mod = WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1, rel_to_actual_wmax=False, assumed_wmax=2.0)
    assert_std(inference.modify_weights(mod, w_mod, key(32)) - w_mod, 0.2)


def test_mult_normal(w_mod):
    mod = WeightModifierParameter(type=WeightModifierType.MULT_NORMAL, std_dev=0.2)
    rel = np.asarray((inference.modify_weights(mod, w_mod, key(33)) - w_mod) / w_mod)
    assert_std(rel, 0.2 * _amax(w_mod))


def test_poly(w_mod):
    mod = WeightModifierParameter(type="POLY", std_dev=0.5, coeffs=(0.1, 0.2, -0.05))
    a = _amax(w_mod)
    x = np.abs(np.asarray(w_mod)) / a
    sig = a * 0.5 * (0.1 + 0.2 * x - 0.05 * x**2)
    z = np.asarray(inference.modify_weights(mod, w_mod, key(34)) - w_mod) / sig
    assert_mean(z, 0.0, 1.0)
    assert_std(z, 1.0)


def test_prog_noise_keeps_sign_and_folds_at_zero():
    w = jnp.concatenate([jnp.full((N // 2, N), 0.0), jnp.full((N // 2, N), -0.5)]).at[-1, -1].set(1.0)
    mod = WeightModifierParameter(type="PROG_NOISE", std_dev=25.0, coeffs=(0.3, 0.0, 0.0), g_max=25.0)
    out = np.asarray(inference.modify_weights(mod, w, key(35)))
    zeros, neg = out[: N // 2].ravel(), out[N // 2 :].ravel()[:-1]
    assert (zeros >= 0).all() and (neg <= 0).all()
    # at w = 0: |0.3 ξ| (folded normal, mean 0.3·sqrt(2/π))
    m, s = folded_normal_moments(0.0, 0.3)
    assert_mean(zeros, m, s)
    # at w = -0.5 the noise (σ = 0.3) folds with probability Φ(-0.5/0.3) ≈ 5 %: mean of -|−0.5 + 0.3ξ|
    m, s = folded_normal_moments(-0.5, 0.3)
    assert_mean(-neg, m, s)


def test_discretize_levels_and_round_half_away():
    w = jnp.array([[1.0, 0.125, -0.125, 0.375, 0.3, -0.61]])
    mod = WeightModifierParameter(type="DISCRETIZE", res=0.25)
    out = np.asarray(inference.modify_weights(mod, w, key(36)))
    # a_max = 1, step 0.25; halves go away from zero (C roundf), unlike round-half-even
    np.testing.assert_allclose(out, [[1.0, 0.25, -0.25, 0.5, 0.25, -0.5]], atol=1e-7)


def test_discretize_levels_random(w_mod):
    mod = WeightModifierParameter(type="DISCRETIZE", res=0.1)
    step = 0.1 * _amax(w_mod)
    out = np.asarray(inference.modify_weights(mod, w_mod, key(37)))
    np.testing.assert_allclose(out / step, np.round(out / step), atol=1e-4)
    assert np.abs(out - np.asarray(w_mod)).max() <= step / 2 + 1e-6
    assert len(np.unique(np.round(out / step))) == 21  # levels -10..10 (step a_max·res)


def test_discretize_stochastic_rounding_is_unbiased(w_mod):
    mod = WeightModifierParameter(type="DISCRETIZE", res=0.1, sto_round=True)
    step = 0.1 * _amax(w_mod)
    out = np.asarray(inference.modify_weights(mod, w_mod, key(38)))
    np.testing.assert_allclose(out / step, np.round(out / step), atol=1e-4)
    assert np.abs(out - np.asarray(w_mod)).max() <= step + 1e-6
    # each rounding error has variance <= step²/4
    assert_mean(out - np.asarray(w_mod), 0.0, step / 2)


def test_discretize_add_normal(w_mod):
    mod = WeightModifierParameter(type="DISCRETIZE_ADD_NORMAL", res=0.1, std_dev=0.05)
    disc = inference.modify_weights(WeightModifierParameter(type="DISCRETIZE", res=0.1), w_mod, key(39))
    d = np.asarray(inference.modify_weights(mod, w_mod, key(40)) - disc)
    assert_std(d, 0.05 * _amax(w_mod))


def test_dorefa(w_mod):
    mod = WeightModifierParameter(type="DOREFA", res=0.05, dorefa_clip=0.6)
    out = np.asarray(inference.modify_weights(mod, w_mod, key(41)))
    w = np.asarray(w_mod, np.float64)
    x = np.tanh(w) * abs(0.6 / np.tanh(_amax(w_mod))) / 0.05
    expected = np.sign(x) * np.floor(np.abs(x) + 0.5) * 0.05
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["DROP_CONNECT", "ADD_NORMAL", "COPY"])
def test_drop_connect_fraction(w_mod, kind):
    mod = WeightModifierParameter(type=kind, pdrop=0.3, std_dev=0.1)
    out = np.asarray(inference.modify_weights(mod, w_mod, key(42)))
    dropped = out == 0.0
    assert_fraction(dropped, 0.3)
    if kind != "ADD_NORMAL":
        np.testing.assert_array_equal(out[~dropped], np.asarray(w_mod)[~dropped])


def test_none_and_copy_are_identity(w_mod):
    for kind in ("NONE", "COPY"):
        out = inference.modify_weights(WeightModifierParameter(type=kind, std_dev=0.3), w_mod, key(43))
        np.testing.assert_array_equal(out, w_mod)
    # NONE never drops (aihwkit's tile does not call the modifier for NONE)
    out = inference.modify_weights(WeightModifierParameter(type="NONE", pdrop=0.5), w_mod, key(43))
    np.testing.assert_array_equal(out, w_mod)


def test_copy_last_column(w_mod):
    w = w_mod.at[:, -1].set(10.0)
    mod = WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1, copy_last_column=True, pdrop=0.2)
    out = np.asarray(inference.modify_weights(mod, w, key(44)))
    np.testing.assert_array_equal(out[:, -1], 10.0)
    d = (out - np.asarray(w))[:, :-1]
    kept = out[:, :-1] != 0
    # a_max excludes the bias column: σ = 0.1·max|W[:, :-1]|, not 0.1·10
    assert_std(d[kept], 0.1 * _amax(w_mod[:, :-1]))


def test_pcm_noise_modifier():
    """PCM_NOISE at t = t0: g_p = g + σ_p(|g|/g_max)ξ1, then 1/f noise |g_p|·Q(|g_p|)·L·ξ2 with
    L = sqrt(ln((t0 + t_read)/(2 t_read))); the variance is integrated over ξ1 (Gauss–Hermite)."""
    w = level_matrix(0.5)
    mod = WeightModifierParameter(type="PCM_NOISE", std_dev=1.0, g_max=25.0)
    out = bulk(inference.modify_weights(mod, w, key(45)))
    assert (out >= 0).all()
    dg = (out - 0.5) * 25.0
    g, gm = 12.5, 25.0
    sig_p = 0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25
    L = math.sqrt(math.log((20.0 + 250e-9) / 500e-9))
    x, wq = np.polynomial.hermite_e.hermegauss(80)
    gp = g + sig_p * x
    q = np.minimum(0.0088 / np.maximum((np.abs(gp) / gm) ** 0.65, 1e-3), 0.2)
    var = sig_p**2 + L**2 * np.sum(wq * (gp * q) ** 2) / np.sum(wq)
    assert_mean(dg, 0.0, math.sqrt(var))
    assert_std(dg, math.sqrt(var))
    # zero weights stay exactly zero; a reset probability zeroes that fraction
    assert float(inference.modify_weights(mod, jnp.zeros((4, 4)), key(46)).max()) == 0.0
    mod = WeightModifierParameter(type="PCM_NOISE", std_dev=1.0, pcm_prob_at_reset=0.25)
    assert_fraction(bulk(inference.modify_weights(mod, w, key(47))) == 0.0, 0.25)


# ---------------------------------------------------------------------------------------------
# Torch-tile modifiers
# ---------------------------------------------------------------------------------------------


def test_torch_mult_normal_has_no_amax(w_mod):
    mod = WeightModifierParameter(type="MULT_NORMAL", std_dev=0.2)
    rel = np.asarray((inference.modify_weights_torch(mod, w_mod, key(50)) - w_mod) / w_mod)
    assert_std(rel, 0.2)  # the RPUCuda modifier would give 0.2·0.6


def test_torch_add_normal_and_per_batch_sample(w_mod):
    mod = WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1, per_batch_sample=True)
    out = np.asarray(inference.modify_weights_torch(mod, w_mod, key(51), batch_size=3))
    assert out.shape == (3, N, N)
    assert not np.allclose(out[0], out[1])
    assert_std(out - np.asarray(w_mod)[None], 0.1 * _amax(w_mod))


def test_torch_discretize_step_and_half_even():
    w = jnp.array([[1.0, 0.125, -0.125, 0.375, 0.3]])
    # res = 8 > 1 is read as 1/8; the step is 2·a_max·res = 0.25; torch.round rounds halves to even
    mod = WeightModifierParameter(type="DISCRETIZE", res=8.0)
    out = np.asarray(inference.modify_weights_torch(mod, w, key(52)))
    np.testing.assert_allclose(out, [[1.0, 0.0, 0.0, 0.5, 0.25]], atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Clip and remap
# ---------------------------------------------------------------------------------------------


def test_clip_fixed_value(w_mod):
    out = np.asarray(inference.clip_weights(WeightClipParameter(type="FIXED_VALUE", fixed_value=0.3), w_mod))
    assert np.abs(out).max() == pytest.approx(0.3)
    inside = np.abs(np.asarray(w_mod)) <= 0.3
    np.testing.assert_array_equal(out[inside], np.asarray(w_mod)[inside])
    # a non-positive clip value does nothing (aihwkit: clip only if c > 0)
    np.testing.assert_array_equal(inference.clip_weights(WeightClipParameter(type="FIXED_VALUE"), w_mod), w_mod)


def test_clip_layer_gaussian_and_average_channel_max(w_mod):
    c = 1.2 * float(np.std(np.asarray(w_mod), ddof=1))
    out = np.asarray(inference.clip_weights(WeightClipParameter(type="LAYER_GAUSSIAN", sigma=1.2), w_mod))
    assert np.abs(out).max() == pytest.approx(c, rel=1e-5)
    out = np.asarray(inference.clip_weights(WeightClipParameter(type="LAYER_GAUSSIAN", sigma=1.2, fixed_value=0.2), w_mod))
    assert np.abs(out).max() == pytest.approx(0.2)
    w = w_mod.at[0].multiply(0.1)
    c = float(np.mean(np.abs(np.asarray(w)).max(axis=1)))
    out = np.asarray(inference.clip_weights(WeightClipParameter(type="AVERAGE_CHANNEL_MAX"), w))
    assert np.abs(out).max() == pytest.approx(c, rel=1e-5)
    out = np.asarray(inference.clip_weights_torch(WeightClipParameter(type="LAYER_GAUSSIAN", sigma=1.2), w_mod))
    assert np.abs(out).max() == pytest.approx(1.2 * float(np.std(np.asarray(w_mod), ddof=1)), rel=1e-5)


def test_remap_layerwise_and_channelwise(w_mod):
    w = w_mod.at[3].set(0.0)
    s = jnp.linspace(0.5, 2.0, N)
    nw, ns = inference.remap_weights(WeightRemapParameter(type="LAYERWISE_SYMMETRIC", remapped_wmax=0.8), w, s)
    assert float(jnp.max(jnp.abs(nw))) == pytest.approx(0.8)
    np.testing.assert_allclose(ns[:, None] * nw, s[:, None] * w, rtol=1e-5, atol=1e-7)
    nw, ns = inference.remap_weights(WeightRemapParameter(type="CHANNELWISE_SYMMETRIC"), w, s)
    row = np.abs(np.asarray(nw)).max(axis=1)
    np.testing.assert_allclose(np.delete(row, 3), 1.0, rtol=1e-6)
    assert float(ns[3]) == float(s[3])  # an all-zero row keeps its scale
    np.testing.assert_allclose(ns[:, None] * nw, s[:, None] * w, rtol=1e-5, atol=1e-7)
    # torch tile: new scale = row abs-max of s·W
    nw, ns = inference.remap_weights_torch(WeightRemapParameter(type="CHANNELWISE_SYMMETRIC"), w, s)
    np.testing.assert_allclose(np.delete(np.asarray(ns), 3), np.delete(np.abs(np.asarray(s[:, None] * w)).max(1), 3), rtol=1e-6)


def test_remap_channelwise_bounded_scale_range():
    w = jnp.array([[4.0, 1.0], [0.5, -0.25], [1.0, 1.0]])
    s = jnp.ones(3)
    p = WeightRemapParameter(type="CHANNELWISE_SYMMETRIC", max_scale_range=2.0)
    nw, ns = inference.remap_weights(p, w, s)
    # s_min = 1, new scales (4, 0.5, 1) capped at s_min·range = 2
    np.testing.assert_allclose(ns, [2.0, 0.5, 1.0])
    np.testing.assert_allclose(nw, [[2.0, 0.5], [1.0, -0.5], [1.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Tiles: modifier timing, gradients, programming, drift, compensation
# ---------------------------------------------------------------------------------------------


def _tile(cfg, out_size=8, in_size=12, k=60):
    state = tile.init(key(k), out_size, in_size, cfg)
    state = inference.init_inference_aux(state)
    return tile.set_weights(state, jax.random.uniform(key(k + 1), (out_size, in_size), minval=-0.5, maxval=0.5))


def test_rpucuda_modifier_timing():
    """The modified weights are drawn in post_update_step and used (fixed) by later training
    forwards; before the first step the plain weights are used; eval uses the plain weights."""
    cfg = InferenceRPUConfig(forward=PERFECT, modifier=WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1))
    state = _tile(cfg)
    x = jax.random.normal(key(62), (5, 12))
    np.testing.assert_allclose(inference.forward(state, x, key(63)), x @ state.weights.T, rtol=1e-6, atol=1e-6)
    state = inference.post_update_step(state, key(64))
    fb = state.aux["fb_weights"]
    assert not np.allclose(fb, state.weights)
    y1 = inference.forward(state, x, key(65))
    y2 = inference.forward(state, x, key(66))
    np.testing.assert_allclose(y1, x @ fb.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(inference.forward(state, x, key(65), is_test=True), x @ state.weights.T, rtol=1e-5, atol=1e-6)
    cfg_t = InferenceRPUConfig(
        forward=PERFECT, modifier=WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1, enable_during_test=True)
    )
    state_t = inference.post_update_step(_tile(cfg_t), key(64))
    np.testing.assert_allclose(
        inference.forward(state_t, x, key(65), is_test=True), x @ state_t.aux["fb_weights"].T, rtol=1e-5, atol=1e-6
    )


def test_torch_modifier_resampled_every_forward():
    cfg = TorchInferenceRPUConfig(forward=PERFECT, modifier=WeightModifierParameter(type="ADD_NORMAL", std_dev=0.1))
    state = _tile(cfg)
    x = jax.random.normal(key(67), (5, 12))
    y1, y2 = inference.forward(state, x, key(68)), inference.forward(state, x, key(69))
    assert not np.allclose(y1, y2)
    np.testing.assert_array_equal(y1, inference.forward(state, x, key(68)))
    np.testing.assert_allclose(inference.forward(state, x, key(68), is_test=True), x @ state.weights.T, rtol=1e-5, atol=1e-6)
    assert "fb_weights" not in inference.post_update_step(state, key(70)).aux


@pytest.mark.parametrize("cfg_cls", [InferenceRPUConfig, TorchInferenceRPUConfig])
def test_weight_gradient_is_dense_and_optax_applies_it(cfg_cls):
    """The weight gradient is the ordinary dense ``cᵀx`` (straight-through the modifier), so any
    optax optimizer trains the tile; with remapping it is divided by the mapping scale² per row
    (aihwkit's ``(g/s)ᵀx``)."""
    cfg = cfg_cls(
        forward=PERFECT,
        modifier=WeightModifierParameter(type="DISCRETIZE", res=0.1),
        remap=WeightRemapParameter(type="CHANNELWISE_SYMMETRIC"),
    )
    state = inference.post_update_step(_tile(cfg), key(71))
    s = state.aux["mapping_scales"]
    assert not np.allclose(s, 1.0)
    x = jax.random.normal(key(72), (5, 12))
    c = jax.random.normal(key(73), (5, 8))

    def loss(w):
        return jnp.sum(c * inference.forward(state.replace(weights=w), x, key(74)))

    g = jax.grad(loss)(state.weights)
    np.testing.assert_allclose(g, (c * s).T @ x / s[:, None] ** 2, rtol=1e-4, atol=1e-5)
    opt = optax.sgd(0.1)
    updates, _ = opt.update(g, opt.init(state.weights))
    np.testing.assert_allclose(optax.apply_updates(state.weights, updates), state.weights - 0.1 * g, rtol=1e-6)


def test_per_column_and_exact_reference_compensation():
    w_cfg = dict(forward=PERFECT, noise_model=PCMLikeNoiseModel())
    state = inference.program_weights(_tile(InferenceRPUConfig(drift_compensation=PerColumnDriftCompensation(), **w_cfg)), key(75))
    drifted = inference.drift_weights(state, 86400.0, key(76))
    prog, wd = np.asarray(state.aux["programmed_weights"]), np.asarray(drifted.weights)
    alpha = np.asarray(drifted.aux["alpha"])
    assert alpha.shape == (8,)
    np.testing.assert_allclose(alpha, np.abs(prog).mean(1) / np.abs(wd).mean(1), rtol=1e-5)
    state = _tile(InferenceRPUConfig(drift_compensation=GlobalDriftCompensationWithExactReference(), **w_cfg))
    ref = np.asarray(state.weights)
    drifted = inference.drift_weights(inference.program_weights(state, key(77)), 86400.0, key(78))
    np.testing.assert_allclose(drifted.aux["alpha"], np.abs(ref).mean() / np.abs(np.asarray(drifted.weights)).mean(), rtol=1e-5)


def test_compensation_only_in_eval_mode():
    state = inference.program_weights(_tile(CFG), key(79))
    drifted = inference.drift_weights(state, 31536000.0, key(80))
    alpha = float(drifted.aux["alpha"])
    assert alpha > 1.5  # a year of drift
    x = jax.random.normal(key(81), (5, 12))
    y_train = inference.forward(drifted, x, key(82))
    y_eval = inference.forward(drifted, x, key(82), is_test=True)
    np.testing.assert_allclose(y_train, x @ drifted.weights.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_eval, alpha * y_train, rtol=1e-5, atol=1e-6)
    off = inference.drift_weights(
        inference.program_weights(_tile(InferenceRPUConfig(forward=PERFECT, drift_compensation=None)), key(79)),
        31536000.0,
        key(80),
    )
    assert "alpha" not in off.aux
    np.testing.assert_allclose(inference.forward(off, x, key(82), is_test=True), x @ off.weights.T, rtol=1e-5, atol=1e-6)


def test_drift_is_not_cumulative_and_read_noise_is_fresh():
    state = inference.program_weights(_tile(CFG), key(83))
    a = inference.drift_weights(state, 3600.0, key(84))
    b = inference.drift_weights(a, 3600.0, key(84))  # drifting the drifted state restarts from programming
    np.testing.assert_array_equal(a.weights, b.weights)
    c = inference.drift_weights(state, 3600.0, key(85))
    assert not np.allclose(a.weights, c.weights)  # fresh read noise per call
    np.testing.assert_array_equal(a.aux["programmed_weights"], c.aux["programmed_weights"])
    np.testing.assert_array_equal(a.aux["drift_params"], c.aux["drift_params"])


def test_reprogramming_uses_the_reference():
    state = _tile(CFG)
    w = state.weights
    drifted = inference.drift_weights(inference.program_weights(state, key(86)), 86400.0, key(87))
    again = inference.program_weights(drifted, key(88))
    np.testing.assert_array_equal(again.aux["reference_weights"], w)
    fresh = inference.program_weights(drifted, key(88), from_reference=False)
    np.testing.assert_array_equal(fresh.aux["reference_weights"], drifted.weights)
    other = inference.program_weights(state, key(88), noise_model=StateIndependentNoiseModel())
    assert isinstance(other.rpu_config.noise_model, StateIndependentNoiseModel)


def test_same_key_same_result_under_jit_and_vmap():
    state = _tile(CFG)
    x = jax.random.normal(key(89), (5, 12))

    def run(k):
        k1, k2, k3 = jax.random.split(k, 3)
        s = inference.drift_weights(inference.program_weights(state, k1), 3600.0, k2)
        return inference.forward(s, x, k3, is_test=True)

    keys = jax.random.split(key(90), 3)
    plain = np.stack([run(k) for k in keys])
    np.testing.assert_allclose(jax.jit(jax.vmap(run))(keys), plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(run)(keys[0]), plain[0], rtol=1e-5, atol=1e-6)


def test_evaluate_over_time():
    """Programming happens once per seed and drift per time: with programming noise only, the
    metric is the same at every time of a seed, differs between seeds, and its mean over seeds is
    the expected ``Σ x·E[W_P]ᵀ`` within 5 SE (SE from the spread over seeds)."""
    x = jax.random.normal(key(91), (5, 12))
    quiet = PCMLikeNoiseModel(drift_scale=0.0, read_noise_scale=0.0)
    model = {"layer": _tile(dataclass_replace(CFG, noise_model=quiet, drift_compensation=None)), "scale": 2.0}

    def metric(m, k):
        return m["scale"] * jnp.sum(inference.forward(m["layer"], x, k, is_test=True))

    n_seeds = 16
    mean, std, values = inference.evaluate_over_time(model, metric, (1.0, 3600.0), key(92), n_seeds=n_seeds, return_values=True)
    assert values.shape == (n_seeds, 2) and mean.shape == (2,) and std.shape == (2,)
    np.testing.assert_allclose(values[:, 0], values[:, 1], rtol=1e-6)
    assert np.std(values[:, 0]) > 0
    # E[W_P] = W − sign(W)·c0/sqrt(2π)/scale: the off device of each pair is programmed to
    # max(c0·ξ, 0) (c0 = 0.26348 µS at g_max = 25 µS, scale = 25/max|W| µS per unit).
    w = np.asarray(model["layer"].weights, np.float64)
    bias = 0.26348 / math.sqrt(2 * math.pi) / (25.0 / np.abs(w).max())
    expected = 2.0 * np.sum(np.asarray(x, np.float64) @ (w - np.sign(w) * bias).T)
    se = values[:, 0].std(ddof=1) / math.sqrt(n_seeds)
    assert abs(mean[0] - expected) <= Z * se, (mean[0], expected, se)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_times_and_order():
    state = _tile(CFG)
    with pytest.raises(ValueError, match="not been programmed"):
        inference.drift_weights(state, 10.0, key(94))
    programmed = inference.program_weights(state, key(95))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="t_inference"):
            inference.drift_weights(programmed, bad, key(96))
    with pytest.raises(ValueError, match="t_inference"):
        inference.evaluate_over_time({"a": programmed}, lambda m, k: 0.0, (1.0, -5.0), key(97))
    # a traced negative time cannot raise inside jit: the weights become NaN instead
    out = jax.jit(lambda t: inference.drift_weights(programmed, t, key(96)).weights)(-1.0)
    assert np.isnan(np.asarray(out)).all()


def test_bad_configs():
    with pytest.raises(ValueError, match="WeightModifierParameter.type"):
        WeightModifierParameter(type="GAUSSIAN_BLUR")
    with pytest.raises(ValueError, match="WeightModifierParameter.type"):
        WeightModifierParameter(type=3)
    with pytest.raises(ValueError, match="WeightClipParameter.type"):
        WeightClipParameter(type="HARD")
    for bad in (0.0, -25.0):
        with pytest.raises(ValueError, match="g_max"):
            SinglePairConductanceConverter(g_max=bad)
        with pytest.raises(ValueError, match="g_max"):
            PCMLikeNoiseModel(g_max=bad)
        with pytest.raises(ValueError, match="g_max"):
            WeightModifierParameter(type="PCM_NOISE", g_max=bad)
        with pytest.raises(ValueError, match="g_max"):
            ReRamCMONoiseModel(g_max=bad)
    with pytest.raises(ValueError, match="g_min"):
        SinglePairConductanceConverter(g_max=5.0, g_min=5.0)
    with pytest.raises(ValueError, match="differs"):
        PCMLikeNoiseModel(g_max=30.0, g_converter=SinglePairConductanceConverter(g_max=25.0))
    with pytest.raises(ValueError, match="pdrop"):
        WeightModifierParameter(pdrop=1.5)
    with pytest.raises(ValueError, match="per_batch_sample"):
        InferenceRPUConfig(modifier=WeightModifierParameter(type="ADD_NORMAL", per_batch_sample=True))
    with pytest.raises(ValueError, match="torch tile"):
        TorchInferenceRPUConfig(modifier=WeightModifierParameter(type="POLY"))
    with pytest.raises(ValueError, match="drop-connect"):
        TorchInferenceRPUConfig(modifier=WeightModifierParameter(type="ADD_NORMAL", pdrop=0.1))
    with pytest.raises(ValueError, match="remapped_wmax"):
        WeightRemapParameter(type="CHANNELWISE_SYMMETRIC", max_scale_range=2.0, remapped_wmax=0.5)
    with pytest.raises(ValueError, match="custom drift model"):
        CustomDriftPCMLikeNoiseModel(custom_drift_model={"g_lst": [1.0, 25.0], "nu_mean_lst": [0.1, 0.1], "nu_std_lst": [0.0, 0.0]})
    with pytest.raises(ValueError, match="HermesNoiseModel.g_max"):
        HermesNoiseModel(g_max=25.0)
    with pytest.raises(ValueError, match="analog bias"):
        inference.init_inference_aux(tile.init(key(98), 4, 4, TorchInferenceRPUConfig(), bias=True))
    assert hash(InferenceRPUConfig()) == hash(InferenceRPUConfig())
    assert WeightModifierParameter(type="add_normal").type is WeightModifierType.ADD_NORMAL


def test_non_inference_tile_is_rejected():
    from rpujax.configs import FloatingPointRPUConfig

    state = tile.init(key(99), 4, 4, FloatingPointRPUConfig())
    with pytest.raises(TypeError, match="InferenceRPUConfig"):
        inference.program_weights(state, key(100))


def test_forward_uses_the_tile_mvm_with_the_same_key():
    """Without a modifier the forward is exactly the tile's analog MVM for the same key (default
    forward IO: noise, quantisation, bound management), in training and — with alpha still 1
    before any drift — in eval mode."""
    state = _tile(InferenceRPUConfig(), k=101)
    x = jax.random.normal(key(102), (5, 12))
    y = tile.forward(state, x, key(103))
    np.testing.assert_array_equal(inference.forward(state, x, key(103)), y)
    np.testing.assert_array_equal(inference.forward(state, x, key(103), is_test=True), y)


def test_configs_round_trip_through_checkpoint_dicts():
    import json

    from rpujax.tile.checkpoint import config_from_dict, config_to_dict

    table = {"g_lst": [0.0, 10.0, 25.0], "nu_mean_lst": [0.1, 0.05, 0.02], "nu_std_lst": [0.02, 0.01, 0.005]}
    configs = [
        InferenceRPUConfig(),
        TorchInferenceRPUConfig(modifier=WeightModifierParameter(type="DISCRETIZE", res=0.1)),
        InferenceRPUConfig(noise_model=CustomDriftPCMLikeNoiseModel(custom_drift_model=table)),
        InferenceRPUConfig(noise_model=ReRamCMONoiseModel(), drift_compensation=None),
        InferenceRPUConfig(noise_model=ReRamWan2022NoiseModel(g_converter=NPairConductanceConverter(f_lst=(1.0, 2.0)))),
        InferenceRPUConfig(noise_model=HermesNoiseModel(num_devices=1), drift_compensation=PerColumnDriftCompensation()),
    ]
    for cfg in configs:
        again = config_from_dict(json.loads(json.dumps(config_to_dict(cfg))))
        assert again == cfg and hash(again) == hash(cfg)
