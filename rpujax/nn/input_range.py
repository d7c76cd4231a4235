"""Input range of a tile's digital periphery (aihwkit ``InputRangeParameter``, spec §1.4–§1.6, §2.4).

Per tile, a scalar range ``r`` (input units):

* forward: the tile sees ``x̃ = clip(x, −|r|, |r|) / r`` and its output is multiplied by ``r``
  (:func:`clip_input`, :func:`scale_output`);
* training-mode data initialisation, for the first ``init_from_data`` batches with ``std(x) > 0``:
  ``r ← (r·k + init_std_alpha·std(x)) / (k + 1)``, ``k ← k + 1``, ``r ← |r|`` (:func:`data_init`);
* gradients (custom VJPs, no autodiff through the clip, the division or the product): the input
  gradient is the tile's backward output ``δ`` unchanged (straight-through, also for clipped
  inputs) and the output error reaches the tile unscaled by ``r``; the gradient of ``r`` is only
  spec §2.4's formula::

      G = Σ min(δ·[x ≥ r], 0) − Σ max(δ·[x ≤ −r], 0)
      G ← G · r · gradient_scale                       (gradient_relative)
      G ← G − f_out · r · [1 − f_out < output_min_percentage]   (manage_output_clipping)
      G ← G + decay · r · [mean(|x| < r) > input_min_percentage] (decay > 0)

  with ``f_out`` the number of outputs at the forward out bound divided by ``numel(δ)`` (aihwkit's
  denominator, the size of the *input* gradient).

Together the two VJPs give exactly aihwkit's ``dx = TILE.backward(g·s_map)`` (with the out-bound
mask), so this also holds for a non-linear (noisy, quantised) backward IO.

Differences from aihwkit 1.2.0:

* The update input ``x_u = clip(x, −|r|, |r|)/r`` is formed in the forward pass with that pass's
  (data-initialised) ``r``. aihwkit stores the raw ``x`` and re-applies the range when the
  optimizer updates the tile, after its digital step has already moved ``r`` by ``−lr·G``; the
  two differ by that one step of ``r``.
* ``std(x)`` of the data initialisation is exactly 0 for a constant batch (a float32 mean may
  otherwise leave a rounding residue and count a batch aihwkit skips).
* ``manage_output_clipping``: inference tiles apply remapping scales inside the tile function; the
  out-bound test divides them out again (float rounding may flip an output within one ulp of the
  bound). The torch inference tile has no output-clipping term (spec §4.10), here either.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rpujax.configs.pre_post import InputRangeParameter

Array = jax.Array

__all__ = ["clip_input", "data_init", "range_gradient", "scale_output"]


def data_init(params: InputRangeParameter, r: Array, k: Array, x: Array) -> tuple[Array, Array]:
    """One training-mode data-initialisation step of a tile's input range (spec §2.4).

    Args:
      params: the input-range settings.
      r: scalar current range.
      k: scalar int counter of data-initialisation steps done so far.
      x: the tile's input batch (any shape); ``std`` over all its values, with Bessel's
        correction (torch's ``Tensor.std()`` default, which aihwkit calls).

    Returns:
      ``(r, k)`` updated; unchanged once ``k ≥ init_from_data`` or when ``std(x) = 0``. No gradient
      flows through the update (the caller adds it as a constant shift of ``r``).
    """
    x = jax.lax.stop_gradient(x)
    r0 = jax.lax.stop_gradient(r)
    active = k < params.init_from_data
    n = x.size
    std = jnp.std(x, ddof=1) if n > 1 else jnp.zeros((), x.dtype)
    # a constant batch has std 0 exactly (torch's Welford std gives 0; a float32 mean via a sum
    # may not, which would count a batch that aihwkit skips)
    std = jnp.where(jnp.max(x) == jnp.min(x), 0.0, std) if n > 1 else std
    use = active & (std > 0)
    kf = k.astype(r0.dtype)
    r_new = jnp.where(use, (r0 * kf + params.init_std_alpha * std) / (kf + 1), r0)
    r_new = jnp.where(active, jnp.abs(r_new), r_new)
    return r_new, jnp.where(use, k + 1, k)


def range_gradient(params: InputRangeParameter, x: Array, r: Array, delta: Array) -> Array:
    """The clip and decay terms of the gradient of ``r`` (spec §2.4), a scalar.

    Args:
      params: the input-range settings.
      x: the original tile input (before clipping), ``(N, in)``.
      r: the scalar range used in the forward pass.
      delta: the tile's backward output for that input (``∂L/∂x̃``), same shape as ``x``.
    """
    upper = jnp.sum(jnp.minimum(jnp.where(x >= r, delta, 0.0), 0.0))
    lower = jnp.sum(jnp.maximum(jnp.where(x <= -r, delta, 0.0), 0.0))
    g = upper - lower
    if params.gradient_relative:
        g = g * r * params.gradient_scale
    if params.decay > 0:
        p_in = jnp.mean((jnp.abs(x) < r).astype(r.dtype))
        g = g + jnp.where(p_in > params.input_min_percentage, params.decay * r, 0.0)
    return g.astype(r.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def clip_input(params: InputRangeParameter, x: Array, r: Array) -> Array:
    """``x̃ = clip(x, −|r|, |r|) / r`` (``r`` scalar).

    VJP: ``∂x = δ`` (straight-through, the incoming cotangent unchanged, clipped inputs included);
    ``∂r`` = :func:`range_gradient` (clip and decay terms only).
    """
    a = jnp.abs(r)
    return jnp.clip(x, -a, a) / r


def _clip_input_fwd(params: InputRangeParameter, x: Array, r: Array):
    return clip_input(params, x, r), (x, r)


def _clip_input_bwd(params: InputRangeParameter, res, delta: Array):
    x, r = res
    return delta, range_gradient(params, x, r, delta)


clip_input.defvjp(_clip_input_fwd, _clip_input_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def scale_output(params: InputRangeParameter, y: Array, r: Array, clipped_fraction: Array) -> Array:
    """``y · r`` (``r`` scalar).

    VJP: ``∂y`` = the incoming cotangent unchanged (aihwkit multiplies by ``r`` outside autograd, so
    the tile's backward sees ``g·s_map``, not ``g·s_map·r``); ``∂r`` = the output-clipping term
    ``−f·r·[1 − f < output_min_percentage]`` with ``f = clipped_fraction`` when
    ``manage_output_clipping`` (else 0). ``clipped_fraction`` gets no gradient.
    """
    del clipped_fraction
    return y * r


def _scale_output_fwd(params: InputRangeParameter, y: Array, r: Array, clipped_fraction: Array):
    return scale_output(params, y, r, clipped_fraction), (r, clipped_fraction)


def _scale_output_bwd(params: InputRangeParameter, res, g: Array):
    r, f = res
    if params.manage_output_clipping:
        p_out = 1.0 - f
        dr = jnp.where(p_out < params.output_min_percentage, -f * r, 0.0).astype(r.dtype)
    else:
        dr = jnp.zeros_like(r)
    return g, dr, jnp.zeros_like(f)


scale_output.defvjp(_scale_output_fwd, _scale_output_bwd)
