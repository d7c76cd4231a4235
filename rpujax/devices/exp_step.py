"""ExpStep (kind 2, spec tile-core §4.7)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rpujax.configs.devices import ExpStepDevice
from rpujax.devices.base import clip_bounds, cmax

Array = jax.Array

PARAM_NAMES = ("max_bound", "min_bound", "dwmin_up", "dwmin_down")


def scalars(device: ExpStepDevice) -> tuple[float, ...]:
    """``(dw_min_std, A_up, A_down, gamma_up, gamma_down, a, b, dw_min_std_add,
    dw_min_std_slope, write_noise = write_noise_std·dw_min)``."""
    return (
        float(device.dw_min_std),
        float(device.A_up),
        float(device.A_down),
        float(device.gamma_up),
        float(device.gamma_down),
        float(device.a),
        float(device.b),
        float(device.dw_min_std_add),
        float(device.dw_min_std_slope),
        float(device.write_noise_std * device.dw_min),
    )


def granularity(device: ExpStepDevice) -> float:
    """The mean down step at ``w = 0`` (``z = b``): ``(1 + down_bias)·dw_min·max(1 −
    A_down·e^{−gamma_down·b}, 0)`` with ``down_bias = −max(up_down, 0)``; ``dw_min`` if that is
    ≤ 0 (aihwkit averages the down step with itself; the up step is not used)."""
    down_bias = -max(device.up_down, 0.0)
    scale_down = (down_bias + 1.0) * device.dw_min
    dw_down = scale_down * max(1.0 - device.A_down * math.exp(-device.gamma_down * device.b), 0.0)
    g = max((dw_down + dw_down) / 2.0, 0.0)
    return float(g) if g > 0 else float(device.dw_min)


def pulse(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One ExpStep pulse.

    Skipped (``w`` returned unchanged, not clipped) where ``R = b_max − b_min ≤ 0``. Else
    ``z = (2·w/R)·a + b``; down: ``y = MAX(1 − A_down·e^{−gamma_down·z}, 0)``, ``Δ = −y·s_down``;
    up: ``y = MAX(1 − A_up·e^{gamma_up·z}, 0)``, ``Δ = y·s_up``. Simple noise:
    ``w + Δ·(1 + σξ)``; complex noise (``σ > 0`` and (``add ≠ 0`` or ``slope ≠ 0``)):
    ``w + Δ + σ·(|Δ| + add + slope·|w|)·ξ``. Then ``w ← MIN(MAX(w, b_min), b_max)``.
    ``MAX`` is C's (a NaN first argument gives 0).
    """
    b_max, b_min, s_up, s_down = params
    sigma, a_up, a_down, g_up, g_down, ea, eb, std_add, std_slope = scalars[:9]
    rng = b_max - b_min
    active = rng > 0
    z = (2.0 * w / jnp.where(active, rng, 1.0)) * ea + eb
    y_dn = cmax(1.0 - a_down * jnp.exp(-g_down * z), 0.0)
    y_up = cmax(1.0 - a_up * jnp.exp(g_up * z), 0.0)
    delta = jnp.where(down, -y_dn * s_down, y_up * s_up)
    if sigma > 0 and (std_add != 0 or std_slope != 0):
        w_new = w + delta + sigma * (jnp.abs(delta) + std_add + std_slope * jnp.abs(w)) * xi
    else:
        w_new = w + delta * (1.0 + sigma * xi)
    return jnp.where(active, clip_bounds(w_new, b_min, b_max), w)
