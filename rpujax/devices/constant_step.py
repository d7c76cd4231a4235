"""ConstantStep (kind 0, spec tile-core §4.4) and its exact summed form (ffi/README.md §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rpujax.configs.devices import ConstantStepDevice
from rpujax.devices.base import XI_MAX, clip_bounds

Array = jax.Array

PARAM_NAMES = ("max_bound", "min_bound", "dwmin_up", "dwmin_down")


def scalars(device: ConstantStepDevice) -> tuple[float, ...]:
    """``(dw_min_std,)``."""
    return (float(device.dw_min_std),)


def granularity(device: ConstantStepDevice) -> float:
    return float(device.dw_min)


def pulse(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One ConstantStep pulse, then clip.

    ``σ = scalars[0]``; up: ``w + s_up·(1 + σξ)``; down: ``w − s_down·(1 + σξ)``;
    ``w ← MIN(MAX(w, b_min), b_max)``.
    """
    b_max, b_min, s_up, s_down = params
    sigma = scalars[0]
    noise = 1.0 + sigma * xi
    w_new = jnp.where(down, w - s_down * noise, w + s_up * noise)
    return clip_bounds(w_new, b_min, b_max)


def summed(
    scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, n: Array, xi: Array
) -> tuple[Array, Array]:
    """``n`` ConstantStep pulses of one direction as one draw, where that is exact.

    Returns ``(w_summed, ok)``: ``w_summed = w ∓ (n·s + s·σ·sqrt(n)·ξ)`` with ``s = s_down`` (down)
    or ``s_up`` (up), and ``ok`` the guard ``w − n·|s|·(1 + XI_MAX·σ) ≥ b_min`` and
    ``w + n·|s|·(1 + XI_MAX·σ) ≤ b_max`` under which no pulse of the per-pulse process could
    have been clipped. Where ``ok`` is False the caller must apply the pulses one by one.
    ``n = 0`` gives ``w`` unchanged (and ``ok`` True whenever ``w`` is inside its bounds).
    """
    b_max, b_min, s_up, s_down = params
    sigma = scalars[0]
    s = jnp.where(down, s_down, s_up)
    nf = n.astype(w.dtype)
    delta = nf * s + s * sigma * jnp.sqrt(nf) * xi
    w_new = jnp.where(down, w - delta, w + delta)
    reach = nf * jnp.abs(s) * (1.0 + XI_MAX * sigma)
    ok = (w - reach >= b_min) & (w + reach <= b_max)
    return w_new, ok
