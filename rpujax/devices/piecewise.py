"""PiecewiseStep (kind 6, spec tile-core §4.10)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rpujax.configs.devices import PiecewiseStepDevice
from rpujax.devices.base import clip_bounds, cmax, cmin

Array = jax.Array

PARAM_NAMES = ("max_bound", "min_bound", "dwmin_up", "dwmin_down")


def scalars(device: PiecewiseStepDevice) -> tuple[float, ...]:
    """``(dw_min_std, write_noise = write_noise_std·dw_min, n_nodes, up nodes…, down nodes…)``."""
    return (
        float(device.dw_min_std),
        float(device.write_noise_std * device.dw_min),
        float(len(device.piecewise_up)),
        *(float(x) for x in device.piecewise_up),
        *(float(x) for x in device.piecewise_down),
    )


def granularity(device: PiecewiseStepDevice) -> float:
    """``dw_min·piecewise_up[len // 2]``."""
    return float(device.dw_min * device.piecewise_up[len(device.piecewise_up) // 2])


def pulse(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One PiecewiseStep pulse, then clip.

    ``σ = scalars[0]``, ``N = scalars[2]`` nodes ``v_up = scalars[3:3+N]``,
    ``v_down = scalars[3+N:3+2N]``, ``m = N − 1``; ``v`` = the nodes of the pulse direction.
    If ``m == 0`` or ``b_max ≤ b_min``: ``step = v[0]·s``. Else
    ``u = MAX((w − b_min)/(b_max − b_min)·m, 0)``, ``k = MIN(floor(u), m − 1)``,
    ``t = MIN(u − k, 1)``, ``step = s·((1 − t)·v[k] + t·v[k+1])``.
    Up ``w + step_up·(1 + σξ)``, down ``w − step_down·(1 + σξ)``; then
    ``w ← MIN(MAX(w, b_min), b_max)``.
    """
    b_max, b_min, s_up, s_down = params
    sigma = scalars[0]
    n_nodes = int(scalars[2])
    v_up = jnp.asarray(scalars[3:3 + n_nodes], w.dtype)
    v_dn = jnp.asarray(scalars[3 + n_nodes:3 + 2 * n_nodes], w.dtype)
    m = n_nodes - 1
    if m == 0:
        step_up = v_up[0] * s_up
        step_dn = v_dn[0] * s_down
    else:
        rng = b_max - b_min
        flat = rng <= 0
        u = cmax((w - b_min) / jnp.where(flat, 1.0, rng) * m, 0.0)
        k = cmin(jnp.floor(u), float(m - 1))
        t = cmin(u - k, 1.0)
        k_i = jnp.where(flat, 0, k).astype(jnp.int32)
        t = jnp.where(flat, 0.0, t)
        step_up = s_up * ((1.0 - t) * v_up[k_i] + t * v_up[k_i + 1])
        step_dn = s_down * ((1.0 - t) * v_dn[k_i] + t * v_dn[k_i + 1])
    noise = 1.0 + sigma * xi
    w_new = jnp.where(down, w - step_dn * noise, w + step_up * noise)
    return clip_bounds(w_new, b_min, b_max)
