"""Analog forward and backward matrix-vector products of a tile (spec tile-core §1.5, §2).

The pipeline follows aihwkit 1.2.0's CPU tile (``ForwardBackwardPassIOManaged``), one sample at a
time in meaning, vectorised over the batch in practice:

* noise management (NM) scales each input vector into the DAC range (§2.4),
* the DAC quantises, clips, adds input noise and input asymmetry, in that CPU order (§2.6),
* the analog MAC adds IR drop, voltage offsets / series resistance and output-referred weight
  noise (§2.7), in one pass or as separate negative/positive passes (§2.8),
* the ADC applies the output non-linearity, asymmetry, output noise, quantisation and clipping
  (§2.9); bound management (BM) repeats a sample with half the input scale while its output
  saturates (§2.3, §2.5), and the result is rescaled by ``ν·r·out_scale``.

Units: ``x`` and the weights are in the tile's own units (aihwkit's raw tile weights); ``y`` is in
the same units as ``W @ x``. All noise levels of :class:`~rpujax.configs.io.IOParameters` act in
the normalised analog domain (§2.3).

Randomness comes only from the ``key`` argument. Bound-management round ``k`` draws its noise from
``fold_in(key, k)``, so every retry redraws all noise, as in aihwkit. Within a round, each stage
(input rounding, input noise, weight noise, output noise, output rounding, per pass) draws from its
own ``fold_in`` of the round key. The same key gives the same result with or without ``jit`` and
under ``vmap`` (op by op under ``jax.disable_jit`` the draws are the same; float rounding may
differ in the last bit).

Bound management is vectorised over the batch: round 0 runs for the whole batch (one product); only
if some sample clipped does a ``while_loop`` run further rounds, each for the whole batch with fresh
noise, keeping the result for the samples that still needed it (per-sample ``r``, as on aihwkit's
CPU tile, not the GPU tile's global ``r``).

Numerical notes. Products use ``Precision.HIGHEST`` so that float32 results do not depend on the
backend's default (TF32 on recent GPUs), which matters at the quantisation boundaries. Noise is
drawn with ``jax.random.normal`` / ``uniform`` (which XLA fuses into the surrounding elementwise
work; a hand-rolled Threefry layout was faster in isolation but much slower once fused).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.configs.io import (
    AnalogMVType,
    BoundManagementType,
    IOParameters,
    NoiseManagementType,
    WeightNoiseType,
)
from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "VJP_BACKWARD_FOLD",
    "analog_backward",
    "analog_forward",
    "backward",
    "backward_with_state",
    "forward",
    "forward_with_state",
    "out_bound_mask",
    "sample_periphery_parameters",
]

# fold_in constant deriving the key of the analog backward inside forward's VJP from the forward
# key (BM rounds use fold_in(key, k) with small k; fold_in hashes, so the streams are independent).
VJP_BACKWARD_FOLD = 0x0BAC0BAC

# Per-stage fold_in constants within one BM round (distinct streams per stage and pass).
_INP_ROUND, _INP_NOISE = 1, 2
_W_NOISE_POS, _W_NOISE_NEG = 3, 4
_OUT_NOISE_POS, _OUT_ROUND_POS = 5, 6
_OUT_NOISE_NEG, _OUT_ROUND_NEG = 7, 8

_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# Random numbers


def _as_key(key: Array) -> Array:
    """Accept a typed key or a legacy ``uint32[2]`` key; return a typed key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _uniform(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Uniform draws in [0, 1)."""
    return jax.random.uniform(key, shape, dtype)


def _normal(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Standard normal draws."""
    return jax.random.normal(key, shape, dtype)


# --------------------------------------------------------------------------------------------
# Construction-time periphery parameters (§1.5)


def sample_periphery_parameters(
    io: IOParameters, key: Array, out_size: int, in_size: int, dtype: Any = jnp.float32
) -> dict[str, Array]:
    """Sample the per-output periphery parameters of one direction of a tile (spec §1.5).

    Call it with ``(out_size, in_size) = (D, X)`` for the forward pass and ``(X, D)`` for the
    backward pass. Only the entries the config uses are returned:

    * ``v_offset`` ``(out_size,)`` when ``v_offset_std > 0`` or ``r_series > 0``: aihwkit's
      ``MAX(v_offset_std·ξ, 0)`` macro draws twice, so the value is 0 with probability 1/2 and
      otherwise an independent ``N(0, v_offset_std²)`` draw (negative values occur).
    * ``out_nonlinearity`` ``(out_size,)`` and ``out_nonlinearity_factor`` ``()`` when the output
      non-linearity acts (``out_nonlinearity > 0`` on a non-perfect tile, or ``r_series > 0``):
      ``|out_nonlinearity / B_o · (1 + out_nonlinearity_std·ξ)|`` with ``B_o = out_bound`` (1 if
      unbounded); the factor is ``f²``, ``f = 1 + (mean|out_nonlinearity| + r_series) ·
      slope_calibration · B_o`` if ``slope_calibration > 0``, else 1.
    * ``w_asymmetry`` ``(out_size, in_size)`` when ``w_read_asymmetry_dtod > 0``:
      ``1 + w_read_asymmetry_dtod·ξ``. In the backward direction entry ``[j, i]`` multiplies
      ``W[i, j]`` (it is laid out like ``Wᵀ``).
    * ``out_noise_values`` ``(out_size,)`` when ``out_noise_std > 0``:
      ``|out_noise · (1 + out_noise_std·ξ)|``.

    Args:
      io: the IO parameters of this direction.
      key: a JAX random key; the only source of randomness.
      out_size: number of outputs of this direction.
      in_size: number of inputs of this direction.
      dtype: floating dtype of the returned arrays.

    Returns:
      A dict of arrays keyed by aihwkit's ``get_forward_parameters`` names.
    """
    if not isinstance(io, IOParameters):
        raise TypeError(f"io must be an IOParameters, got {type(io).__name__}")
    key = _as_key(key)
    k_v1, k_v2, k_nl, k_wa, k_on = jax.random.split(key, 5)
    out: dict[str, Array] = {}
    if io.has_voltage_offsets:
        first = io.v_offset_std * jax.random.normal(k_v1, (out_size,), dtype)
        second = io.v_offset_std * jax.random.normal(k_v2, (out_size,), dtype)
        out["v_offset"] = jnp.where(first > 0, second, jnp.zeros_like(second))
    if io.has_nl_calibration:
        b_o = io.out_bound if math.isfinite(io.out_bound) else 1.0
        xi = jax.random.normal(k_nl, (out_size,), dtype)
        nl = jnp.abs(io.out_nonlinearity / b_o * (1.0 + io.out_nonlinearity_std * xi)).astype(dtype)
        out["out_nonlinearity"] = nl
        factor = jnp.asarray(1.0, dtype)
        if io.slope_calibration > 0:
            f = 1.0 + (jnp.mean(jnp.abs(nl)) + io.r_series) * io.slope_calibration * b_o
            factor = (f * f).astype(dtype)
        out["out_nonlinearity_factor"] = factor
    if io.w_read_asymmetry_dtod > 0:
        out["w_asymmetry"] = (
            1.0 + io.w_read_asymmetry_dtod * jax.random.normal(k_wa, (out_size, in_size), dtype)
        ).astype(dtype)
    if io.out_noise_std > 0:
        xi = jax.random.normal(k_on, (out_size,), dtype)
        out["out_noise_values"] = jnp.abs(io.out_noise * (1.0 + io.out_noise_std * xi)).astype(dtype)
    return out


# --------------------------------------------------------------------------------------------
# Stages


def _param(params: dict[str, Array], name: str, shape: tuple[int, ...]) -> Array:
    if name not in params:
        raise KeyError(
            f"periphery parameter {name!r} is required by the IO config but missing (have "
            f"{sorted(params)}); build it with sample_periphery_parameters"
        )
    value = params[name]
    if tuple(value.shape) != shape:
        raise ValueError(f"periphery parameter {name!r} has shape {tuple(value.shape)}, expected {shape}")
    return value


def _mv(w: Array, v: Array, transposed: bool) -> Array:
    """``v @ W.T`` (forward, ``(B, X) -> (B, D)``) or ``v @ W`` (backward, ``(B, D) -> (B, X)``)."""
    contract = 0 if transposed else 1
    return jax.lax.dot_general(v, w, (((1,), (contract,)), ((), ())), precision=_HIGHEST)


def _quantize(v: Array, res: float, sto: bool, key: Array) -> Array:
    """``res·rint(v/res)`` (round half to even) or its stochastic-rounding form; ``res = 0``: identity."""
    if res <= 0:
        return v
    r = np.float32(res)
    z = v / r
    if sto:
        z = z + (_uniform(key, v.shape, v.dtype) - 0.5)
    return jnp.round(z) * r


def _abs_max(x: Array) -> Array:
    return jnp.max(jnp.abs(x), axis=-1)


def _npsum_scale(io: IOParameters, x: Array) -> Array:
    """``ABS_MAX_NP_SUM`` NM scale per sample (spec §2.4)."""
    a = _abs_max(x)
    thres = io.nm_thres_eff
    if thres > 0:
        a = jnp.minimum(a, np.float32(thres))
    psum = jnp.sum(jnp.maximum(x, 0.0), axis=-1)
    nsum = jnp.sum(jnp.minimum(x, 0.0), axis=-1)
    total = jnp.maximum(psum, -nsum)
    bound = io.out_bound if math.isfinite(io.out_bound) else 1.0
    n = total * np.float32(io.nm_assumed_wmax) / np.float32(bound)
    if io.inp_res_eff > 0:
        n = jnp.minimum(a / np.float32(io.inp_res_eff) * np.float32(io.max_bm_res), n)
    return jnp.maximum(a, n)


def _running_abs_max(io: IOParameters, a: Array, nm_value: Array) -> tuple[Array, Array]:
    """Per-sample running ``AVERAGE_ABS_MAX`` values and the value after the last sample.

    The CPU tile updates ``m ← m(1 − δ) + δ·a_b`` once per sample (``m = a_0`` if unset, i.e.
    ``m < 0``); the affine recurrence is evaluated with an associative scan.
    """
    decay = np.float32(io.nm_decay)
    keep = jnp.full(a.shape, 1.0 - decay, a.dtype)
    add = decay * a
    unset = nm_value < 0
    keep = keep.at[0].set(jnp.where(unset, 0.0, keep[0]))
    add = add.at[0].set(jnp.where(unset, a[0], add[0]))

    def combine(earlier, later):
        return later[0] * earlier[0], later[0] * earlier[1] + later[1]

    cum_keep, cum_add = jax.lax.associative_scan(combine, (keep, add))
    m = jnp.where(unset, cum_add, cum_keep * nm_value + cum_add)
    return m, m[-1]


def _nm_scale(io: IOParameters, x: Array, nm_value: Array) -> tuple[Array, Array]:
    """NM scale ν per sample ``(B,)`` (spec §2.4) and the updated running NM value."""
    nm = io.noise_management
    thres = io.nm_thres_eff
    batch = x.shape[0]
    if nm is NoiseManagementType.NONE:
        return jnp.ones((batch,), x.dtype), nm_value
    if nm is NoiseManagementType.ABS_MAX:
        a = _abs_max(x)
        return (jnp.minimum(a, np.float32(thres)) if thres > 0 else a), nm_value
    if nm is NoiseManagementType.MAX:
        m = jnp.max(x, axis=-1)
        return (jnp.minimum(m, np.float32(thres)) if thres > 0 else m), nm_value
    if nm is NoiseManagementType.CONSTANT:
        return jnp.full((batch,), thres if thres > 0 else 1.0, x.dtype), nm_value
    if nm is NoiseManagementType.ABS_MAX_NP_SUM:
        return _npsum_scale(io, x), nm_value
    if nm is NoiseManagementType.AVERAGE_ABS_MAX:
        m, last = _running_abs_max(io, _abs_max(x), nm_value.astype(x.dtype))
        return m, last.astype(nm_value.dtype)
    raise ValueError(f"unsupported noise management {nm}")  # pragma: no cover - enum is closed


def _prepare_input(io: IOParameters, x: Array, scale: Array, key: Array) -> Array:
    """DAC, CPU order (§2.6): scale → quantise → clip → input noise → input asymmetry."""
    v = x * scale[:, None]
    v = _quantize(v, io.inp_res_eff, io.inp_sto_round, jax.random.fold_in(key, _INP_ROUND))
    if math.isfinite(io.inp_bound):
        b = np.float32(io.inp_bound)
        v = jnp.clip(v, -b, b)
    if io.inp_noise > 0:
        v = v + np.float32(io.inp_noise) * _normal(jax.random.fold_in(key, _INP_NOISE), v.shape, v.dtype)
    if io.inp_asymmetry != 0:
        v = jnp.where(v < 0, v * np.float32(1.0 - io.inp_asymmetry), v)
    return v


def _single_pass(
    io: IOParameters, w: Array, xt: Array, params: dict[str, Array], key: Array, transposed: bool
) -> Array:
    """One analog MAC with its non-idealities (§2.7): GEMV, IR drop, voltage offsets, weight noise."""
    y = _mv(w, xt, transposed)
    n_out = y.shape[-1]
    n_in = xt.shape[-1]
    if io.ir_drop > 0:
        current = _mv(jnp.abs(w), jnp.abs(xt), transposed)
        a = np.float32(n_in / io.ir_drop_g_ratio) * current
        c = a * (a * (np.float32(0.05) * a - np.float32(0.2)) + np.float32(0.5))
        p = 1.0 - jnp.arange(n_in, dtype=xt.dtype) / np.float32(n_in)
        x_pos = xt * (1.0 - p * p)
        y = y - c * (np.float32(io.ir_drop) * _mv(w, x_pos, transposed))
    if io.has_voltage_offsets:
        v_off = _param(params, "v_offset", (n_out,))
        rs = np.float32(max(io.r_series, 0.0))
        cap = np.float32(io.r_series_max_total) if math.isfinite(io.r_series_max_total) else None

        def denom(val: Array) -> Array:
            t = rs * jnp.abs(val)
            return 1.0 + (jnp.minimum(t, cap) if cap is not None else t)

        if io.v_offset_w_min == 0:
            y = (1.0 - v_off) * y if rs <= 0 else (1.0 - v_off) * y / denom(y)
        else:
            y_ref = np.float32(-io.v_offset_w_min) * jnp.sum(xt, axis=-1, keepdims=True)
            if rs <= 0:
                y = y * (1.0 - v_off) - v_off * (2.0 * y_ref)
            else:
                y_pos = y + y_ref
                y = (1.0 - v_off) * y_pos / denom(y_pos) - (1.0 + v_off) * y_ref / denom(y_ref)
    if io.w_noise > 0 and io.w_noise_type is not WeightNoiseType.NONE:
        xi = _normal(key, y.shape, y.dtype)
        if io.w_noise_type is WeightNoiseType.ADDITIVE_CONSTANT:
            std = np.float32(io.w_noise) * jnp.sqrt(jnp.sum(xt * xt, axis=-1, keepdims=True))
        else:  # PCM_READ
            std = np.float32(io.w_noise) * jnp.sqrt(_mv(jnp.abs(w), xt * xt, transposed))
        y = y + std * xi
    return y


def _last_index(mask: Array) -> Array:
    idx = jnp.arange(mask.shape[-1], dtype=jnp.int32)
    return jnp.max(jnp.where(mask, idx, -1), axis=-1)


def _finalize(
    io: IOParameters,
    y: Array,
    params: dict[str, Array],
    k_noise: Array,
    k_round: Array,
    with_bm: bool,
) -> tuple[Array, Array]:
    """ADC, CPU order (§2.9): non-linearity → asymmetry → noise → quantise → BM test + clip.

    Returns the ADC values and, per sample, whether the bound test passed (always True without
    BM). With ``bm_test_negative_bound=False`` the CPU tile overwrites its flag at every negative
    clip (spec §7.3), so a sample passes unless its *last* clipping output (in output order) hit
    the positive bound; that quirk is reproduced.
    """
    n_out = y.shape[-1]
    if io.has_nl_calibration:
        nl = _param(params, "out_nonlinearity", (n_out,))
        nlf = _param(params, "out_nonlinearity_factor", ())
        y = nlf * y / (1.0 + jnp.abs(nl * y))
    if io.out_asymmetry > 0:
        y = jnp.where(y < 0, y * np.float32(1.0 - io.out_asymmetry), y)
    if io.out_noise_std > 0:
        sigma = _param(params, "out_noise_values", (n_out,))
        y = y + sigma * _normal(k_noise, y.shape, y.dtype)
    elif io.out_noise > 0:
        y = y + np.float32(io.out_noise) * _normal(k_noise, y.shape, y.dtype)
    y = _quantize(y, io.out_res_eff, io.out_sto_round, k_round)
    passed = jnp.ones(y.shape[:-1], bool)
    if math.isfinite(io.out_bound):
        b = np.float32(io.out_bound)
        if with_bm:
            over = y > b
            under = y < -b
            if io.bm_test_negative_bound:
                passed = ~jnp.any(over | under, axis=-1)
            else:
                passed = ~(_last_index(over) > _last_index(under))
        y = jnp.clip(y, -b, b)
    return y, passed


def _analog_mv(
    io: IOParameters,
    w: Array,
    params: dict[str, Array],
    x: Array,
    scale: Array,
    key: Array,
    transposed: bool,
    with_bm: bool,
) -> tuple[Array, Array]:
    """PREPARE, ANALOG_MV and FINALIZE of one BM round for the whole batch (§2.6–§2.9)."""
    xt = _prepare_input(io, x, scale, key)
    fold = jax.random.fold_in
    if io.mv_type is AnalogMVType.ONE_PASS:
        y = _single_pass(io, w, xt, params, fold(key, _W_NOISE_POS), transposed)
        return _finalize(io, y, params, fold(key, _OUT_NOISE_POS), fold(key, _OUT_ROUND_POS), with_bm)
    w_neg = w
    if io.w_read_asymmetry_dtod > 0:
        out_dim, in_dim = (w.shape[1], w.shape[0]) if transposed else w.shape
        wa = _param(params, "w_asymmetry", (out_dim, in_dim))
        w_neg = w * (wa.T if transposed else wa)
    y_neg = _single_pass(io, w_neg, jnp.minimum(xt, 0.0), params, fold(key, _W_NOISE_NEG), transposed)
    y_pos = _single_pass(io, w, jnp.maximum(xt, 0.0), params, fold(key, _W_NOISE_POS), transposed)
    k_pos = (fold(key, _OUT_NOISE_POS), fold(key, _OUT_ROUND_POS))
    if io.mv_type is AnalogMVType.POS_NEG_SEPARATE_DIGITAL_SUM:
        k_neg = (fold(key, _OUT_NOISE_NEG), fold(key, _OUT_ROUND_NEG))
        y_neg, p_neg = _finalize(io, y_neg, params, *k_neg, with_bm)
        y_pos, p_pos = _finalize(io, y_pos, params, *k_pos, with_bm)
        return y_pos + y_neg, p_pos & p_neg
    return _finalize(io, y_pos + y_neg, params, *k_pos, with_bm)


def _check_2d(name: str, v: Array, width: int, what: str) -> None:
    if v.ndim != 2 or v.shape[1] != width:
        raise ValueError(f"{name} has shape {tuple(v.shape)}, expected (batch, {width}) ({what})")


@functools.partial(jax.jit, static_argnums=0)
def analog_forward(
    io: IOParameters,
    weights: Array,
    params: dict[str, Array],
    x: Array,
    key: Array,
    nm_value: Array,
) -> tuple[Array, Array]:
    """Forward analog MVM ``y ≈ W x`` of a batch with the full IO pipeline (spec §2.3).

    This is the array-level function behind :func:`forward`; use it to run the analog MVM on
    weights that are not a tile's own (e.g. weights changed by a weight modifier).

    Args:
      io: forward IO parameters.
      weights: ``(D, X)`` weight matrix (device units).
      params: forward periphery parameters (:func:`sample_periphery_parameters` with ``(D, X)``).
      x: ``(B, X)`` inputs (any bias column already appended).
      key: random key; BM round ``k`` uses ``fold_in(key, k)``.
      nm_value: running ``AVERAGE_ABS_MAX`` value (scalar, ``< 0`` while unset).

    Returns:
      ``(y, nm_value)``: ``(B, D)`` outputs and the running NM value after the batch (unchanged
      unless the NM type is ``AVERAGE_ABS_MAX``).
    """
    d_size, x_size = weights.shape
    _check_2d("x", x, x_size, f"weights have shape {tuple(weights.shape)}")
    if io.perfect:
        y = _mv(weights, x, False)
        return (y * np.float32(io.out_scale) if io.out_scale != 1 else y), nm_value
    key = _as_key(key)
    nm_on = io.noise_management is not NoiseManagementType.NONE
    bm = io.bound_management
    bm_on = bm is not BoundManagementType.NONE

    nu, nm_new = _nm_scale(io, x, nm_value)
    if nm_on and io.inp_noise <= 0:
        zero = nu <= 0
    else:
        zero = jnp.zeros(nu.shape, bool)

    def nm_factor(nu_: Array) -> Array:
        if not nm_on:
            return jnp.ones_like(nu_)
        return jnp.where(nu_ > 0, 1.0 / jnp.where(nu_ > 0, nu_, 1.0), 1.0)

    def run(scale: Array, k: int | Array) -> tuple[Array, Array]:
        return _analog_mv(io, weights, params, x, scale, jax.random.fold_in(key, k), False, bm_on)

    # Round 0 for the whole batch: one product; in the common case nothing else runs.
    scale = nm_factor(nu)
    y, passed = run(scale, 0)

    if bm_on:
        inp_res = np.float32(io.inp_res_eff)
        res_limit = np.float32(io.max_bm_res) / inp_res if inp_res > 0 else np.float32(np.inf)

        def at_limit(r: Array) -> Array:
            return (r.astype(jnp.int32) > io.max_bm_factor) | (r > res_limit)

        worst = (
            bm is BoundManagementType.ITERATIVE_WORST_CASE
            and io.noise_management is not NoiseManagementType.ABS_MAX_NP_SUM
        )
        npsum = _npsum_scale(io, x) if worst else None
        r0 = jnp.ones_like(nu)
        done0 = zero | passed | at_limit(r0)

        # Retries while any sample still clips: the round runs for the whole batch (fresh noise
        # from fold_in(key, round)) and is kept only for the samples that needed it, which then
        # continue with their own r; the others keep their earlier result.
        def cond(carry):
            return ~jnp.all(carry[-1])

        def body(carry):
            it, r, nu_c, scale_c, y_c, done = carry
            it = it + 1
            active = ~done
            r_new = 2.0 * r
            nu_new = nu_c
            if worst:
                # The second round switches to the worst-case NM scale and restarts at r = 1.
                first_retry = it == 1
                r_new = jnp.where(first_retry, 1.0, r_new)
                nu_new = jnp.where(first_retry, npsum, nu_c)
            s_new = nm_factor(nu_new) / r_new
            y_k, p_k = run(s_new, it)
            y_c = jnp.where(active[:, None], y_k, y_c)
            scale_c = jnp.where(active, s_new, scale_c)
            r = jnp.where(active, r_new, r)
            nu_c = jnp.where(active, nu_new, nu_c)
            done = done | p_k | at_limit(r_new)
            return it, r, nu_c, scale_c, y_c, done

        def retry(operands):
            scale0, y0 = operands
            carry = (jnp.asarray(0, jnp.int32), r0, nu, scale0, y0, done0)
            carry = jax.lax.while_loop(cond, body, carry)
            return carry[3], carry[4]

        scale, y = jax.lax.cond(jnp.all(done0), lambda ops: ops, retry, (scale, y))

    y = y * (np.float32(io.out_scale) / scale)[:, None]
    y = jnp.where(zero[:, None], 0.0, y)
    return y, nm_new


@functools.partial(jax.jit, static_argnums=0)
def analog_backward(
    io: IOParameters,
    weights: Array,
    params: dict[str, Array],
    d: Array,
    key: Array,
    nm_value: Array,
) -> tuple[Array, Array]:
    """Backward (transposed) analog MVM ``dx ≈ Wᵀ d`` of a batch (spec §2.10).

    Same pipeline as :func:`analog_forward` with the backward IO parameters, except that bound
    management is never applied (aihwkit forces it to NONE), and an NM scale ``≤ 0`` gives exact
    zeros regardless of input noise.

    Args:
      io: backward IO parameters.
      weights: ``(D, X)`` weight matrix (not transposed).
      params: backward periphery parameters (:func:`sample_periphery_parameters` with ``(X, D)``).
      d: ``(B, D)`` output errors.
      key: random key.
      nm_value: running ``AVERAGE_ABS_MAX`` value, shared with the forward direction.

    Returns:
      ``(dx, nm_value)``: ``(B, X)`` and the running NM value after the batch.
    """
    d_size, x_size = weights.shape
    _check_2d("d", d, d_size, f"weights have shape {tuple(weights.shape)}")
    if io.perfect:
        dx = _mv(weights, d, True)
        return (dx * np.float32(io.out_scale) if io.out_scale != 1 else dx), nm_value
    key = _as_key(key)
    nm_on = io.noise_management is not NoiseManagementType.NONE
    nu, nm_new = _nm_scale(io, d, nm_value)
    if nm_on:
        scaling = nu > 0
        safe = jnp.where(scaling, nu, 1.0)
        scale = jnp.where(scaling, 1.0 / safe, 1.0)
        factor = np.float32(io.out_scale) * safe
    else:
        scaling = jnp.ones(nu.shape, bool)
        scale = jnp.ones_like(nu)
        factor = jnp.full(nu.shape, np.float32(io.out_scale), nu.dtype)
    dx, _ = _analog_mv(io, weights, params, d, scale, jax.random.fold_in(key, 0), True, False)
    dx = dx * factor[:, None]
    if nm_on:
        dx = jnp.where(scaling[:, None], dx, 0.0)
    return dx, nm_new


# --------------------------------------------------------------------------------------------
# Tile-level functions


def _io_pair(state: TileState) -> tuple[IOParameters, IOParameters]:
    cfg = state.rpu_config
    fwd = getattr(cfg, "forward", None)
    bwd = getattr(cfg, "backward", None)
    if not isinstance(fwd, IOParameters) or not isinstance(bwd, IOParameters):
        raise TypeError(
            "state.rpu_config must have IOParameters fields .forward and .backward, got "
            f"{type(cfg).__name__}"
        )
    return fwd, bwd


def _check_state(state: TileState) -> None:
    if state.weights.ndim != 2:
        raise ValueError(
            f"state.weights has shape {tuple(state.weights.shape)}, expected (D, X); vmap over a "
            "batch of tiles instead of passing stacked weights"
        )


def _check_input(name: str, v: Array, width: int, weights: Array, what: str) -> Array:
    v = jnp.asarray(v)
    if not jnp.issubdtype(v.dtype, jnp.floating) or v.dtype != weights.dtype:
        raise TypeError(f"{name} has dtype {v.dtype}, expected {weights.dtype} (the weights' dtype)")
    if v.ndim < 1 or v.shape[-1] != width:
        raise ValueError(
            f"{name} has shape {tuple(v.shape)}, expected (..., {width}) ({what}; weights have shape "
            f"{tuple(weights.shape)})"
        )
    return v


def out_bound_mask(io: IOParameters, y: Array) -> Array:
    """aihwkit's out-bound gradient mask (spec §2.10, §6.4).

    False where ``|y| ≥ 0.999·out_scale·out_bound``, True elsewhere.
    ``y`` is the forward tile output (after the NM/BM rescaling); no mask for an unbounded output.
    Applies even for a perfect forward pass, as in aihwkit.
    """
    if not math.isfinite(io.out_bound):
        return jnp.ones(y.shape, bool)
    return jnp.abs(y) < np.float32(0.999 * io.out_scale * io.out_bound)


@jax.custom_vjp
def _forward_core(state: TileState, x: Array, key: Array) -> tuple[Array, Array]:
    fwd_io, _ = _io_pair(state)
    return analog_forward(fwd_io, state.weights, state.fwd, x, key, state.nm_value)


def _forward_core_fwd(state: TileState, x: Array, key: Array):
    y, nm_new = _forward_core(state, x, key)
    return (y, nm_new), (state, x, key, y, nm_new)


def _float0_like(leaf: Any) -> Any:
    leaf = jnp.asarray(leaf) if not hasattr(leaf, "dtype") else leaf
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(leaf.shape, jax.dtypes.float0)


def _forward_core_bwd(res, cts):
    state, x, key, y, nm_new = res
    ct_y, _ = cts  # the running NM value is not differentiable
    fwd_io, bwd_io = _io_pair(state)
    d_masked = jnp.where(out_bound_mask(fwd_io, y), ct_y, 0.0)
    bkey = jax.random.fold_in(_as_key(key), VJP_BACKWARD_FOLD)
    dx, _ = analog_backward(bwd_io, state.weights, state.bwd, d_masked, bkey, nm_new)
    # Inference-tile (hardware-aware) training: the dense weight gradient with the *unmasked* d,
    # as aihwkit's optimizer uses the unmasked error for the update (spec §6.4, §7.16).
    dw = jax.lax.dot_general(ct_y, x, (((0,), (0,)), ((), ())), precision=_HIGHEST)
    ct_state = jax.tree.map(_float0_like, state).replace(weights=dw.astype(state.weights.dtype))
    ct_key = np.zeros(key.shape, jax.dtypes.float0)
    return ct_state, dx, ct_key


_forward_core.defvjp(_forward_core_fwd, _forward_core_bwd)


def _with_bias(state: TileState, x: Array) -> Array:
    if not state.bias:
        return x
    return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)


def forward_with_state(
    state: TileState, x: Array, key: Array, *, is_test: bool = False
) -> tuple[Array, TileState]:
    """Analog forward pass ``y ≈ W x`` of a tile, returning the state with the updated NM value.

    Use this in training loops with ``AVERAGE_ABS_MAX`` noise management: aihwkit's CPU tile
    updates the running NM value per sample, in training and in eval (``is_test`` does not
    change that), and shares it with the backward pass (spec §2.4). For every other NM type the
    returned state equals the input state.

    Args:
      state: the tile (its ``rpu_config.forward`` IO parameters and ``fwd`` periphery values).
      x: ``(..., in_size)`` inputs; with an analog bias (``state.bias``) a constant 1 is appended
        to every sample before noise management, so the bias takes part in NM and quantisation.
      key: random key (the only source of randomness).
      is_test: accepted for API parity; aihwkit's tile forward ignores it.

    Returns:
      ``(y, new_state)`` with ``y`` of shape ``(..., D)``.

    Differentiation (``jax.grad``/``vjp``): the cotangent w.r.t. ``x`` is the tile's analog
    :func:`backward` with the *backward* IO parameters and key ``fold_in(key, VJP_BACKWARD_FOLD)``,
    applied to the output error zeroed where ``|y| ≥ 0.999·out_scale·out_bound`` (aihwkit's
    out-bound mask, forward ``out_bound``); the cotangent w.r.t. ``state.weights`` is the dense
    ``dᵀ x̂`` (``x̂`` with the bias 1 appended) with the unmasked error, as aihwkit's
    inference-tile training uses; other state leaves get zero cotangents. The backward's own
    running-NM update is not visible through a VJP.
    """
    del is_test
    _check_state(state)
    _io_pair(state)
    what = "in_size" + (" without the bias column" if state.bias else "")
    x = _check_input("x", x, state.in_size, state.weights, what)
    lead = x.shape[:-1]
    x2 = _with_bias(state, x).reshape((-1, state.x_size))
    y, nm_new = _forward_core(state, x2, _as_key(key))
    return y.reshape(lead + (state.out_size,)), state.replace(nm_value=nm_new)


def forward(state: TileState, x: Array, key: Array, *, is_test: bool = False) -> Array:
    """Analog forward pass ``y ≈ W x`` of a tile (see :func:`forward_with_state`).

    The updated running ``AVERAGE_ABS_MAX`` value is discarded; training loops that use that NM
    type should call :func:`forward_with_state`.
    """
    y, _ = forward_with_state(state, x, key, is_test=is_test)
    return y


def backward_with_state(state: TileState, d: Array, key: Array) -> tuple[Array, TileState]:
    """Analog backward pass ``dx ≈ Wᵀ d`` of a tile with the backward IO parameters (spec §2.10).

    Args:
      state: the tile (``rpu_config.backward`` and ``bwd`` periphery values of length X).
      d: ``(..., D)`` output errors.
      key: random key.

    Returns:
      ``(dx, new_state)``: ``dx`` of shape ``(..., in_size)`` (the analog-bias column's entry is
      dropped) and the state with the running NM value updated (``AVERAGE_ABS_MAX`` only).
    """
    _check_state(state)
    _, bwd_io = _io_pair(state)
    d = _check_input("d", d, state.out_size, state.weights, "out_size")
    lead = d.shape[:-1]
    dx, nm_new = analog_backward(
        bwd_io, state.weights, state.bwd, d.reshape((-1, state.out_size)), _as_key(key), state.nm_value
    )
    dx = dx[:, : state.in_size]
    return dx.reshape(lead + (state.in_size,)), state.replace(nm_value=nm_new)


def backward(state: TileState, d: Array, key: Array) -> Array:
    """Analog backward pass ``dx ≈ Wᵀ d`` (see :func:`backward_with_state`).

    The updated running ``AVERAGE_ABS_MAX`` value is discarded.
    """
    dx, _ = backward_with_state(state, d, key)
    return dx
