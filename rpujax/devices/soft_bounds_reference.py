"""SoftBoundsReference (kind 5, spec tile-core §4.6)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.devices import SoftBoundsReferenceDevice
from rpujax.devices.base import clip_bounds, extra_normal

Array = jax.Array

PARAM_NAMES = ("max_bound", "min_bound", "dwmin_up", "dwmin_down", "reference")
EXTRA_NAMES = ("reference",)


def sample_extras(
    device: SoftBoundsReferenceDevice, key: Array, base: dict[str, Array], dtype: Any
) -> dict[str, Array]:
    """Bound rescaling, ``reference`` and the symmetry-point shift (spec §4.6).

    Where ``b_max > 0 > b_min``: ``b_max ← b_max/|1 + slope_up_dtod·ξ|``,
    ``b_min ← b_min/|1 + slope_down_dtod·ξ'|``. ``reference = reference_mean + reference_std·ξ''``.
    With ``subtract_symmetry_point`` (and straddling bounds) ``sp = (s_up − s_down) /
    (s_up/b_max − s_down/b_min)`` is added to ``reference`` **and** ``reset_bias``.
    Returns the updated ``max_bound``, ``min_bound``, ``reset_bias`` and ``reference``.
    """
    shape = base["max_bound"].shape
    b_max, b_min = base["max_bound"], base["min_bound"]
    s_up, s_down = base["dwmin_up"], base["dwmin_down"]
    straddle = (b_max > 0) & (b_min < 0)
    if device.slope_up_dtod > 0 or device.slope_down_dtod > 0:
        f_up = jnp.abs(1.0 + device.slope_up_dtod * extra_normal(key, 0, shape, dtype))
        f_down = jnp.abs(1.0 + device.slope_down_dtod * extra_normal(key, 1, shape, dtype))
        b_max = jnp.where(straddle, b_max / f_up, b_max)
        b_min = jnp.where(straddle, b_min / f_down, b_min)
        straddle = (b_max > 0) & (b_min < 0)
    reference = device.reference_mean + device.reference_std * extra_normal(key, 2, shape, dtype)
    reset_bias = base["reset_bias"]
    if device.subtract_symmetry_point:
        safe_max = jnp.where(straddle, b_max, 1.0)
        safe_min = jnp.where(straddle, b_min, -1.0)
        sp = (s_up - s_down) / (s_up / safe_max - s_down / safe_min)
        sp = jnp.where(straddle, sp, 0.0)
        reference = reference + sp
        reset_bias = reset_bias + sp
    return {
        "max_bound": b_max.astype(dtype),
        "min_bound": b_min.astype(dtype),
        "reset_bias": reset_bias.astype(dtype),
        "reference": jnp.broadcast_to(reference, shape).astype(dtype),
    }


def scalars(device: SoftBoundsReferenceDevice) -> tuple[float, ...]:
    """``(dw_min_std, mult_noise (0/1), write_noise = write_noise_std·dw_min)``."""
    return (
        float(device.dw_min_std),
        1.0 if device.mult_noise else 0.0,
        float(device.write_noise_std * device.dw_min),
    )


def granularity(device: SoftBoundsReferenceDevice) -> float:
    return float(device.dw_min)


def pulse(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One SoftBoundsReference pulse on the conductance ``c = w + ref``, then clip ``c``.

    ``σ = scalars[0]``. Up: ``a = c/b_max`` if ``b_max > 0`` else 0; multiplicative
    (``scalars[1] == 1``) ``c + s_up·(1 − a)·(1 + σξ)``, additive ``c + s_up·(1 − a + σξ)``.
    Down: ``a = c/b_min`` if ``b_min < 0`` else 0; ``c − s_down·(1 − a)·(1 + σξ)`` or
    ``c − s_down·(1 − a + σξ)``. Then ``c ← MIN(MAX(c, b_min), b_max)``, ``w = c − ref``.
    """
    b_max, b_min, s_up, s_down, ref = params
    sigma, mult = scalars[0], scalars[1]
    c = w + ref
    a_up = jnp.where(b_max > 0, c / jnp.where(b_max > 0, b_max, 1.0), 0.0)
    a_dn = jnp.where(b_min < 0, c / jnp.where(b_min < 0, b_min, -1.0), 0.0)
    if mult:
        noise = 1.0 + sigma * xi
        up = c + s_up * (1.0 - a_up) * noise
        dn = c - s_down * (1.0 - a_dn) * noise
    else:
        up = c + s_up * (1.0 - a_up + sigma * xi)
        dn = c - s_down * (1.0 - a_dn + sigma * xi)
    c = clip_bounds(jnp.where(down, dn, up), b_min, b_max)
    return c - ref
