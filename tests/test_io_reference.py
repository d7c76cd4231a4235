"""Statistical comparison of the analog forward/backward MVM with aihwkit 1.2.0 (reference case f).

Case f ran a 64×128 tile (``tile.forward`` / ``tile.backward`` of the C++ CPU tile) R_ref = 3000
times per variant and recorded, per element (sample b, output i), the mean and the std of
``err = y_analog − y_ideal`` (``y_ideal`` in float64), summarised per output, over all elements,
and in full for samples 0..3. We run the same inputs and configs R times with independent keys
(R = 3000 jitted; R = 250 un-jitted under ``jax.disable_jit``, on three representative variants,
because op-by-op execution is slow) and compare every recorded statistic.

Tolerances: |ours − ref| ≤ Z·sqrt(SE_ours² + SE_ref² + SE_table²) + floor, Z = 5, where

* one element (samples 0..3): SE of a mean = σ/sqrt(R), SE of a std = σ·sqrt((κ − 1)/(4R))
  (κ = 3, a Gaussian, gives σ/sqrt(2R); bound-management elements mix noise levels and have κ > 3),
  with σ the average of both sides' estimates and κ ours, each at its side's R;
* aggregated statistics (per-output averages, summaries over all elements, rel_rmse): SE by batch
  means. Our repeats are split into groups of g repeats; the statistic's spread over groups, SD_g,
  gives SE = SD_g·sqrt(g/R) for our side and SD_g·sqrt(g/R_ref) for the reference. This accounts
  for the correlation between the outputs of one sample (they share its noise-management scale
  and bound-management retries), which a per-element formula would miss;
* SE_table: aihwkit's CPU Gaussians come from a fixed table of N_table = 32768 normals
  (tests/data/reference/README.md). We do not copy that quirk, so the reference carries a bias
  common to all its draws: the table mean ~ N(0, 1/N_table) offsets every mean error by
  ~σ/sqrt(N_table), and the table std ~ 1 + N(0, 1/(2 N_table)) scales every std by a common
  factor (relative SE 1/sqrt(2 N_table)). Per-output mean errors are compared with their common
  offset removed; the offset itself is tested through mean_err.mean with the table term;
* floor: 8·eps32·|y|, the float32 resolution at which both simulators produce outputs;
* is_perfect (no noise): float32 dot-product rounding bound γ_n·Σ_j|W_ij x_j|, γ_n = n·u/(1 − n·u),
  u = 2⁻²⁴, for each side;
* out_noise = 0 (deterministic): exact up to the floor; a one-step ADC difference is allowed only
  where the noise-free analog value lies within that rounding bound of an ADC rounding boundary.

Spreads over elements (the ``std`` entries of the summaries) are compared as variances corrected
for the per-element estimation noise at each side's R: E[s²] = Var_true + mean_k τ_k², with
τ_k² = σ_k²/R for means and σ_k²(κ_k − 1)/(4R) for stds.
The reference's summary stds are sample stds with ddof = 1 (torch's default; visible in the
deterministic variant), and so are ours.

The raw repeats the reference lists for element (0, 0) must lie on our ADC lattice
``k·out_res_eff·ν`` (a direct check of the ADC step and the noise-management scale).
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

from rpujax.configs import SingleRPUConfig
from rpujax.configs.io import IOParameters
from rpujax.tile.mvm import backward, forward
from rpujax.tile.state import TileState

REF_DIR = Path(__file__).parent / "data" / "reference"
Z = 5.0
N_TABLE = 32768
EPS32 = float(np.finfo(np.float32).eps)
U32 = EPS32 / 2
R_JIT = 3000  # as many repeats as the reference
R_EAGER = 250  # un-jitted (jax.disable_jit) runs op by op; fewer repeats, tolerances follow R
CHUNK = 250
N_GROUPS_MIN = 10  # at least this many groups of repeats for batch-means standard errors
R_REF = 3000

VARIANT_INPUTS = {
    "single_default_forward": ("f_W", "f_X"),
    "inference_default_forward": ("f_W", "f_X"),
    "single_nm_none_forward": ("f_W", "f_X"),
    "single_nm_none_forward_x_scaled": ("f_W", "f_X_scaled_globalmax"),
    "single_nm_absmax_forward_x_scaled": ("f_W", "f_X_scaled_globalmax"),
    "single_default_forward_saturating": ("f_Wpos", "f_Xabs"),
    "single_bm_none_forward_saturating": ("f_Wpos", "f_Xabs"),
    "single_no_out_noise_forward": ("f_W", "f_X"),
    "single_is_perfect_forward": ("f_W", "f_X"),
    "single_default_backward": ("f_W", "f_D"),
}
EAGER_VARIANTS = ["single_default_forward", "single_default_forward_saturating", "single_default_backward"]


@functools.lru_cache(maxsize=None)
def _reference() -> tuple[dict, dict[str, np.ndarray]]:
    case = json.loads((REF_DIR / "aihwkit-1.2.0-cpu.json").read_text())["cases"]["f"]
    with np.load(REF_DIR / "aihwkit-1.2.0-cpu-inputs.npz") as z:
        arrays = {k: z[k] for k in z.files if k.startswith("f_")}
    return case, arrays


def _io_from_non_default(non_default: dict, prefix: str) -> IOParameters:
    kwargs = {}
    for dotted, value in non_default.items():
        if not dotted.startswith(prefix + "."):
            continue
        if isinstance(value, str) and "." in value:  # "NoiseManagementType.NONE" -> "NONE"
            value = value.rsplit(".", 1)[1]
        kwargs[dotted.split(".", 1)[1]] = value
    return IOParameters(**kwargs)


def _config(variant: dict) -> SingleRPUConfig:
    # Only the IO parameters matter for forward/backward; the reference fixed the device bounds so
    # that set_weights stores the inputs unchanged (checked below), and InferenceRPUConfig has the
    # same forward IOParameters defaults as SingleRPUConfig.
    nd = variant["config"]["non_default"]
    return SingleRPUConfig(forward=_io_from_non_default(nd, "forward"), backward=_io_from_non_default(nd, "backward"))


def _setup(name: str):
    case, arrays = _reference()
    variant = case["variants"][name]
    w_key, x_key = VARIANT_INPUTS[name]
    w, x = arrays[w_key], arrays[x_key]
    is_backward = bool(variant["backward"])
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    ideal = x64 @ w64 if is_backward else x64 @ w64.T
    return variant, w, x, is_backward, ideal


def _group_size(r: int) -> int:
    return min(50, r // N_GROUPS_MIN)


@functools.partial(jax.jit, static_argnums=2)
def _group_moments(y: jax.Array, ideal32: jax.Array, g_size: int):
    """Per group of g_size repeats: mean, and central 2nd and 4th moment sums of err = y − ideal.

    Float32, two-pass within each group (no cancellation); groups are combined in float64 below.
    """
    e = (y - ideal32).reshape((-1, g_size) + y.shape[1:])
    m = e.mean(axis=1)
    c = e - m[:, None]
    c2 = c * c
    return m, c2.sum(axis=1), (c2 * c2).sum(axis=1)


class Stats:
    """Per-element statistics of our error over R repeats, overall and per group of repeats.

    The groups give standard errors of aggregated statistics by the batch-means method: elements of
    one sample share that sample's noise-management and bound-management decisions, so they are not
    independent, and the spread of a statistic over groups of repeats captures that.
    """

    def __init__(self, chunks, r: int):
        g = _group_size(r)
        self.g_size = g
        g_mean, g_m2, g_m4 = [], [], []
        for m, m2, m4 in chunks:
            g_mean.append(np.asarray(m, np.float64))
            g_m2.append(np.asarray(m2, np.float64))
            g_m4.append(np.asarray(m4, np.float64))
        g_mean = np.concatenate(g_mean)
        g_m2 = np.concatenate(g_m2)
        g_m4 = np.concatenate(g_m4)
        self.r = r
        self.mean = g_mean.mean(axis=0)
        # Exact combination of the groups' centred sums of squares (equal group sizes).
        m2 = g_m2.sum(axis=0) + g * np.sum((g_mean - self.mean) ** 2, axis=0)
        self.std = np.sqrt(m2 / (r - 1))
        # Kurtosis about the group means (only scales the SE of a std; a slight bias is harmless).
        var_g = g_m2.sum(axis=0) / r
        kurt = np.divide(g_m4.sum(axis=0) / r, var_g**2, out=np.full_like(var_g, 3.0), where=var_g > 1e-20)
        self.kurt = np.clip(kurt, 1.0, None)
        self.g_mean = g_mean
        self.g_std = np.sqrt(g_m2 / (g - 1))

    def value_and_se(self, fn, r_other: int):
        """fn(mean, std, n_repeats) on all repeats, and its SE at R (ours) and at r_other repeats."""
        value = np.asarray(fn(self.mean, self.std, self.r), float)
        g = self.g_size
        groups = np.stack([np.asarray(fn(m, s, g), float) for m, s in zip(self.g_mean, self.g_std)])
        sd = groups.std(axis=0, ddof=1)
        return value, sd * math.sqrt(g / self.r), sd * math.sqrt(g / r_other)


def _run(state: TileState, inp: np.ndarray, is_backward: bool, r: int, jit: bool, key, ideal) -> Stats:
    """R repeats with independent keys; the MVM runs jitted or op by op under ``jax.disable_jit``."""
    x = jnp.asarray(inp)
    ideal32 = jnp.asarray(ideal, jnp.float32)

    def one(k):
        return backward(state, x, k) if is_backward else forward(state, x, k)

    fn = jax.vmap(one)
    if jit:
        fn = jax.jit(fn)

    def call(keys):
        if jit:
            return fn(keys)
        with jax.disable_jit():
            return fn(keys)

    def chunks():
        for c in range(r // CHUNK):
            keys = jax.random.split(jax.random.fold_in(key, c), CHUNK)
            yield _group_moments(call(keys), ideal32, _group_size(r))

    return Stats(chunks(), r)


def _assert_close(name: str, ours, ref, tol) -> None:
    ours, ref, tol = np.broadcast_arrays(np.asarray(ours, float), np.asarray(ref, float), np.asarray(tol, float))
    bad = np.abs(ours - ref) > tol
    if np.any(bad):
        idx = np.argwhere(bad)[:5].tolist() if bad.ndim else []
        worst = np.max(np.abs(ours - ref) / np.maximum(tol, 1e-300))
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} outside tolerance (worst |diff|/tol = {worst:.2f}); "
            f"first at {idx}: ours={ours[bad][:5]}, ref={ref[bad][:5]}, tol={tol[bad][:5]}"
        )


def _check_variant(name: str, stats: Stats, variant, w, x, ideal, io: IOParameters, is_backward) -> None:
    r_ref = R_REF
    assert variant["n_weights_clipped_on_set"] == 0
    nm = np.abs(x).max(axis=1, keepdims=True)  # the case's nm_scale: max|x_b| (max|d_b| backward)
    floor = 8 * EPS32 * (np.abs(ideal) + np.abs(stats.mean))
    rms_ideal = math.sqrt(np.mean(ideal**2))

    # Inputs: the reference's ideal outputs of samples 0..3 are ours (float32-stored float64 values).
    _assert_close("samples0to3_ideal", ideal[:4], variant["samples0to3_ideal"], floor[:4])

    if io.perfect:
        # Rounding only: both sides are float32 dot products of length k.
        k = w.shape[0] if is_backward else w.shape[1]
        gamma = k * U32 / (1 - k * U32)
        wt = w.astype(np.float64) if is_backward else w.T.astype(np.float64)
        # plus half an ulp: our err is formed in float32 against the float32-rounded ideal output
        bound = gamma * (np.abs(x.astype(np.float64)) @ np.abs(wt)) + EPS32 * np.abs(ideal)
        _assert_close("perfect |err| (ours) within the float32 dot bound", np.abs(stats.mean), 0.0, bound)
        _assert_close("samples0to3_mean_err", stats.mean[:4], variant["samples0to3_mean_err"], 2 * bound[:4])
        _assert_close("samples0to3_std_err", stats.std[:4], variant["samples0to3_std_err"], floor[:4])
        _assert_close("per_output_mean_err", stats.mean.mean(0), variant["per_output_mean_err"], 2 * bound.mean(0))
        _assert_close("per_output_std_err", stats.std.mean(0), variant["per_output_std_err"], floor.mean(0))
        rel = math.sqrt(np.mean(stats.mean**2)) / rms_ideal
        _assert_close("rel_rmse", rel, variant["rel_rmse"], 2 * math.sqrt(np.mean(bound**2)) / rms_ideal)
        return

    if io.out_noise == 0 and io.inp_noise == 0 and io.w_noise == 0:
        # Deterministic: exact up to float rounding; a one-step ADC difference is allowed only where
        # the noise-free analog value sits within the float32 dot-product bound of an ADC boundary.
        k = w.shape[0] if is_backward else w.shape[1]
        gamma = k * U32 / (1 - k * U32)
        nm_on = io.noise_management.name != "NONE"
        xq = x / nm if nm_on else x
        xq = np.clip(np.round(xq / io.inp_res_eff) * io.inp_res_eff, -io.inp_bound, io.inp_bound)
        wt = w.astype(np.float64) if is_backward else w.T.astype(np.float64)
        analog = xq.astype(np.float64) @ wt
        frac = analog / io.out_res_eff - np.floor(analog / io.out_res_eff)
        near = np.abs(frac - 0.5) <= gamma * (np.abs(xq) @ np.abs(wt)) / io.out_res_eff
        allow = floor + near * io.out_res_eff * (nm if nm_on else 1.0)
        _assert_close("samples0to3_mean_err", stats.mean[:4], variant["samples0to3_mean_err"], allow[:4])
        _assert_close("samples0to3_std_err", stats.std[:4], variant["samples0to3_std_err"], floor[:4])
        _assert_close("per_output_mean_err", stats.mean.mean(0), variant["per_output_mean_err"], allow.mean(0))
        _assert_close("per_output_std_err", stats.std.mean(0), variant["per_output_std_err"], floor.mean(0))
        for key, scale in (("mean_err", 1.0), ("mean_err_over_nm_scale", nm)):
            _assert_close(f"{key}.mean", np.mean(stats.mean / scale), variant[key]["mean"], np.mean(allow / scale))
            _assert_close(f"{key}.std", np.std(stats.mean / scale, ddof=1), variant[key]["std"], np.mean(allow / scale))
        rmse = math.sqrt(np.mean(stats.mean**2))
        _assert_close("rel_rmse", rmse / rms_ideal, variant["rel_rmse"], math.sqrt(np.mean(allow**2)) / rms_ideal)
        return

    # ---- noisy variants ------------------------------------------------------------------------
    r = stats.r
    table_m = stats.std / math.sqrt(N_TABLE)  # common offset of all mean errors (table mean)
    table_rel_s = 1 / math.sqrt(2 * N_TABLE)  # common relative factor of all stds (table std)

    def check(label, fn, ref, table=0.0, fl=0.0):
        ours, se_o, se_r = stats.value_and_se(fn, r_ref)
        _assert_close(label, ours, ref, Z * np.sqrt(se_o**2 + se_r**2 + np.square(table)) + fl)

    # Per-element arrays of samples 0..3 (independent repeats: analytic SEs, with σ the average of
    # both sides' estimates so that a low estimate on one side does not shrink the tolerance).
    sigma = 0.5 * (stats.std[:4] + np.asarray(variant["samples0to3_std_err"]))
    kurt4 = stats.kurt[:4]
    se_m = sigma * math.sqrt(1 / r + 1 / r_ref)
    se_s = sigma * np.sqrt((kurt4 - 1) / 4 * (1 / r + 1 / r_ref))
    _assert_close("samples0to3_mean_err", stats.mean[:4], variant["samples0to3_mean_err"],
                  Z * np.sqrt(se_m**2 + (sigma / math.sqrt(N_TABLE)) ** 2) + floor[:4])
    _assert_close("samples0to3_std_err", stats.std[:4], variant["samples0to3_std_err"],
                  Z * np.sqrt(se_s**2 + (table_rel_s * sigma) ** 2) + floor[:4])

    # Per-output averages over the batch; the mean errors with their common offset removed (the
    # offset is checked by mean_err.mean below, with the table term).
    ref_pom = np.asarray(variant["per_output_mean_err"])
    check("per_output_mean_err (common offset removed)", lambda m, s, n: m.mean(0) - m.mean(),
          ref_pom - ref_pom.mean(), fl=floor.mean(0))
    check("per_output_std_err", lambda m, s, n: s.mean(0), variant["per_output_std_err"],
          table=table_rel_s * stats.std.mean(0), fl=floor.mean(0))

    # Summaries over all elements: their means, and their spreads as variances corrected for the
    # per-element estimation noise (E[s²] = Var_true + mean τ², τ = σ/sqrt(n) for means and
    # σ·sqrt((κ−1)/(4n)) for stds).
    kurt = stats.kurt

    def tau2_mean(s, n):
        return s**2 / n

    def tau2_std(s, n):
        return s**2 * (kurt - 1) / (4 * n)

    for key, scale, kind in (
        ("mean_err", 1.0, "mean"),
        ("mean_err_over_nm_scale", nm, "mean"),
        ("std_err", 1.0, "std"),
        ("std_err_over_nm_scale", nm, "std"),
    ):
        pick = (lambda m, s: m) if kind == "mean" else (lambda m, s: s)
        tau2 = tau2_mean if kind == "mean" else tau2_std
        table = np.mean(table_m / scale) if kind == "mean" else table_rel_s * np.mean(stats.std / scale)
        check(f"{key}.mean", lambda m, s, n: np.mean(pick(m, s) / scale), variant[key]["mean"],
              table=table, fl=np.mean(floor / scale))
        ref_var = variant[key]["std"] ** 2 - np.mean(tau2(stats.std, r_ref) / scale**2)
        v_full = np.var(pick(stats.mean, stats.std) / scale, ddof=1)
        check(f"{key}.std (as corrected variance)",
              lambda m, s, n: np.var(pick(m, s) / scale, ddof=1) - np.mean(tau2(s, n) / scale**2), ref_var,
              table=2 * v_full * table_rel_s if kind == "std" else 0.0,
              fl=(8 * EPS32 * np.max(np.abs(floor / scale))) ** 2)

    # rel_rmse = sqrt(mean_k(m_k² + σ_k²)) / rms(ideal); the table moves it through the mean
    # offset and the std factor.
    mse = np.mean(stats.mean**2 + stats.std**2)
    table_mse = math.sqrt((2 * np.mean(np.abs(stats.mean) * stats.std)) ** 2 / N_TABLE
                          + (2 * np.mean(stats.std**2) * table_rel_s) ** 2)
    check("rel_rmse", lambda m, s, n: np.sqrt(np.mean(m**2 + s**2)) / rms_ideal, variant["rel_rmse"],
          table=table_mse / (2 * math.sqrt(mse) * rms_ideal), fl=8 * EPS32)


def _check_lattice(variant, io: IOParameters, x, ideal) -> None:
    """The reference's raw repeats of element (0, 0) lie on our ADC lattice ``k·out_res_eff·ν``."""
    first = np.asarray(variant["first_repeats_err_sample0_output0"], np.float64)
    nu = np.abs(x[0]).max() if io.noise_management.name != "NONE" else 1.0
    steps = (first + ideal[0, 0]) / (io.out_res_eff * nu)
    # float32 storage of y (|y| <= out_bound·ν·r) limits how integral the step count can be.
    tol = 8 * EPS32 * (np.abs(first) + abs(ideal[0, 0])) / (io.out_res_eff * nu) + 1e-4
    _assert_close("reference repeats on our ADC lattice", steps, np.round(steps), tol)


# Every variant jitted; the un-jitted path on a representative subset (forward, BM retries, backward).
CASES = [pytest.param(n, True, id=f"{n}-jit") for n in VARIANT_INPUTS] + [
    pytest.param(n, False, id=f"{n}-nojit") for n in EAGER_VARIANTS
]


@pytest.mark.parametrize("name, jit", CASES)
def test_case_f_variant(name: str, jit: bool) -> None:
    variant, w, x, is_backward, ideal = _setup(name)
    cfg = _config(variant)
    io = cfg.backward if is_backward else cfg.forward
    state = TileState(weights=jnp.asarray(w), rpu_config=cfg)
    r = R_JIT if jit else R_EAGER
    key = jax.random.key(20240 + list(VARIANT_INPUTS).index(name))
    stats = _run(state, x, is_backward, r, jit, key, ideal)
    _check_variant(name, stats, variant, w, x, ideal, io, is_backward)
    if not io.perfect and io.out_res_eff > 0:
        _check_lattice(variant, io, x, ideal)


def test_case_f_under_vmap_over_three_tiles() -> None:
    """Three tile states stacked on a leading axis, each with its own keys, each compared with the reference."""
    name = "single_default_forward"
    variant, w, x, is_backward, ideal = _setup(name)
    cfg = _config(variant)
    one = TileState(weights=jnp.asarray(w), rpu_config=cfg)
    states = jax.tree.map(lambda leaf: jnp.stack([leaf] * 3), one)
    r = 1000
    xj = jnp.asarray(x)
    fn = jax.jit(jax.vmap(jax.vmap(lambda s, k: forward(s, xj, k), in_axes=(None, 0)), in_axes=(0, 0)))
    ideal32 = jnp.asarray(ideal, jnp.float32)
    per_tile = [[] for _ in range(3)]
    for c in range(r // CHUNK):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(99), c), 3 * CHUNK).reshape(3, CHUNK)
        y = fn(states, keys)
        for t in range(3):
            per_tile[t].append(_group_moments(y[t], ideal32, _group_size(r)))
    stats = [Stats(iter(chunks), r) for chunks in per_tile]
    for t in range(3):
        _check_variant(name, stats[t], variant, w, x, ideal, cfg.forward, False)
    # Independent keys per tile: the per-element means differ by noise, not identically.
    assert not np.array_equal(stats[0].mean, stats[1].mean)
