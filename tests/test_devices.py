"""Device models: construction sampling, single-pulse rules, validation, granularity.

Statistical tests use fixed keys and 5-sigma tolerances derived from the sample size:

- mean: two independent samples of size n each, ``SE(mean_a − mean_b) = sqrt((s_a² + s_b²)/n)``;
  against an exact value ``SE = s/sqrt(n)``.
- std: ``SE(s) = s·sqrt(κ − 1)/(2·sqrt(n))`` with κ the sample kurtosis (κ = 3 for a normal gives
  the familiar ``s/sqrt(2n)``); two samples: ``sqrt(2)·SE``.
- quantiles (distribution-free, valid for heavy tails): the empirical CDF of our sample at
  aihwkit's p-quantile deviates from p with ``SE = sqrt(2·p(1−p)/n)`` (both samples noisy).
- histograms: two-sample chi-square ``Σ (a−b)²/(a+b)`` over the reference bins (plus the two
  tails), compared with the χ²(k−1) quantile at the 5-sigma two-sided level (p = 5.7e-7).
- proportions: binomial ``SE = sqrt(p(1−p)/n)``.
- correlation: Fisher z, ``SE = sqrt(2/(n−3))`` for two samples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import rpujax.configs.devices as cd
from rpujax import devices as dv
from rpujax.configs.devices import (
    ConstantStepDevice,
    DriftParameter,
    ExpStepDevice,
    FloatingPointDevice,
    IdealDevice,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    PowStepReferenceDevice,
    PulsedDevice,
    SimpleDriftParameter,
    SoftBoundsDevice,
    SoftBoundsPmaxDevice,
    SoftBoundsReferenceDevice,
)

REF_PATH = Path(__file__).parent / "data" / "reference" / "aihwkit-1.2.0-cpu.json"
CASE_B = json.loads(REF_PATH.read_text())["cases"]["b"]
Z = 5.0
CHI2_P = 2 * stats.norm.sf(Z)  # two-sided 5 sigma

# Ratios whose denominator (a sampled bound) has a positive density at 0: Cauchy-like tails, no
# finite variance, so only the quantile and histogram tests apply.
HEAVY_TAILED = {"slope_up", "slope_down", "up_down_ratio"}


def _device_from_config(config: dict) -> PulsedDevice:
    kwargs = {k.split(".", 1)[1]: v for k, v in config["non_default"].items() if k.startswith("device.")}
    return getattr(cd, config["device_class"])(**kwargs)


def _kurtosis(a: np.ndarray) -> float:
    return float(stats.kurtosis(a, fisher=False))


def _assert_mean_std_two_sample(name: str, ours: np.ndarray, mean: float, std: float) -> None:
    n = ours.size
    se_mean = math.sqrt((ours.std() ** 2 + std**2) / n)
    assert abs(ours.mean() - mean) < Z * se_mean, (name, ours.mean(), mean, se_mean)
    se_std = math.sqrt(2.0) * ours.std() * math.sqrt(_kurtosis(ours) - 1.0) / (2.0 * math.sqrt(n))
    assert abs(ours.std() - std) < Z * se_std, (name, ours.std(), std, se_std)


def _assert_quantiles(name: str, ours: np.ndarray, quantiles: dict) -> None:
    n = ours.size
    srt = np.sort(ours)
    for p_str, q in quantiles.items():
        p = float(p_str)
        f = np.searchsorted(srt, q, side="right") / n
        se = math.sqrt(2.0 * p * (1.0 - p) / n)
        assert abs(f - p) < Z * se, (name, p, f, se)


def _assert_histogram(name: str, ours: np.ndarray, hist: dict) -> None:
    edges = np.asarray(hist["edges"], np.float64)
    counts, _ = np.histogram(ours, bins=edges)
    a = np.concatenate([[hist["below"]], hist["counts"], [hist["above"]]]).astype(np.float64)
    b = np.concatenate([[np.sum(ours < edges[0])], counts, [np.sum(ours > edges[-1])]]).astype(np.float64)
    assert a.sum() == b.sum() == ours.size
    keep = (a + b) > 0
    chi2 = float(np.sum((a[keep] - b[keep]) ** 2 / (a[keep] + b[keep])))
    limit = stats.chi2.isf(CHI2_P, keep.sum() - 1)
    assert chi2 < limit, (name, chi2, limit)


def _derived(params: dict[str, np.ndarray], dw_min: float) -> dict[str, np.ndarray]:
    up, down = params["dwmin_up"], params["dwmin_down"]
    return {
        "gain_est": (up + down) / (2.0 * dw_min),
        "up_minus_down_over_2dwmin": (up - down) / (2.0 * dw_min),
        "up_down_ratio": up / down,
        "bound_range": params["max_bound"] - params["min_bound"],
    }


# ---------------------------------------------------------------------------------------------
# (a) construction statistics against aihwkit (reference case b)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CASE_B["devices"]))
def test_construction_statistics_match_aihwkit(variant: str) -> None:
    ref = CASE_B["devices"][variant]
    device = _device_from_config(ref["config"])
    d_size, x_size = ref["tile_shape"]
    params = dv.sample_device_parameters(device, jax.random.key(11), d_size, x_size)
    ours = {k: np.asarray(v, np.float64) for k, v in params.items()}
    assert set(ref["params"]) <= set(ours), (sorted(ref["params"]), sorted(ours))

    for name, entry in ref["params"].items():
        a = ours[name].ravel()
        s = entry["summary"]
        assert a.size == s["n"]
        if s["std"] == 0.0:
            np.testing.assert_array_equal(a, s["mean"], err_msg=name)
            continue
        _assert_quantiles(name, a, s["quantiles"])
        _assert_histogram(name, a, entry["hist"])
        if name not in HEAVY_TAILED:
            _assert_mean_std_two_sample(name, a, s["mean"], s["std"])

    derived = _derived(ours, device.dw_min)
    for name, s in ref["derived"].items():
        if name == "corr_up_down":
            n = ours["dwmin_up"].size
            r = np.corrcoef(ours["dwmin_up"].ravel(), ours["dwmin_down"].ravel())[0, 1]
            assert abs(np.arctanh(r) - np.arctanh(s)) < Z * math.sqrt(2.0 / (n - 3)), (r, s)
            continue
        a = derived[name].ravel()
        _assert_quantiles(name, a, s["quantiles"])
        if name not in HEAVY_TAILED:
            _assert_mean_std_two_sample(name, a, s["mean"], s["std"])


def test_construction_seed_semantics() -> None:
    # aihwkit (case b): a fixed construction_seed reproduces the devices; seed 0 draws new ones.
    assert CASE_B["construction_seed_reproducible"] and CASE_B["construction_seed_0_random_each_time"]
    seeded = SoftBoundsDevice(construction_seed=1234)
    a = dv.sample_device_parameters(seeded, jax.random.key(1), 16, 8)
    b = dv.sample_device_parameters(seeded, jax.random.key(2), 16, 8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    other = dv.sample_device_parameters(SoftBoundsDevice(construction_seed=1235), jax.random.key(1), 16, 8)
    assert not np.array_equal(a["max_bound"], other["max_bound"])

    unseeded = SoftBoundsDevice()
    c = dv.sample_device_parameters(unseeded, jax.random.key(1), 16, 8)
    d = dv.sample_device_parameters(unseeded, jax.random.key(2), 16, 8)
    c2 = dv.sample_device_parameters(unseeded, jax.random.key(1), 16, 8)
    assert not np.array_equal(c["max_bound"], d["max_bound"])
    for k in c:
        np.testing.assert_array_equal(c[k], c2[k], err_msg=k)

    # a seeded device is the same for every tile of a vmapped init
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.vmap(lambda k: dv.sample_device_parameters(seeded, k, 16, 8))(keys)
    np.testing.assert_array_equal(batched["dwmin_up"][0], batched["dwmin_up"][2])
    np.testing.assert_array_equal(batched["dwmin_up"][1], a["dwmin_up"])


def test_sampling_jit_vmap_consistent() -> None:
    device = PowStepReferenceDevice(subtract_symmetry_point=True, reference_std=0.05, n_estimation_steps=50)
    key = jax.random.key(5)
    eager = dv.sample_device_parameters(device, key, 8, 6)
    jitted = jax.jit(lambda k: dv.sample_device_parameters(device, k, 8, 6))(key)
    keys = jax.random.split(jax.random.key(6), 3)
    vmapped = jax.vmap(lambda k: dv.sample_device_parameters(device, k, 8, 6))(keys)
    # identical random bits; the arithmetic may differ by float32 rounding (fused multiply-adds),
    # which the 50 symmetry-point iterations accumulate to a few 1e-9 on values of order 1e-2
    for name in eager:
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-6, atol=1e-7, err_msg=name)
        for i in range(3):
            one = dv.sample_device_parameters(device, keys[i], 8, 6)
            np.testing.assert_allclose(vmapped[name][i], one[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_parameter_names_and_shapes() -> None:
    base = dv.BASE_NAMES
    cases = {
        ConstantStepDevice(): base,
        ExpStepDevice(): base,
        PiecewiseStepDevice(): base,
        LinearStepDevice(): base + ("slope_up", "slope_down"),
        SoftBoundsDevice(): base + ("slope_up", "slope_down"),
        SoftBoundsPmaxDevice(): base + ("slope_up", "slope_down"),
        PowStepDevice(): base + ("gamma_up", "gamma_down"),
        PowStepReferenceDevice(): base + ("gamma_up", "gamma_down", "reference"),
        SoftBoundsReferenceDevice(): base + ("reference",),
        IdealDevice(): ("decay_scales", "diffusion_rates", "reset_bias"),
        FloatingPointDevice(): ("decay_scales", "diffusion_rates", "reset_bias", "drift_nu"),
    }
    for device, names in cases.items():
        p = dv.sample_device_parameters(device, jax.random.key(0), 5, 3)
        assert tuple(p) == names, (type(device).__name__, tuple(p))
        for k, a in p.items():
            assert a.shape == (5, 3) and a.dtype == jnp.float32, (type(device).__name__, k, a.shape, a.dtype)
    assert "persistent_weights" not in dv.sample_device_parameters(
        SoftBoundsDevice(write_noise_std=1.0), jax.random.key(0), 2, 2
    )


# ---------------------------------------------------------------------------------------------
# (e) construction properties
# ---------------------------------------------------------------------------------------------

N_PROP = (256, 256)


def _sample(device, key=0, shape=N_PROP):
    p = dv.sample_device_parameters(device, jax.random.key(key), *shape)
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def test_enforce_consistency_bounds_straddle_zero_and_positive_steps() -> None:
    # wide dtods so that inverted bounds and negative gains occur often
    dev = ConstantStepDevice(w_max_dtod=2.0, w_min_dtod=2.0, dw_min_dtod=2.0)
    p = _sample(dev)
    assert np.all(p["max_bound"] >= 0) and np.all(p["min_bound"] <= 0)
    assert np.all(p["dwmin_up"] >= 0) and np.all(p["dwmin_down"] >= 0)
    # |bounds| keep the w·(1 + dtod·ξ) magnitude law: E|0.6(1 + 2ξ)|, folded normal mean
    mu, sd = 0.6, 1.2
    folded = sd * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sd**2)) + mu * (1 - 2 * stats.norm.cdf(-mu / sd))
    both = np.concatenate([p["max_bound"].ravel(), -p["min_bound"].ravel()])
    # the swap pairs the two draws, but each value is still a folded draw; 2n values, n independent pairs
    se = both.std() / math.sqrt(p["max_bound"].size)
    assert abs(both.mean() - folded) < Z * se, (both.mean(), folded)


def test_not_enforced_midpoint_and_signed_steps() -> None:
    dev = ConstantStepDevice(enforce_consistency=False, w_max_dtod=2.0, w_min_dtod=2.0, dw_min_dtod=2.0,
                             up_down_dtod=0.0)
    p = _sample(dev)
    n = p["max_bound"].size
    assert np.all(p["max_bound"] >= p["min_bound"])
    stuck = np.mean(p["max_bound"] == p["min_bound"])
    # raw b_min > b_max  <=>  -0.6(1 + 2ξ2) > 0.6(1 + 2ξ1)  <=>  ξ1 + ξ2 < -1
    expect = stats.norm.cdf(-1.0 / math.sqrt(2.0))
    assert abs(stuck - expect) < Z * math.sqrt(expect * (1 - expect) / n), (stuck, expect)
    # steps stay signed: gain 1 + 2ξ < 0 with probability Φ(-1/2); up and down share the gain
    neg = np.mean(p["dwmin_up"] < 0)
    expect = stats.norm.cdf(-0.5)
    assert abs(neg - expect) < Z * math.sqrt(expect * (1 - expect) / n), (neg, expect)
    np.testing.assert_array_equal(p["dwmin_up"] < 0, p["dwmin_down"] < 0)


def test_up_down_asymmetry_is_one_sided() -> None:
    for up_down in (0.3, -0.3):
        p = _sample(ConstantStepDevice(up_down=up_down, dw_min_dtod=0.0, up_down_dtod=0.0), shape=(4, 4))
        up, down = (1.0, 0.7) if up_down > 0 else (0.7, 1.0)
        np.testing.assert_allclose(p["dwmin_up"], up * 0.001, rtol=1e-6)
        np.testing.assert_allclose(p["dwmin_down"], down * 0.001, rtol=1e-6)


def test_corrupt_devices_fraction_and_values() -> None:
    prob = 0.2
    p = _sample(ConstantStepDevice(corrupt_devices_prob=prob))
    n = p["max_bound"].size
    stuck = (p["max_bound"] == p["min_bound"]) & (p["dwmin_up"] == 0) & (p["dwmin_down"] == 0)
    frac = stuck.mean()
    assert abs(frac - prob) < Z * math.sqrt(prob * (1 - prob) / n), frac
    values = p["max_bound"][stuck]
    assert np.all(np.abs(values) <= 0.1 + 1e-7)
    # U(-0.1, 0.1) where both bounds exceed the range (almost always): mean 0, std 0.2/sqrt(12)
    assert abs(values.mean()) < Z * (0.2 / math.sqrt(12)) / math.sqrt(values.size)
    assert values.min() < -0.099 and values.max() > 0.099
    # no corruption: no stuck devices at all
    assert not np.any(_sample(ConstantStepDevice(), shape=(64, 64))["dwmin_up"] == 0)


def test_perfect_bias_last_column() -> None:
    dev = ConstantStepDevice(perfect_bias=True, corrupt_devices_prob=1.0)
    p = _sample(dev, shape=(32, 9))
    np.testing.assert_allclose(p["dwmin_up"][:, -1], 0.001, rtol=1e-6)
    np.testing.assert_allclose(p["dwmin_down"][:, -1], 0.001, rtol=1e-6)
    np.testing.assert_allclose(p["max_bound"][:, -1], 60.0, rtol=1e-6)
    np.testing.assert_allclose(p["min_bound"][:, -1], -60.0, rtol=1e-6)
    # the other columns are the ordinary (here: all corrupt) devices
    assert np.all(p["dwmin_up"][:, :-1] == 0)
    # SoftBounds slopes of the bias column use its perfect bounds and steps
    sb = _sample(SoftBoundsDevice(perfect_bias=True), shape=(8, 3))
    np.testing.assert_allclose(sb["slope_up"][:, -1], -0.001 / 60.0, rtol=1e-5)
    np.testing.assert_allclose(sb["slope_down"][:, -1], -0.001 / -60.0, rtol=1e-5)


def test_lifetime_decay_scales() -> None:
    np.testing.assert_array_equal(_sample(ConstantStepDevice(lifetime=10.0), shape=(4, 4))["decay_scales"],
                                  np.float32(0.9))
    np.testing.assert_array_equal(_sample(ConstantStepDevice(lifetime=1.0), shape=(4, 4))["decay_scales"], 0.0)
    np.testing.assert_array_equal(_sample(ConstantStepDevice(lifetime=0.5), shape=(4, 4))["decay_scales"], 0.0)
    np.testing.assert_array_equal(_sample(ConstantStepDevice(), shape=(4, 4))["decay_scales"], 1.0)
    # L = 2(1 + ξ) <= 1 with probability Φ(-1/2): those decay completely (scale 0)
    d = _sample(ConstantStepDevice(lifetime=2.0, lifetime_dtod=1.0))["decay_scales"]
    zero = np.mean(d == 0)
    expect = stats.norm.cdf(-0.5)
    assert abs(zero - expect) < Z * math.sqrt(expect * (1 - expect) / d.size), (zero, expect)
    assert np.all((d >= 0) & (d < 1))


def test_diffusion_reset_drift_sampling() -> None:
    dev = ConstantStepDevice(diffusion=0.01, diffusion_dtod=0.5, reset=0.05, reset_dtod=0.02,
                             drift=DriftParameter(nu=0.1, nu_dtod=0.2))
    p = _sample(dev)
    n = p["reset_bias"].size
    # diffusion rate |0.01(1 + 0.5ξ)|: folded normal mean
    mu, sd = 1.0, 0.5
    folded = 0.01 * (sd * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sd**2))
                     + mu * (1 - 2 * stats.norm.cdf(-mu / sd)))
    r = p["diffusion_rates"]
    assert np.all(r >= 0)
    assert abs(r.mean() - folded) < Z * r.std() / math.sqrt(n), (r.mean(), folded)
    # reset bias: additive dtod (std 0.02, not 0.05·0.02)
    rb = p["reset_bias"]
    assert abs(rb.mean() - 0.05) < Z * 0.02 / math.sqrt(n)
    assert abs(rb.std() - 0.02) < Z * 0.02 / math.sqrt(2 * n)
    # drift exponent: relative dtod, std 0.1·0.2
    nu = p["drift_nu"]
    assert abs(nu.mean() - 0.1) < Z * 0.02 / math.sqrt(n)
    assert abs(nu.std() - 0.02) < Z * 0.02 / math.sqrt(2 * n)
    # no drift: zeros
    np.testing.assert_array_equal(_sample(ConstantStepDevice(), shape=(4, 4))["drift_nu"], 0.0)


def test_ideal_and_floating_point_arrays() -> None:
    p = _sample(IdealDevice(lifetime=4.0, diffusion=0.02), shape=(3, 5))
    np.testing.assert_allclose(p["decay_scales"], 0.75, rtol=1e-7)
    np.testing.assert_allclose(p["diffusion_rates"], 0.02, rtol=1e-7)
    np.testing.assert_array_equal(p["reset_bias"], 0.0)
    # lifetime <= 1 on ideal devices: no decay (rate 0), unlike pulsed devices
    np.testing.assert_array_equal(_sample(IdealDevice(lifetime=0.8), shape=(2, 2))["decay_scales"], 1.0)
    fp = _sample(FloatingPointDevice(drift=SimpleDriftParameter(nu=0.05)), shape=(2, 2))
    np.testing.assert_allclose(fp["drift_nu"], 0.05, rtol=1e-7)
    np.testing.assert_array_equal(_sample(FloatingPointDevice(), shape=(2, 2))["drift_nu"], 0.0)


def _se_mean(a):
    return a.std() / math.sqrt(a.size)


def test_linear_step_slopes() -> None:
    # mean_bound_reference: slope_up·w_max/(-s_up) = |Γ+| ~ |0.5 + 0.05ξ|, slope_down·w_min/(-s_down) = |Γ-|
    p = _sample(LinearStepDevice(gamma_up=0.5, gamma_down=0.3, gamma_up_dtod=0.05, gamma_down_dtod=0.02))
    g_up = p["slope_up"] * 0.6 / -p["dwmin_up"]
    g_down = p["slope_down"] * -0.6 / -p["dwmin_down"]
    assert abs(g_up.mean() - 0.5) < Z * _se_mean(g_up) and abs(g_up.std() - 0.05) < Z * 0.05 / math.sqrt(2 * g_up.size)
    assert abs(g_down.mean() - 0.3) < Z * _se_mean(g_down)
    assert abs(g_down.std() - 0.02) < Z * 0.02 / math.sqrt(2 * g_down.size)
    assert np.all(p["slope_up"] <= 0) and np.all(p["slope_down"] >= 0)
    # per-device references
    q = _sample(LinearStepDevice(gamma_up=0.5, gamma_up_dtod=0.0, gamma_down=0.5, gamma_down_dtod=0.0,
                                 mean_bound_reference=False), shape=(16, 16))
    np.testing.assert_allclose(q["slope_up"], -0.5 * q["dwmin_up"] / q["max_bound"], rtol=1e-5)
    np.testing.assert_allclose(q["slope_down"], -0.5 * q["dwmin_down"] / q["min_bound"], rtol=1e-5)
    # allow_increasing keeps the sign of a negative gamma
    r = _sample(LinearStepDevice(gamma_up=-0.5, gamma_up_dtod=0.0, allow_increasing=True), shape=(8, 8))
    np.testing.assert_allclose(r["slope_up"], 0.5 * r["dwmin_up"] / 0.6, rtol=1e-5)
    # reverse_up: reference at w_min - reverse_offset
    s = _sample(LinearStepDevice(gamma_up=0.5, gamma_up_dtod=0.0, reverse_up=True), shape=(8, 8))
    np.testing.assert_allclose(s["slope_up"], -0.5 * s["dwmin_up"] / (-0.6 - 0.01), rtol=1e-5)


def test_soft_bounds_slopes_are_per_device() -> None:
    p = _sample(SoftBoundsDevice(), shape=(32, 32))
    np.testing.assert_allclose(p["slope_up"], -p["dwmin_up"] / p["max_bound"], rtol=1e-5)
    np.testing.assert_allclose(p["slope_down"], -p["dwmin_down"] / p["min_bound"], rtol=1e-5)


def test_soft_bounds_pmax_conversion() -> None:
    dev = SoftBoundsPmaxDevice(p_max=500, alpha=0.002, range_min=-0.5, range_max=1.5)
    b = 2.0 / (1.0 - math.exp(-1.0))
    assert dev.w_min == -0.5
    assert math.isclose(dev.w_max, -0.5 + b) and math.isclose(dev.dw_min, b * 0.002)
    assert math.isclose(dev.up_down, 1.0 - 1.0 / b)
    sb = dev.as_soft_bounds()
    assert type(sb) is SoftBoundsDevice and sb.w_max == dev.w_max and sb.dw_min_dtod == dev.dw_min_dtod
    seeded = SoftBoundsPmaxDevice(construction_seed=9)
    a = dv.sample_device_parameters(seeded, jax.random.key(0), 4, 4)
    c = dv.sample_device_parameters(seeded.as_soft_bounds(), jax.random.key(0), 4, 4)
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])
    assert dv.weight_granularity(dev) == dev.dw_min
    # values passed for the derived fields are ignored (as in aihwkit)
    assert SoftBoundsPmaxDevice(w_min=-0.1).w_min == -1.0


def test_soft_bounds_reference_construction() -> None:
    dev = SoftBoundsReferenceDevice(w_max_dtod=0.0, w_min_dtod=0.0, slope_up_dtod=0.2, slope_down_dtod=0.1,
                                    reference_mean=0.05, reference_std=0.01)
    p = _sample(dev)
    f_up = 0.6 / p["max_bound"]
    f_down = -0.6 / p["min_bound"]
    n = f_up.size
    # w_max / b_max = |1 + 0.2ξ| (negative branch has probability Φ(-5), negligible)
    assert abs(f_up.mean() - 1.0) < Z * 0.2 / math.sqrt(n) and abs(f_up.std() - 0.2) < Z * 0.2 / math.sqrt(2 * n)
    assert abs(f_down.std() - 0.1) < Z * 0.1 / math.sqrt(2 * n)
    assert abs(p["reference"].mean() - 0.05) < Z * 0.01 / math.sqrt(n)
    assert abs(p["reference"].std() - 0.01) < Z * 0.01 / math.sqrt(2 * n)

    sym = _sample(SoftBoundsReferenceDevice(subtract_symmetry_point=True, reset=0.02, up_down=0.2), shape=(32, 32))
    sp = sym["reference"]
    np.testing.assert_allclose(sym["reset_bias"], 0.02 + sp, rtol=1e-5, atol=1e-7)
    # at the symmetry point the soft-bounds up and down steps are equal
    up = sym["dwmin_up"] * (1 - sp / sym["max_bound"])
    down = sym["dwmin_down"] * (1 - sp / sym["min_bound"])
    np.testing.assert_allclose(up, down, rtol=1e-4)
    assert sp.mean() > 0  # up_down > 0 weakens down pulses: the fixed point moves up


def test_pow_step_gammas() -> None:
    p = _sample(PowStepDevice(pow_gamma=2.0, pow_gamma_dtod=0.1, pow_up_down=0.2, pow_up_down_dtod=0.05))
    n = p["gamma_up"].size
    # γ+ = (G + r)·2, γ- = (G - 0.2 - r)·2: the difference 2(0.2 + 2r) has std 4·0.05, the sum 2(2G - 0.2) 4·0.1
    diff = p["gamma_up"] - p["gamma_down"]
    tot = p["gamma_up"] + p["gamma_down"]
    assert abs(diff.mean() - 0.4) < Z * 0.2 / math.sqrt(n) and abs(diff.std() - 0.2) < Z * 0.2 / math.sqrt(2 * n)
    assert abs(tot.mean() - 3.6) < Z * 0.4 / math.sqrt(n) and abs(tot.std() - 0.4) < Z * 0.4 / math.sqrt(2 * n)


def test_pow_step_reference_symmetry_point() -> None:
    base = dict(dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0, pow_gamma=1.5,
                pow_gamma_dtod=0.0, up_down=0.5, subtract_symmetry_point=True, reset=0.01)
    # one step from sp = 0: sp = -s_down·(0.6/1.2)^1.5 + s_up·(0.6/1.2)^1.5 with s_up = 1e-3, s_down = 0.5e-3
    one = _sample(PowStepReferenceDevice(n_estimation_steps=1, **base), shape=(2, 2))
    expect = (-0.0005 + 0.001) * 0.5**1.5
    np.testing.assert_allclose(one["reference"], expect, rtol=1e-5)
    np.testing.assert_allclose(one["reset_bias"], 0.01 + expect, rtol=1e-5)
    # default: min(round(10·1.2/0.0005), 10000) = 10000 steps reach the fixed point
    full = _sample(PowStepReferenceDevice(**base), shape=(2, 2))
    sp = full["reference"]
    step = -0.0005 * ((sp + 0.6) / 1.2) ** 1.5 + 0.001 * ((0.6 - sp) / 1.2) ** 1.5
    assert np.all(np.abs(step) < 1e-3 * 0.0005), step
    # analytic fixed point of s_down·((sp+0.6)/1.2)^γ = s_up·((0.6-sp)/1.2)^γ
    k = (0.001 / 0.0005) ** (1 / 1.5)
    np.testing.assert_allclose(sp, 0.6 * (k - 1) / (k + 1), rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# (b) single-pulse rules against the spec formulas
# ---------------------------------------------------------------------------------------------

B_MAX, B_MIN, S_UP, S_DOWN = 0.5, -0.4, 0.002, 0.001
WEIGHTS = (0.1, -0.2)
XIS = (0.0, 1.5)


def _run(kind, scalars, params, w, down, xi):
    out = dv.apply_pulse(kind, scalars, jnp.asarray(w, jnp.float32),
                         tuple(jnp.asarray(p, jnp.float32) for p in params), jnp.asarray(down), jnp.asarray(xi, jnp.float32))
    return float(out)


def _check_rule(kind, scalars, params, expected_fn) -> None:
    for w in WEIGHTS:
        for down in (False, True):
            for xi in XIS:
                got = _run(kind, scalars, params, w, down, xi)
                want = expected_fn(w, down, xi)
                assert math.isclose(got, want, rel_tol=2e-6, abs_tol=1e-8), (kind, w, down, xi, got, want)


def _clip(v, lo=B_MIN, hi=B_MAX):
    return min(max(v, lo), hi)


def test_constant_step_rule() -> None:
    # literal values: w = 0.1, σ = 0.3, ξ = 1.5 → up 0.1 + 0.002·1.45, down 0.1 − 0.001·1.45
    assert math.isclose(_run(0, (0.3,), (B_MAX, B_MIN, S_UP, S_DOWN), 0.1, False, 1.5), 0.1029, rel_tol=1e-6)
    assert math.isclose(_run(0, (0.3,), (B_MAX, B_MIN, S_UP, S_DOWN), 0.1, True, 1.5), 0.09855, rel_tol=1e-6)
    _check_rule(0, (0.3,), (B_MAX, B_MIN, S_UP, S_DOWN),
                lambda w, d, xi: _clip(w - S_DOWN * (1 + 0.3 * xi) if d else w + S_UP * (1 + 0.3 * xi)))
    # clipped at the bounds
    assert _run(0, (0.3,), (B_MAX, B_MIN, S_UP, S_DOWN), B_MAX - 1e-4, False, 0.0) == np.float32(B_MAX)
    assert _run(0, (0.3,), (B_MAX, B_MIN, S_UP, S_DOWN), B_MIN + 1e-4, True, 0.0) == np.float32(B_MIN)


def test_linear_step_and_soft_bounds_rules() -> None:
    slope_up, slope_down = -S_UP / B_MAX * 0.7, -S_DOWN / B_MIN * 0.4
    params = (B_MAX, B_MIN, S_UP, S_DOWN, slope_up, slope_down)
    # multiplicative noise
    _check_rule(1, (0.3, 1.0, 0.0), params, lambda w, d, xi: _clip(
        w - (slope_down * w + S_DOWN) * (1 + 0.3 * xi) if d else w + (slope_up * w + S_UP) * (1 + 0.3 * xi)))
    # additive noise: the slope term is noiseless
    _check_rule(1, (0.3, 0.0, 0.0), params, lambda w, d, xi: _clip(
        w - slope_down * w - S_DOWN * (1 + 0.3 * xi) if d else w + slope_up * w + S_UP * (1 + 0.3 * xi)))
    # SoftBounds (slopes -s/b): literal values at w = 0.1, ξ = 0: up 0.1 + 0.002·(1 − 0.2), down 0.1 − 0.001·(1 + 0.25)
    sb = (B_MAX, B_MIN, S_UP, S_DOWN, -S_UP / B_MAX, -S_DOWN / B_MIN)
    assert math.isclose(_run(1, (0.3, 1.0, 0.0), sb, 0.1, False, 0.0), 0.1016, rel_tol=1e-6)
    assert math.isclose(_run(1, (0.3, 1.0, 0.0), sb, 0.1, True, 0.0), 0.09875, rel_tol=1e-6)


def test_exp_step_rule() -> None:
    dev = ExpStepDevice()
    kind, _, sc = dv.kernel_layout(dev)
    params = (B_MAX, B_MIN, S_UP, S_DOWN)
    a, b = dev.a, dev.b

    def simple(w, d, xi):
        z = 2 * a * w / (B_MAX - B_MIN) + b
        if d:
            delta = -max(1 - dev.A_down * math.exp(-dev.gamma_down * z), 0) * S_DOWN
        else:
            delta = max(1 - dev.A_up * math.exp(dev.gamma_up * z), 0) * S_UP
        return _clip(w + delta * (1 + 0.3 * xi))

    _check_rule(kind, sc, params, simple)

    cx = ExpStepDevice(dw_min_std_add=0.002, dw_min_std_slope=0.5)
    _, _, sc2 = dv.kernel_layout(cx)

    def complex_(w, d, xi):
        z = 2 * a * w / (B_MAX - B_MIN) + b
        if d:
            delta = -max(1 - cx.A_down * math.exp(-cx.gamma_down * z), 0) * S_DOWN
        else:
            delta = max(1 - cx.A_up * math.exp(cx.gamma_up * z), 0) * S_UP
        return _clip(w + delta + 0.3 * (abs(delta) + 0.002 + 0.5 * abs(w)) * xi)

    _check_rule(kind, sc2, params, complex_)
    # the up step vanishes near the top (A_up·e^{γ_up z} >= 1: z >= 0.5705 → w >= 0.672·R) and
    # the down step near the bottom (A_down·e^{−γ_down z} >= 1: w <= −0.657·R); R = 0.5 here
    assert _run(kind, sc, (0.45, -0.05, S_UP, S_DOWN), 0.4, False, 1.0) == np.float32(0.4)
    assert _run(kind, sc, (0.05, -0.45, S_UP, S_DOWN), -0.4, True, 1.0) == np.float32(-0.4)
    assert _run(kind, sc, (0.05, -0.45, S_UP, S_DOWN), -0.4, False, 0.0) > -0.4
    # skipped entirely (no clip either) when b_max - b_min <= 0
    assert _run(kind, sc, (0.1, 0.1, S_UP, S_DOWN), 0.3, False, 1.0) == np.float32(0.3)


def test_pow_step_rule() -> None:
    g_up, g_down = 1.7, 0.6
    params = (B_MAX, B_MIN, S_UP, S_DOWN, g_up, g_down)
    r = B_MAX - B_MIN
    _check_rule(3, (0.3, 0.0), params, lambda w, d, xi: _clip(
        w - S_DOWN * ((w - B_MIN) / r) ** g_down * (1 + 0.3 * xi) if d
        else w + S_UP * ((B_MAX - w) / r) ** g_up * (1 + 0.3 * xi)))
    # literal: γ = 1, w = 0.05 → up 0.05 + 0.002·(0.45/0.9), down 0.05 − 0.001·(0.45/0.9)
    lin = (B_MAX, B_MIN, S_UP, S_DOWN, 1.0, 1.0)
    assert math.isclose(_run(3, (0.3, 0.0), lin, 0.05, False, 0.0), 0.051, rel_tol=1e-6)
    assert math.isclose(_run(3, (0.3, 0.0), lin, 0.05, True, 0.0), 0.0495, rel_tol=1e-6)
    # skipped when b_max == b_min
    assert _run(3, (0.3, 0.0), (0.1, 0.1, S_UP, S_DOWN, 1.0, 1.0), 0.3, True, 0.0) == np.float32(0.3)


def test_pow_step_reference_rule() -> None:
    g_up, g_down, ref = 1.7, 0.6, 0.08
    params = (B_MAX, B_MIN, S_UP, S_DOWN, g_up, g_down, ref)
    r = B_MAX - B_MIN

    def rule(w, d, xi):
        c = w + ref
        if d:
            c = c - S_DOWN * ((c - B_MIN) / r) ** g_down * (1 + 0.3 * xi)
        else:
            c = c + S_UP * ((B_MAX - c) / r) ** g_up * (1 + 0.3 * xi)
        return _clip(c) - ref

    _check_rule(4, (0.3,), params, rule)
    # the clip acts on c = w + ref: the visible weight saturates at b_max - ref
    # (γ⁺ = 0: a constant up step of 0.05)
    got = _run(4, (0.3,), (B_MAX, B_MIN, 0.05, S_DOWN, 0.0, 1.0, ref), B_MAX - ref - 1e-3, False, 0.0)
    assert math.isclose(got, B_MAX - ref, rel_tol=1e-6)
    # C semantics: c above b_max with a non-integer exponent gives NaN, which the clip maps to b_min
    got = _run(4, (0.3,), (B_MAX, B_MIN, S_UP, S_DOWN, 1.5, 1.5, ref), B_MAX, False, 0.0)
    assert math.isclose(got, B_MIN - ref, rel_tol=1e-6)


def test_soft_bounds_reference_rule() -> None:
    ref = -0.05
    params = (B_MAX, B_MIN, S_UP, S_DOWN, ref)

    def rule(mult):
        def f(w, d, xi):
            c = w + ref
            if d:
                a = c / B_MIN
                c = c - (S_DOWN * (1 - a) * (1 + 0.3 * xi) if mult else S_DOWN * (1 - a + 0.3 * xi))
            else:
                a = c / B_MAX
                c = c + (S_UP * (1 - a) * (1 + 0.3 * xi) if mult else S_UP * (1 - a + 0.3 * xi))
            return _clip(c) - ref
        return f

    _check_rule(5, (0.3, 1.0, 0.0), params, rule(True))
    _check_rule(5, (0.3, 0.0, 0.0), params, rule(False))
    # literal: w = 0.1, ref = -0.05 → c = 0.05; up 0.05 + 0.002·0.9 − ref, ξ = 0
    assert math.isclose(_run(5, (0.3, 0.0, 0.0), params, 0.1, False, 0.0), 0.1018, rel_tol=1e-6)
    # no soft bound on a side whose bound does not straddle 0: a = 0
    got = _run(5, (0.0, 0.0, 0.0), (0.5, 0.1, S_UP, S_DOWN, 0.0), 0.3, True, 0.0)
    assert math.isclose(got, 0.3 - S_DOWN, rel_tol=1e-6)


def test_piecewise_step_rule() -> None:
    up, down = (1.0, 2.0, 4.0), (3.0, 1.0, 0.5)
    dev = PiecewiseStepDevice(piecewise_up=up, piecewise_down=down)
    kind, _, sc = dv.kernel_layout(dev)
    assert sc[2:] == (3.0, *up, *down)
    params = (B_MAX, B_MIN, S_UP, S_DOWN)

    def rule(w, d, xi):
        v = down if d else up
        m = len(v) - 1
        u = max((w - B_MIN) / (B_MAX - B_MIN) * m, 0.0)
        k = min(math.floor(u), m - 1)
        t = min(u - k, 1.0)
        s = S_DOWN if d else S_UP
        step = s * ((1 - t) * v[k] + t * v[k + 1])
        return _clip(w - step * (1 + 0.3 * xi) if d else w + step * (1 + 0.3 * xi))

    _check_rule(kind, sc, params, rule)
    # literal: w at 3/4 of the range (u = 1.5): up step 0.002·3, down 0.001·0.75
    w = B_MIN + 0.75 * (B_MAX - B_MIN)
    assert math.isclose(_run(kind, sc, params, w, False, 0.0), w + 0.006, rel_tol=1e-6)
    assert math.isclose(_run(kind, sc, params, w, True, 0.0), w - 0.00075, rel_tol=1e-6)
    # equal bounds or a single node: step = v[0]·s
    assert math.isclose(_run(kind, sc, (0.2, 0.2, S_UP, S_DOWN), 0.2, True, 0.0), 0.2, rel_tol=1e-6)
    _, _, sc1 = dv.kernel_layout(PiecewiseStepDevice(piecewise_up=[2.0], piecewise_down=[0.5]))
    assert math.isclose(_run(kind, sc1, params, 0.1, False, 0.0), 0.1 + 0.004, rel_tol=1e-6)
    assert math.isclose(_run(kind, sc1, params, 0.1, True, 0.0), 0.1 - 0.0005, rel_tol=1e-6)


def test_apply_pulse_vectorised_and_jit() -> None:
    dev = SoftBoundsDevice()
    p = dv.sample_device_parameters(dev, jax.random.key(0), 16, 8)
    kind, names, sc = dv.kernel_layout(dev)
    params = tuple(p[n] for n in names)
    w = jax.random.uniform(jax.random.key(1), (16, 8), minval=-0.3, maxval=0.3)
    down = jax.random.bernoulli(jax.random.key(2), 0.5, (16, 8))
    xi = jax.random.normal(jax.random.key(3), (16, 8))
    eager = dv.apply_pulse(kind, sc, w, params, down, xi)
    jitted = jax.jit(dv.apply_pulse, static_argnums=(0, 1))(kind, sc, w, params, down, xi)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-9)
    for i, j in [(0, 0), (5, 3), (15, 7)]:
        one = dv.apply_pulse(kind, sc, w[i, j], tuple(a[i, j] for a in params), down[i, j], xi[i, j])
        np.testing.assert_allclose(one, eager[i, j], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(16, 8\).*\(3,\)"):
        dv.apply_pulse(kind, sc, w, params, down, xi[:3, 0])
    with pytest.raises(ValueError, match="expected 6"):
        dv.apply_pulse(kind, sc, w, params[:4], down, xi)


def test_constant_step_summed_form() -> None:
    params = (B_MAX, B_MIN, S_UP, S_DOWN)
    sigma = 0.3
    w, n, xi = 0.1, 7, 1.2
    got, ok = dv.apply_summed_pulses(0, (sigma,), jnp.float32(w), params, jnp.asarray(True), jnp.asarray(n), xi)
    assert bool(ok)
    assert math.isclose(float(got), w - (n * S_DOWN + S_DOWN * sigma * math.sqrt(n) * xi), rel_tol=1e-6)
    got, ok = dv.apply_summed_pulses(0, (sigma,), jnp.float32(w), params, jnp.asarray(False), jnp.asarray(n), xi)
    assert bool(ok) and math.isclose(float(got), w + n * S_UP + S_UP * sigma * math.sqrt(n) * xi, rel_tol=1e-6)
    # guard: the reach n·|s|·(1 + XI_MAX·σ) must stay inside both bounds
    reach = n * S_UP * (1 + dv.XI_MAX * sigma)
    _, ok_in = dv.apply_summed_pulses(0, (sigma,), jnp.float32(B_MAX - reach * 1.01), params, False, jnp.asarray(n), 0.0)
    _, ok_out = dv.apply_summed_pulses(0, (sigma,), jnp.float32(B_MAX - reach * 0.99), params, False, jnp.asarray(n), 0.0)
    assert bool(ok_in) and not bool(ok_out)
    assert dv.summable(0) and not any(dv.summable(k) for k in range(1, 7))
    with pytest.raises(ValueError):
        dv.apply_summed_pulses(1, (0.3, 1.0, 0.0), 0.0, params + (0.0, 0.0), True, 1, 0.0)

    # in distribution: n sequential pulses (no clipping) have mean n·s and variance n·(sσ)²
    m = 40000
    keys = jax.random.split(jax.random.key(4), n)
    ws = jnp.zeros((m,))
    for t in range(n):
        ws = dv.apply_pulse(0, (sigma,), ws, params, jnp.zeros((m,), bool), jax.random.normal(keys[t], (m,)))
    ws = np.asarray(ws, np.float64)
    mean, sd = n * S_UP, S_UP * sigma * math.sqrt(n)
    assert abs(ws.mean() - mean) < Z * sd / math.sqrt(m)
    assert abs(ws.std() - sd) < Z * sd / math.sqrt(2 * m)
    summed, _ = dv.apply_summed_pulses(0, (sigma,), jnp.zeros((m,)), params, jnp.zeros((m,), bool),
                                       jnp.full((m,), n), jax.random.normal(jax.random.key(5), (m,)))
    summed = np.asarray(summed, np.float64)
    assert abs(summed.mean() - mean) < Z * sd / math.sqrt(m)
    assert abs(summed.std() - sd) < Z * sd / math.sqrt(2 * m)


# ---------------------------------------------------------------------------------------------
# kernel layout (ffi/README.md §3)
# ---------------------------------------------------------------------------------------------


def test_kernel_layout_table() -> None:
    base4 = ("max_bound", "min_bound", "dwmin_up", "dwmin_down")
    assert dv.kernel_layout(ConstantStepDevice(dw_min_std=0.2)) == (0, base4, (0.2,))
    assert dv.kernel_layout(LinearStepDevice(mult_noise=False, write_noise_std=2.0, dw_min=0.01)) == (
        1, base4 + ("slope_up", "slope_down"), (0.3, 0.0, 0.02))
    assert dv.kernel_layout(SoftBoundsDevice())[:2] == (1, base4 + ("slope_up", "slope_down"))
    assert dv.kernel_layout(SoftBoundsDevice())[2] == (0.3, 1.0, 0.0)
    assert dv.kernel_layout(SoftBoundsPmaxDevice())[0] == 1
    e = ExpStepDevice(write_noise_std=1.0)
    assert dv.kernel_layout(e) == (2, base4, (0.3, e.A_up, e.A_down, e.gamma_up, e.gamma_down, e.a, e.b,
                                              0.0, 0.0, 0.001))
    assert dv.kernel_layout(PowStepDevice()) == (3, base4 + ("gamma_up", "gamma_down"), (0.3, 0.0))
    assert dv.kernel_layout(PowStepReferenceDevice()) == (4, base4 + ("gamma_up", "gamma_down", "reference"), (0.3,))
    assert dv.kernel_layout(SoftBoundsReferenceDevice()) == (5, base4 + ("reference",), (0.3, 0.0, 0.0))
    assert dv.kernel_layout(PiecewiseStepDevice(piecewise_up=[1, 2], piecewise_down=[3, 4])) == (
        6, base4, (0.3, 0.0, 2.0, 1.0, 2.0, 3.0, 4.0))
    sb = SoftBoundsReferenceDevice()
    p = dv.sample_device_parameters(sb, jax.random.key(0), 3, 2)
    packed = dv.pack_params(sb, p)
    assert packed.shape == (5, 3, 2)
    np.testing.assert_array_equal(packed[4], p["reference"])
    np.testing.assert_array_equal(packed[1], p["min_bound"])
    with pytest.raises(ValueError, match="reference"):
        dv.pack_params(sb, {k: v for k, v in p.items() if k != "reference"})
    for dev in (IdealDevice(), FloatingPointDevice(), PulsedDevice()):
        with pytest.raises(TypeError):
            dv.kernel_layout(dev)
    assert dv.uses_persistent_weights(SoftBoundsDevice(write_noise_std=0.5))
    assert not dv.uses_persistent_weights(SoftBoundsDevice())
    assert not dv.uses_persistent_weights(IdealDevice())


# ---------------------------------------------------------------------------------------------
# (d) weight granularity (spec §4.3)
# ---------------------------------------------------------------------------------------------


def test_weight_granularity() -> None:
    assert dv.weight_granularity(ConstantStepDevice(dw_min=0.002)) == 0.002
    assert dv.weight_granularity(LinearStepDevice(dw_min=0.003)) == 0.003
    assert dv.weight_granularity(SoftBoundsDevice()) == 0.001
    assert dv.weight_granularity(SoftBoundsReferenceDevice()) == 0.001
    assert math.isclose(dv.weight_granularity(PowStepDevice(pow_gamma=2.0)), 0.00025)
    assert math.isclose(dv.weight_granularity(PowStepReferenceDevice(pow_gamma=0.5)), 0.001 * 0.5**0.5)
    # ExpStep: down step at w = 0 (z = b = 0.2425): 0.001·(1 − 0.36833·e^{−12.78785·0.2425})
    assert math.isclose(dv.weight_granularity(ExpStepDevice()), 0.001 * (1 - 0.36833 * math.exp(-3.1010536)),
                        rel_tol=1e-6)
    assert math.isclose(dv.weight_granularity(ExpStepDevice(up_down=0.5)),
                        0.0005 * (1 - 0.36833 * math.exp(-3.1010536)), rel_tol=1e-6)
    # up_down < 0 only changes the up step, which the granularity ignores
    assert math.isclose(dv.weight_granularity(ExpStepDevice(up_down=-0.5)), dv.weight_granularity(ExpStepDevice()))
    # a vanishing down step falls back to dw_min
    assert dv.weight_granularity(ExpStepDevice(A_down=10.0, b=0.0)) == 0.001
    assert dv.weight_granularity(PiecewiseStepDevice(piecewise_up=[1, 2, 3, 4], piecewise_down=[1, 1, 1, 1])) == 0.003
    assert dv.weight_granularity(PiecewiseStepDevice(piecewise_up=[5, 2, 3], piecewise_down=[1, 1, 1])) == 0.002
    assert dv.weight_granularity(PiecewiseStepDevice(piecewise_up=[0.5], piecewise_down=[1])) == 0.0005
    with pytest.raises(TypeError):
        dv.weight_granularity(IdealDevice())


# ---------------------------------------------------------------------------------------------
# (c) config validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (ConstantStepDevice, {"w_min": 0.1}, "w_min"),
        (ConstantStepDevice, {"w_max": -0.1}, "w_max"),
        (ConstantStepDevice, {"dw_min_std": -0.1}, "dw_min_std"),
        (ConstantStepDevice, {"dw_min_dtod": -0.1}, "dw_min_dtod"),
        (ConstantStepDevice, {"w_max_dtod": -1.0}, "w_max_dtod"),
        (ConstantStepDevice, {"up_down_dtod": -1.0}, "up_down_dtod"),
        (ConstantStepDevice, {"reset_std": -0.01}, "reset_std"),
        (ConstantStepDevice, {"diffusion": -0.01}, "diffusion"),
        (ConstantStepDevice, {"lifetime": -1.0}, "lifetime"),
        (ConstantStepDevice, {"dw_min": 0.0}, "dw_min"),
        (ConstantStepDevice, {"dw_min": float("nan")}, "dw_min"),
        (ConstantStepDevice, {"corrupt_devices_prob": 1.5}, "corrupt_devices_prob"),
        (ConstantStepDevice, {"construction_seed": -1}, "construction_seed"),
        (ConstantStepDevice, {"construction_seed": 1.5}, "construction_seed"),
        (ConstantStepDevice, {"enforce_consistency": 1}, "enforce_consistency"),
        (ConstantStepDevice, {"write_noise_std": 0.1}, "write_noise_std"),
        (PowStepReferenceDevice, {"write_noise_std": 0.1}, "write_noise_std"),
        (ConstantStepDevice, {"drift": SimpleDriftParameter()}, "drift"),
        (LinearStepDevice, {"gamma_up_dtod": -0.1}, "gamma_up_dtod"),
        (LinearStepDevice, {"reverse_up": True, "mult_noise": False}, "mult_noise"),
        (SoftBoundsDevice, {"reverse_down": True, "mult_noise": False}, "mult_noise"),
        (SoftBoundsReferenceDevice, {"reference_std": -1.0}, "reference_std"),
        (SoftBoundsReferenceDevice, {"slope_up_dtod": -1.0}, "slope_up_dtod"),
        (PowStepDevice, {"pow_gamma_dtod": -0.1}, "pow_gamma_dtod"),
        (PowStepReferenceDevice, {"n_estimation_steps": 2.5}, "n_estimation_steps"),
        (PiecewiseStepDevice, {"piecewise_up": [], "piecewise_down": []}, "piecewise_up"),
        (PiecewiseStepDevice, {"piecewise_up": [1, 2], "piecewise_down": [1]}, "piecewise_down"),
        (PiecewiseStepDevice, {"piecewise_up": [1, float("inf")], "piecewise_down": [1, 1]}, "piecewise_up"),
        (PiecewiseStepDevice, {"piecewise_up": 1.0}, "piecewise_up"),
        (SoftBoundsPmaxDevice, {"range_min": 1.0, "range_max": 0.5}, "range_max"),
        (SoftBoundsPmaxDevice, {"range_min": 0.2}, "w_min"),
        (SoftBoundsPmaxDevice, {"alpha": 0.0}, "alpha"),
        (SoftBoundsPmaxDevice, {"p_max": 0}, "p_max"),
        (IdealDevice, {"reset_std": -1.0}, "reset_std"),
        (FloatingPointDevice, {"drift": DriftParameter(nu=-1.0, t_0=0.5)}, None),
        (DriftParameter, {"t_0": 0.0}, "t_0"),
        (DriftParameter, {"nu_dtod": -0.1}, "nu_dtod"),
        (DriftParameter, {"wg_ratio": 0.0}, "wg_ratio"),
        (SimpleDriftParameter, {"reset_tol": -1.0}, "reset_tol"),
    ],
)
def test_validation_errors(cls, kwargs, field) -> None:
    if field is None:
        cls(**kwargs)  # a DriftParameter is a SimpleDriftParameter: accepted on FP devices
        return
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}"):
        cls(**kwargs)


def test_configs_frozen_hashable_and_list_conversion() -> None:
    pw = PiecewiseStepDevice(piecewise_up=[1, 2, 3], piecewise_down=[3, 2, 1])
    assert pw.piecewise_up == (1.0, 2.0, 3.0) and isinstance(pw.piecewise_down, tuple)
    assert hash(pw) == hash(PiecewiseStepDevice(piecewise_up=(1.0, 2.0, 3.0), piecewise_down=(3, 2, 1)))
    devices = [ConstantStepDevice(), LinearStepDevice(), SoftBoundsDevice(), SoftBoundsPmaxDevice(),
               SoftBoundsReferenceDevice(), ExpStepDevice(), PowStepDevice(), PowStepReferenceDevice(), pw,
               IdealDevice(), FloatingPointDevice()]
    assert len({hash(d) for d in devices}) == len(devices)
    with pytest.raises(Exception):
        ConstantStepDevice().dw_min = 0.1  # type: ignore[misc]
    # aihwkit's Python defaults (spec §4.1): the ones that differ from the C++ defaults
    d = ConstantStepDevice()
    assert d.enforce_consistency is True and d.reset_std == 0.01 and d.corrupt_devices_range == 0.1
    assert SoftBoundsReferenceDevice().mult_noise is False and SoftBoundsDevice().mult_noise is True
    assert IdealDevice().reset_std == 0.01 and SoftBoundsPmaxDevice().alpha == 0.0005
