"""Inference tiles against aihwkit 1.2.0 reference case g (PCM-like noise, global drift compensation).

Case g (``tests/data/reference``): ``AnalogLinear(128, 128, bias=False)`` with the default
``InferenceRPUConfig`` (``PCMLikeNoiseModel()``, ``GlobalDriftCompensation()``, default forward IO),
weights ``g_W``, inputs ``g_X``; for each of 50 seeds aihwkit programs the weights once and drifts
them (non-cumulatively) to 1 s, 1 min, 1 h, 1 day and 1 year. We do the same over ``N_SEEDS``
seeds in one vmapped program and compare per-time statistics.

Tolerances. aihwkit's C++ noise cannot be seeded, so both sides are samples: for a per-seed
statistic with reference mean ``m_r``, std ``s_r`` over ``n_r = 50`` seeds and our mean ``m``, std
``s`` over ``n`` seeds, we require ``|m - m_r| <= 5 * sqrt(s_r²/n_r + s²/n)`` (5 standard errors of
the difference of two independent means).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import f as f_dist

from rpujax import inference, tile
from rpujax.configs.inference import InferenceRPUConfig

DATA = Path(__file__).resolve().parent / "data" / "reference"
N_SEEDS = 64
Z = 5.0


@pytest.fixture(scope="module")
def case_g():
    ref = json.loads((DATA / "aihwkit-1.2.0-cpu.json").read_text())["cases"]["g"]
    inputs = np.load(DATA / "aihwkit-1.2.0-cpu-inputs.npz")
    return ref, jnp.asarray(inputs["g_W"]), jnp.asarray(inputs["g_X"])


def _ratio_mean(wd: jax.Array, w: jax.Array) -> jax.Array:
    # The reference's ``ratio_mean`` is not defined in its description; the mean of the element-wise
    # ratio Wd/W over weights with |W| > 0.1 reproduces it at every time (the other candidates we
    # tried — mean|Wd|/mean|W|, the median ratio — miss by 1-2 %).
    mask = jnp.abs(w) > 0.1
    return jnp.sum(jnp.where(mask, wd / jnp.where(mask, w, 1.0), 0.0)) / jnp.sum(mask)


@pytest.fixture(scope="module")
def simulated(case_g):
    ref, w, x = case_g
    times = tuple(float(t) for t in ref["times"])
    state = tile.set_weights(tile.init(jax.random.key(0), 128, 128, InferenceRPUConfig()), w)
    y0 = x @ w.T

    def one_seed(key):
        k_prog, k_times = jax.random.split(key)
        programmed = inference.program_weights(state, k_prog)
        per_time = []
        for i, t in enumerate(times):
            k_drift, k_y = jax.random.split(jax.random.fold_in(k_times, i))
            drifted = inference.drift_weights(programmed, t, k_drift)
            wd = drifted.weights
            slope = jnp.sum(wd * w) / jnp.sum(w * w)
            alpha = drifted.aux["alpha"]
            y = inference.forward(drifted, x, k_y, is_test=True)
            per_time.append(
                {
                    "slope": slope,
                    "err_std": jnp.std(wd - w),
                    "ratio_mean": _ratio_mean(wd, w),
                    "alpha": alpha,
                    "alpha_slope": alpha * slope,
                    "y_slope": jnp.sum(y * y0) / jnp.sum(y0 * y0),
                    "y_relerr": jnp.linalg.norm(y - y0) / jnp.linalg.norm(y0),
                }
            )
        return programmed.weights - w, per_time

    prog_err, per_time = jax.jit(jax.vmap(one_seed))(jax.random.split(jax.random.key(2024), N_SEEDS))
    return times, np.asarray(prog_err).ravel(), jax.tree.map(np.asarray, per_time)


def test_programming_error_distribution(case_g, simulated):
    """Programming error W_prog − W over all elements and seeds: mean, std and CDF at the
    reference quantiles.

    mean: SE = sqrt(s_r²/n_r + s²/n). std: SE of a sample std ≈ s·sqrt((κ−1)/(4n)) with κ the
    kurtosis (measured on our sample), on both sides. CDF: our fraction below the reference
    q-quantile must be q within 5·sqrt(q(1−q)(1/n_r + 1/n)) (binomial SE of both empirical CDFs).
    """
    ref = case_g[0]["programming_error"]["err"]
    _, err, _ = simulated
    n_r, n = ref["n"], err.size
    s = err.std()
    kurt = np.mean((err - err.mean()) ** 4) / s**4
    se_mean = np.sqrt(ref["std"] ** 2 / n_r + s**2 / n)
    assert abs(err.mean() - ref["mean"]) <= Z * se_mean
    se_std = np.sqrt((kurt - 1) / 4) * np.sqrt(ref["std"] ** 2 / n_r + s**2 / n)
    assert abs(s - ref["std"]) <= Z * se_std, (s, ref["std"], se_std)
    for q_str, x_q in ref["quantiles"].items():
        q = float(q_str)
        frac = np.mean(err <= x_q)
        se = np.sqrt(q * (1 - q) * (1 / n_r + 1 / n))
        assert abs(frac - q) <= Z * se, (q, x_q, frac, se)


@pytest.mark.parametrize(
    "metric", ["slope", "err_std", "ratio_mean", "alpha", "alpha_slope", "y_slope", "y_relerr"]
)
def test_drift_statistics_per_time(case_g, simulated, metric):
    """Per time: drifted-weight slope, error std, element-wise ratio, compensation factor alpha,
    compensated output slope and relative output error; means within 5 SE of the reference."""
    ref = case_g[0]["per_time"]
    times, _, per_time = simulated
    for i, t in enumerate(times):
        r = ref[str(t)][metric]
        vals = per_time[i][metric]
        se = np.sqrt(r["std"] ** 2 / case_g[0]["seeds"] + vals.std(ddof=1) ** 2 / vals.size)
        assert abs(vals.mean() - r["mean"]) <= Z * se, (t, metric, vals.mean(), r["mean"], se)
        # The spread over seeds must match too: the ratio of the sample variances of two normal
        # samples (n and n_r values) is F(n-1, n_r-1)-distributed; accept its central 1 - 1e-6.
        # (The reference ``std`` is the ddof=1 std of its 50 ``values``.)
        n_r = case_g[0]["seeds"]
        ratio = vals.var(ddof=1) / r["std"] ** 2
        lo, hi = f_dist.ppf([5e-7, 1 - 5e-7], vals.size - 1, n_r - 1)
        assert lo < ratio < hi, (t, metric, ratio, lo, hi)
