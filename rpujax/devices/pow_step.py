"""PowStep (kind 3, spec tile-core §4.8) and PowStepReference (kind 4, §4.9)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.devices import PowStepDevice, PowStepReferenceDevice
from rpujax.devices.base import clip_bounds, extra_normal

Array = jax.Array

POW_PARAM_NAMES = ("max_bound", "min_bound", "dwmin_up", "dwmin_down", "gamma_up", "gamma_down")
REF_PARAM_NAMES = POW_PARAM_NAMES + ("reference",)
POW_EXTRA_NAMES = ("gamma_up", "gamma_down")
REF_EXTRA_NAMES = ("gamma_up", "gamma_down", "reference")

MAX_ESTIMATION_STEPS = 10000


def _sample_gammas(
    device: PowStepDevice | PowStepReferenceDevice, key: Array, shape: tuple[int, ...], dtype: Any
) -> tuple[Array, Array]:
    """``G = 1 + pow_gamma_dtod·ξ``, ``r = pow_up_down_dtod·ξ'``, ``γ⁺ = (ub + G + r)·pow_gamma``,
    ``γ⁻ = (db + G − r)·pow_gamma`` with ``ub = min(pow_up_down, 0)``, ``db = −max(pow_up_down, 0)``;
    absolute values under ``enforce_consistency``."""
    gain = 1.0 + device.pow_gamma_dtod * extra_normal(key, 0, shape, dtype)
    r = device.pow_up_down_dtod * extra_normal(key, 1, shape, dtype)
    ub = min(device.pow_up_down, 0.0)
    db = -max(device.pow_up_down, 0.0)
    g_up = (ub + gain + r) * device.pow_gamma
    g_down = (db + gain - r) * device.pow_gamma
    if device.enforce_consistency:
        g_up, g_down = jnp.abs(g_up), jnp.abs(g_down)
    return g_up.astype(dtype), g_down.astype(dtype)


def sample_extras_pow(
    device: PowStepDevice, key: Array, base: dict[str, Array], dtype: Any
) -> dict[str, Array]:
    """``gamma_up``, ``gamma_down`` (spec §4.8)."""
    g_up, g_down = _sample_gammas(device, key, base["max_bound"].shape, dtype)
    return {"gamma_up": g_up, "gamma_down": g_down}


@functools.partial(jax.jit, static_argnums=(6,))
def symmetry_point(
    s_up: Array, s_down: Array, b_max: Array, b_min: Array, g_up: Array, g_down: Array, n_steps: int
) -> Array:
    """Numerical symmetry point of a PowStep device (spec §4.9).

    From ``sp = 0`` iterate ``sp += −s_down·((sp − b_min)/R)^{γ⁻} + s_up·((b_max − sp)/R)^{γ⁺}``
    (``R = b_max − b_min``) ``n`` times, ``n = n_steps`` if > 0, else per element
    ``min(round(10·R/min(|s_down|, |s_up|)), 10000)``. Only meaningful where ``b_max > 0 > b_min``.
    Compiled once per shape (the loop would otherwise be re-traced on every eager call); up to
    10000 iterations over the whole tile, the same work aihwkit does at construction.
    """
    rng = b_max - b_min
    safe_rng = jnp.where(rng != 0, rng, 1.0)
    if n_steps > 0:
        n = jnp.full(s_up.shape, n_steps, jnp.int32)
    else:
        smallest = jnp.minimum(jnp.abs(s_down), jnp.abs(s_up))
        est = jnp.round(10.0 * (rng / jnp.where(smallest > 0, smallest, 1.0)))
        est = jnp.where(smallest > 0, est, MAX_ESTIMATION_STEPS)
        n = jnp.clip(est, 0, MAX_ESTIMATION_STEPS).astype(jnp.int32)
    n_max = jnp.max(n) if n.size else jnp.asarray(0, jnp.int32)

    def body(carry: tuple[Array, Array]) -> tuple[Array, Array]:
        i, sp = carry
        step = -s_down * jnp.power((sp - b_min) / safe_rng, g_down) + s_up * jnp.power(
            (b_max - sp) / safe_rng, g_up
        )
        return i + 1, jnp.where(i < n, sp + step, sp)

    _, sp = jax.lax.while_loop(lambda c: c[0] < n_max, body, (jnp.asarray(0, jnp.int32), jnp.zeros_like(s_up)))
    return sp


def sample_extras_reference(
    device: PowStepReferenceDevice, key: Array, base: dict[str, Array], dtype: Any
) -> dict[str, Array]:
    """``gamma_up``, ``gamma_down``, ``reference = reference_mean + reference_std·ξ`` and, with
    ``subtract_symmetry_point`` and ``b_max > 0 > b_min``, the symmetry point added to
    ``reference`` **and** ``reset_bias`` (spec §4.9)."""
    shape = base["max_bound"].shape
    g_up, g_down = _sample_gammas(device, key, shape, dtype)
    reference = device.reference_mean + device.reference_std * extra_normal(key, 2, shape, dtype)
    reset_bias = base["reset_bias"]
    if device.subtract_symmetry_point:
        b_max, b_min = base["max_bound"], base["min_bound"]
        straddle = (b_max > 0) & (b_min < 0)
        sp = symmetry_point(base["dwmin_up"], base["dwmin_down"], b_max, b_min, g_up, g_down,
                            device.n_estimation_steps)
        sp = jnp.where(straddle, sp, 0.0)
        reference = reference + sp
        reset_bias = reset_bias + sp
    return {
        "gamma_up": g_up,
        "gamma_down": g_down,
        "reference": jnp.broadcast_to(reference, shape).astype(dtype),
        "reset_bias": reset_bias.astype(dtype),
    }


def scalars_pow(device: PowStepDevice) -> tuple[float, ...]:
    """``(dw_min_std, write_noise = write_noise_std·dw_min)``."""
    return (float(device.dw_min_std), float(device.write_noise_std * device.dw_min))


def scalars_reference(device: PowStepReferenceDevice) -> tuple[float, ...]:
    """``(dw_min_std,)``."""
    return (float(device.dw_min_std),)


def granularity(device: PowStepDevice | PowStepReferenceDevice) -> float:
    """``dw_min·0.5^pow_gamma`` (the step at mid range)."""
    return float(device.dw_min * 0.5**device.pow_gamma)


def _pow_rule(sigma: float, c: Array, b_max: Array, b_min: Array, s_up: Array, s_down: Array,
              g_up: Array, g_down: Array, down: Array, xi: Array) -> Array:
    rng = b_max - b_min
    active = rng != 0
    safe = jnp.where(active, rng, 1.0)
    noise = 1.0 + sigma * xi
    up = c + s_up * jnp.power((b_max - c) / safe, g_up) * noise
    dn = c - s_down * jnp.power((c - b_min) / safe, g_down) * noise
    return jnp.where(active, clip_bounds(jnp.where(down, dn, up), b_min, b_max), c)


def pulse_pow(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One PowStep pulse.

    Skipped (``w`` unchanged, not clipped) where ``R = b_max − b_min == 0``. Else, ``σ = scalars[0]``:
    up ``w + s_up·((b_max − w)/R)^{γ⁺}·(1 + σξ)``, down ``w − s_down·((w − b_min)/R)^{γ⁻}·(1 + σξ)``,
    then ``w ← MIN(MAX(w, b_min), b_max)`` (C semantics: a NaN from a negative base with a
    non-integer exponent becomes ``b_min``).
    """
    b_max, b_min, s_up, s_down, g_up, g_down = params
    return _pow_rule(scalars[0], w, b_max, b_min, s_up, s_down, g_up, g_down, down, xi)


def pulse_reference(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One PowStepReference pulse: ``c = w + ref``; skipped (``w`` unchanged) where
    ``b_max == b_min``; else the PowStep rule and clip on ``c`` with the device bounds, then
    ``w = c − ref``. ``σ = scalars[0]``."""
    b_max, b_min, s_up, s_down, g_up, g_down, ref = params
    c = w + ref
    c_new = _pow_rule(scalars[0], c, b_max, b_min, s_up, s_down, g_up, g_down, down, xi)
    return jnp.where(b_max - b_min != 0, c_new - ref, w)
