"""Weight modifiers, clipping and remapping for hardware-aware training (spec §4.2–§4.4, §4.10).

Two flavours of the modifier, because aihwkit has two with different formulas:

* :func:`modify_weights` — aihwkit's RPUCuda ``WeightModifier`` (``InferenceRPUConfig``): every
  type of :class:`~rpujax.configs.inference.WeightModifierType`, drop-connect, ``copy_last_column``.
* :func:`modify_weights_torch` — aihwkit's torch tile (``TorchInferenceRPUConfig``): NONE/COPY,
  MULT_NORMAL, ADD_NORMAL, DISCRETIZE with the torch formulas, optionally one draw per batch sample.

Both take one tile's weights ``(D, X)`` and an explicit key, and return new weights; gradients are
handled by the caller (straight-through). Clipping and remapping are deterministic.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rpujax.configs.inference import (
    WeightClipParameter,
    WeightClipType,
    WeightModifierParameter,
    WeightModifierType,
    WeightRemapParameter,
    WeightRemapType,
)
from rpujax.inference import _random as _rnd

Array = jax.Array

__all__ = [
    "clip_weights",
    "clip_weights_torch",
    "modifier_amax",
    "modify_weights",
    "modify_weights_torch",
    "remap_weights",
    "remap_weights_torch",
]

# PCM_NOISE constants of aihwkit's CUDA kernel (programming polynomial in µS, read time in s).
_PCM_P0, _PCM_P1, _PCM_P2 = 0.26348, 1.9650, -1.1731
_PCM_T_READ = 250.0e-9


def _round_half_away(x: Array) -> Array:
    """C ``roundf``: halves round away from zero (``jnp.round`` rounds them to even)."""
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _discretize(value: Array, res: float, sto_round: bool, key: Array) -> Array:
    """RPUCuda ``getDiscretizedValueRound``: ``roundf(value/res (+ U - ½)) · res``; no-op if res <= 0."""
    if res <= 0:
        return value
    scaled = value / res
    if sto_round:
        scaled = scaled + _rnd.uniform(key, value.shape, value.dtype) - 0.5
    return _round_half_away(scaled) * res


def modifier_amax(modifier: WeightModifierParameter, weights: Array) -> Array:
    """``a_max`` of the RPUCuda modifier: ``max|W|`` (0 → 1), or ``assumed_wmax``.

    With ``copy_last_column`` the last column (analog bias) is left out of the maximum. COPY always
    uses ``assumed_wmax`` (it does not need a_max).
    """
    if not modifier.rel_to_actual_wmax or modifier.type is WeightModifierType.COPY:
        return jnp.asarray(modifier.assumed_wmax, weights.dtype)
    w = weights[:, :-1] if modifier.copy_last_column else weights
    if w.size == 0:
        return jnp.asarray(1.0, weights.dtype)
    amax = jnp.max(jnp.abs(w))
    return jnp.where(amax > 0, amax, 1.0).astype(weights.dtype)


def modify_weights(modifier: WeightModifierParameter, weights: Array, key: Array) -> Array:
    """Forward/backward weights of aihwkit's RPUCuda weight modifier (``modifyFBWeights``).

    Applies ``modifier.type`` (spec §4.2 table), then drop-connect (each weight zeroed with
    probability ``pdrop``), then restores the last column if ``copy_last_column``. NONE returns the
    weights unchanged (aihwkit's inference tile never calls the modifier for NONE).

    Args:
      modifier: the modifier config.
      weights: ``(D, X)`` tile weights.
      key: a ``jax.random`` key; every noise draw derives from it.

    Returns:
      ``(D, X)`` modified weights.
    """
    weights = jnp.asarray(weights)
    if weights.ndim != 2:
        raise ValueError(f"modify_weights: weights have shape {weights.shape}, expected (D, X)")
    kind = modifier.type
    if kind is WeightModifierType.NONE:
        return weights
    k_main, k_round, k_drop, k_extra = jax.random.split(key, 4)
    amax = modifier_amax(modifier, weights)
    w = weights
    shape, dtype = w.shape, w.dtype

    def normal() -> Array:
        return _rnd.normal(k_main, shape, dtype)

    if kind is WeightModifierType.DISCRETIZE:
        if modifier.res > 0:
            w = amax * _discretize(w / amax, modifier.res, modifier.sto_round, k_round)
    elif kind is WeightModifierType.MULT_NORMAL:
        if modifier.std_dev > 0:
            w = w + w * (modifier.std_dev * amax) * normal()
    elif kind is WeightModifierType.ADD_NORMAL:
        if modifier.std_dev > 0:
            w = w + (modifier.std_dev * amax) * normal()
    elif kind is WeightModifierType.DISCRETIZE_ADD_NORMAL:
        if modifier.res > 0 or modifier.std_dev > 0:
            w = amax * _discretize(w / amax, modifier.res, modifier.sto_round, k_round)
            w = w + (modifier.std_dev * amax) * normal()
    elif kind is WeightModifierType.DOREFA:
        if modifier.res > 0:
            scale = jnp.abs(modifier.dorefa_clip / jnp.tanh(amax))
            w = _discretize(jnp.tanh(w) * scale, modifier.res, modifier.sto_round, k_round)
    elif kind in (WeightModifierType.POLY, WeightModifierType.PROG_NOISE):
        if modifier.std_dev > 0 and modifier.coeffs:
            aw = jnp.abs(w) / amax
            sig = jnp.full_like(w, modifier.coeffs[0])
            power = jnp.ones_like(w)
            for c in modifier.coeffs[1:]:
                power = power * aw
                sig = sig + c * power
            if kind is WeightModifierType.POLY:
                w = w + amax * (sig * modifier.std_dev) * normal()
            else:
                # Noise mirrored at zero: the programmed weight keeps the sign of the target.
                mag = jnp.abs(w + amax * (sig * (modifier.std_dev / modifier.g_max)) * normal())
                w = jnp.where(w < 0, -mag, mag)
    elif kind is WeightModifierType.PCM_NOISE:
        w = _pcm_noise(modifier, w, amax, k_extra)
    elif kind in (WeightModifierType.DROP_CONNECT, WeightModifierType.COPY):
        pass
    else:  # pragma: no cover - the enum is closed
        raise ValueError(f"modify_weights: unknown modifier type {kind!r}")

    if modifier.pdrop > 0:
        drop = _rnd.uniform(k_drop, shape, dtype) < modifier.pdrop
        w = jnp.where(drop, jnp.zeros_like(w), w)
    if modifier.copy_last_column:
        w = w.at[:, -1].set(weights[:, -1])
    return w


def _pcm_noise(modifier: WeightModifierParameter, w: Array, amax: Array, key: Array) -> Array:
    """PCM_NOISE (aihwkit CUDA ``kernelModifyWeightsPCMNoise``): programming noise, drift-exponent
    variation (no mean drift) and 1/f noise at ``pcm_t_inference``, in conductance units."""
    keys = jax.random.split(key, 8)
    shape, dtype = w.shape, w.dtype
    g_max = modifier.g_max
    ns = modifier.std_dev
    t0 = modifier.pcm_t0
    t = modifier.pcm_t_inference + t0
    log_sqrt = math.sqrt(math.log((t + _PCM_T_READ) / (2.0 * _PCM_T_READ)))
    zero_thres = modifier.pcm_zero_thres * ns * _PCM_P0

    g = jnp.clip(w, -amax, amax) * g_max / amax
    g = jnp.where(jnp.abs(g) > zero_thres, g, 0.0)
    negative = g < 0
    if modifier.pcm_prob_at_reset > 0:
        g = jnp.where(_rnd.uniform(keys[0], shape, dtype) < modifier.pcm_prob_at_reset, 0.0, g)
    if modifier.pcm_prob_at_gmax > 0:
        hit = _rnd.uniform(keys[1], shape, dtype) < modifier.pcm_prob_at_gmax
        down = _rnd.uniform(keys[2], shape, dtype) > 0.5
        g = jnp.where(hit, jnp.where(down, g - g_max, g + g_max), g)
    if modifier.pcm_prob_at_random > 0:
        hit = _rnd.uniform(keys[3], shape, dtype) < modifier.pcm_prob_at_random
        value = _rnd.uniform(keys[4], shape, dtype) * g_max
        g = jnp.where(hit, jnp.where(g > 0, value, -value), g)
    g = jnp.clip(g, -g_max, g_max)

    ag_rel = jnp.abs(g / g_max)
    sig_prog = _PCM_P0 + ag_rel * _PCM_P1 + ag_rel * ag_rel * _PCM_P2
    g_prog = g + ns * sig_prog * _rnd.normal(keys[5], shape, dtype)
    ag_prog_rel = jnp.abs(g_prog / g_max)
    g_drift = g_prog
    if t > t0:
        sig_drift = jnp.clip(-0.0125 * jnp.log(jnp.maximum(ag_prog_rel, 1e-6)) - 0.0059, 0.008, 0.045)
        nu = jnp.abs(_rnd.normal(keys[6], shape, dtype) * sig_drift)
        g_drift = g_prog * jnp.exp(-nu * math.log(t / t0))
    q_s = jnp.minimum(0.0088 / jnp.maximum(ag_prog_rel**0.65, 1e-3), 0.2)
    g_final = g_drift + ns * jnp.abs(g_drift) * q_s * log_sqrt * _rnd.normal(keys[7], shape, dtype)
    w_final = g_final / g_max * amax
    w_final = jnp.where(negative, -jnp.abs(w_final), jnp.abs(w_final))
    return jnp.where(jnp.abs(g) > 0, w_final, 0.0)


def modify_weights_torch(
    modifier: WeightModifierParameter, weights: Array, key: Array, batch_size: int | None = None
) -> Array:
    """Modified weights of aihwkit's torch inference tile (``TorchSimulatorTile.modify_weight``).

    Formulas (spec §4.10): MULT_NORMAL ``w + w·std_dev·ξ``; ADD_NORMAL ``w + std_dev·a_max·ξ``;
    DISCRETIZE ``round(w/Δ (+U(−½,½)))·Δ`` with ``Δ = 2·a_max·res`` (``res > 1`` read as
    ``1/res``) and round-half-to-even; ``a_max = max|W|`` (no 0 → 1 guard) or ``assumed_wmax``.

    Args:
      modifier: the modifier config (validated by ``TorchInferenceRPUConfig``).
      weights: ``(D, X)`` tile weights.
      key: a ``jax.random`` key.
      batch_size: with ``modifier.per_batch_sample``, the number of samples; the result then has
        shape ``(batch_size, D, X)`` (one independent draw per sample).
    """
    weights = jnp.asarray(weights)
    kind = modifier.type
    if kind in (WeightModifierType.NONE, WeightModifierType.COPY):
        return weights
    shape = weights.shape
    if modifier.per_batch_sample:
        if batch_size is None:
            raise ValueError("modify_weights_torch: per_batch_sample needs batch_size")
        shape = (batch_size, *weights.shape)
    dtype = weights.dtype
    if kind is WeightModifierType.MULT_NORMAL:
        return weights + weights * modifier.std_dev * _rnd.normal(key, shape, dtype)
    amax = jnp.max(jnp.abs(weights)) if modifier.rel_to_actual_wmax else jnp.asarray(modifier.assumed_wmax, dtype)
    if kind is WeightModifierType.ADD_NORMAL:
        return weights + modifier.std_dev * amax * _rnd.normal(key, shape, dtype)
    if kind is WeightModifierType.DISCRETIZE:
        res = 1.0 / modifier.res if modifier.res > 1.0 else modifier.res
        if res <= 0:
            raise ValueError(f"modify_weights_torch: DISCRETIZE needs res > 0, got {modifier.res!r}")
        step = res * 2.0 * amax
        scaled = jnp.broadcast_to(weights, shape) / step
        if modifier.sto_round:
            scaled = scaled + _rnd.uniform(key, shape, dtype, -0.5, 0.5)
        return jnp.round(scaled) * step
    raise ValueError(
        f"modify_weights_torch: modifier type {kind.name} is not supported by the torch tile "
        "(NONE, COPY, MULT_NORMAL, ADD_NORMAL, DISCRETIZE)"
    )


def _clip_value(clip: WeightClipParameter, weights: Array) -> Array | float:
    kind = clip.type
    if kind is WeightClipType.FIXED_VALUE:
        return clip.fixed_value
    if kind is WeightClipType.LAYER_GAUSSIAN:
        value = jnp.std(weights, ddof=1) * clip.sigma
    elif kind is WeightClipType.AVERAGE_CHANNEL_MAX:
        value = jnp.abs(jnp.mean(jnp.max(jnp.abs(weights), axis=1)))
    else:
        return -1.0
    if clip.fixed_value > 0:
        value = jnp.minimum(value, clip.fixed_value)
    return value


def clip_weights(clip: WeightClipParameter, weights: Array) -> Array:
    """Clip the weights of an inference (ideal-device) tile to ``[-c, c]`` (RPUCuda ``WeightClipper``).

    ``c`` is ``fixed_value`` (FIXED_VALUE), ``sigma·std(W)`` with the ``N−1`` std over all weights
    (LAYER_GAUSSIAN) or the mean over rows of the row abs-max (AVERAGE_CHANNEL_MAX), the latter two
    capped by ``fixed_value`` when it is > 0. Nothing happens when ``c <= 0`` or the type is NONE.
    """
    weights = jnp.asarray(weights)
    if clip.type is WeightClipType.NONE:
        return weights
    c = _clip_value(clip, weights)
    if isinstance(c, float):
        return jnp.clip(weights, -c, c) if c > 0 else weights
    return jnp.where(c > 0, jnp.clip(weights, -c, c), weights)


def clip_weights_torch(clip: WeightClipParameter, weights: Array) -> Array:
    """Clip as aihwkit's torch tile does (FIXED_VALUE with ``fixed_value > 0``, LAYER_GAUSSIAN)."""
    weights = jnp.asarray(weights)
    if clip.type is WeightClipType.NONE:
        return weights
    if clip.type is WeightClipType.FIXED_VALUE:
        return jnp.clip(weights, -clip.fixed_value, clip.fixed_value)
    if clip.type is WeightClipType.LAYER_GAUSSIAN:
        c = jnp.std(weights, ddof=1) * clip.sigma
        if clip.fixed_value > 0:
            c = jnp.minimum(c, clip.fixed_value)
        return jnp.clip(weights, -c, c)
    raise ValueError(f"clip_weights_torch: clip type {clip.type.name} is not supported by the torch tile")


def remap_weights(remap: WeightRemapParameter, weights: Array, scales: Array) -> tuple[Array, Array]:
    """Remap tile weights into ``[-remapped_wmax, remapped_wmax]``, moving the factor into ``scales``.

    RPUCuda ``WeightRemapper`` (spec §4.4). The logical weights ``scales[:, None] · W`` are
    unchanged (up to rounding) except in the bounded channel-wise mode, where capped scales leave
    rows larger than 1.

    Args:
      remap: the remap config.
      weights: ``(D, X)`` tile weights.
      scales: ``(D,)`` current mapping scales.

    Returns:
      ``(new weights, new scales)``.
    """
    weights = jnp.asarray(weights)
    scales = jnp.asarray(scales)
    if scales.shape != weights.shape[:1]:
        raise ValueError(f"remap_weights: scales have shape {scales.shape}, expected {weights.shape[:1]}")
    kind = remap.type
    if kind is WeightRemapType.NONE:
        return weights, scales
    if kind is WeightRemapType.LAYERWISE_SYMMETRIC:
        m = jnp.max(jnp.abs(weights)) / remap.remapped_wmax
        ok = m > 0
        m_safe = jnp.where(ok, m, 1.0)
        return weights / m_safe, scales * m_safe
    row_max = jnp.max(jnp.abs(weights), axis=1)
    if remap.max_scale_range <= 0:
        m = row_max / remap.remapped_wmax
        m = jnp.where(m > 0, m, 1.0)
        return weights / m[:, None], scales * m
    s_min = jnp.maximum(jnp.min(scales), 0.0)
    if remap.max_scale_ref:
        s_min = jnp.where(s_min > 0, jnp.maximum(s_min, remap.max_scale_ref), s_min)
    new = jnp.where(row_max > 0, row_max * scales, scales)
    new = jnp.where((s_min > 0) & (new / jnp.where(s_min > 0, s_min, 1.0) > remap.max_scale_range),
                    s_min * remap.max_scale_range, new)
    return weights * (scales / new)[:, None], new


def remap_weights_torch(remap: WeightRemapParameter, weights: Array, scales: Array) -> tuple[Array, Array]:
    """Remap as aihwkit's torch tile: the new scale is the (row or global) abs-max of ``scales·W``.

    All-zero rows keep their scale (aihwkit divides by zero there, yielding NaN weights).
    """
    weights = jnp.asarray(weights)
    scales = jnp.asarray(scales)
    if scales.shape != weights.shape[:1]:
        raise ValueError(f"remap_weights_torch: scales have shape {scales.shape}, expected {weights.shape[:1]}")
    if remap.type is WeightRemapType.NONE:
        return weights, scales
    scaled = weights * scales[:, None]
    if remap.type is WeightRemapType.LAYERWISE_SYMMETRIC:
        new = jnp.max(jnp.abs(scaled))
        new = jnp.where(new > 0, new, 1.0)
        return scaled / new, jnp.full_like(scales, new)
    new = jnp.max(jnp.abs(scaled), axis=1)
    new = jnp.where(new > 0, new, scales)
    return scaled / new[:, None], new
