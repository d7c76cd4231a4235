"""LinearStep and SoftBounds(+Pmax) (kind 1, spec tile-core §4.5, §4.6)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.devices import LinearStepDevice, SoftBoundsDevice
from rpujax.devices.base import clip_bounds, extra_normal

Array = jax.Array

PARAM_NAMES = ("max_bound", "min_bound", "dwmin_up", "dwmin_down", "slope_up", "slope_down")
EXTRA_NAMES = ("slope_up", "slope_down")


def _slope_settings(device: LinearStepDevice | SoftBoundsDevice) -> tuple[float, float, float, float, bool, bool]:
    """(gamma_up, gamma_down, gamma_up_dtod, gamma_down_dtod, allow_increasing, mean_bound_reference);
    SoftBounds is the LinearStep with gamma 1, no dtod, per-device bound references."""
    if isinstance(device, SoftBoundsDevice):
        return 1.0, 1.0, 0.0, 0.0, False, False
    return (device.gamma_up, device.gamma_down, device.gamma_up_dtod, device.gamma_down_dtod,
            device.allow_increasing, device.mean_bound_reference)


def sample_extras(
    device: LinearStepDevice | SoftBoundsDevice, key: Array, base: dict[str, Array], dtype: Any
) -> dict[str, Array]:
    """``slope_up``, ``slope_down`` (spec §4.5): ``Γ± = gamma ± dtod·ξ`` (``|Γ|`` unless
    ``allow_increasing``), ``slope_up = −Γ⁺·s_up/ref_up``, ``slope_down = −Γ⁻·s_down/ref_down``
    (0 where the reference is 0), references at the mean bounds (``mean_bound_reference``) or the
    device's bounds, moved to the opposite bound ∓ ``reverse_offset`` by ``reverse_up/down``."""
    g_up, g_down, g_up_dtod, g_down_dtod, allow_increasing, mean_ref = _slope_settings(device)
    shape = base["max_bound"].shape
    gamma_up = g_up + g_up_dtod * extra_normal(key, 0, shape, dtype)
    gamma_down = g_down + g_down_dtod * extra_normal(key, 1, shape, dtype)
    if not allow_increasing:
        gamma_up = jnp.abs(gamma_up)
        gamma_down = jnp.abs(gamma_down)

    if mean_ref:
        hi, lo = device.w_max, device.w_min
    else:
        hi, lo = base["max_bound"], base["min_bound"]
    off = device.reverse_offset
    ref_up = jnp.broadcast_to(jnp.asarray(lo - off if device.reverse_up else hi, dtype), shape)
    ref_down = jnp.broadcast_to(jnp.asarray(hi + off if device.reverse_down else lo, dtype), shape)

    safe_up = jnp.where(ref_up != 0, ref_up, 1.0)
    safe_down = jnp.where(ref_down != 0, ref_down, 1.0)
    slope_up = jnp.where(ref_up != 0, -gamma_up * base["dwmin_up"] / safe_up, 0.0)
    slope_down = jnp.where(ref_down != 0, -gamma_down * base["dwmin_down"] / safe_down, 0.0)
    return {"slope_up": slope_up.astype(dtype), "slope_down": slope_down.astype(dtype)}


def scalars(device: LinearStepDevice | SoftBoundsDevice) -> tuple[float, ...]:
    """``(dw_min_std, mult_noise (0/1), write_noise = write_noise_std·dw_min)``."""
    return (
        float(device.dw_min_std),
        1.0 if device.mult_noise else 0.0,
        float(device.write_noise_std * device.dw_min),
    )


def granularity(device: LinearStepDevice | SoftBoundsDevice) -> float:
    return float(device.dw_min)


def pulse(scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array) -> Array:
    """One LinearStep / SoftBounds pulse, then clip.

    ``σ = scalars[0]``. Multiplicative noise (``scalars[1] == 1``):
    up ``w + (slope_up·w + s_up)·(1 + σξ)``, down ``w − (slope_down·w + s_down)·(1 + σξ)``.
    Additive (``scalars[1] == 0``): up ``w + slope_up·w + s_up·(1 + σξ)``,
    down ``w − slope_down·w − s_down·(1 + σξ)``. Then ``w ← MIN(MAX(w, b_min), b_max)``.
    """
    b_max, b_min, s_up, s_down, slope_up, slope_down = params
    sigma, mult = scalars[0], scalars[1]
    noise = 1.0 + sigma * xi
    if mult:
        up = w + (slope_up * w + s_up) * noise
        dn = w - (slope_down * w + s_down) * noise
    else:
        up = w + slope_up * w + s_up * noise
        dn = w - slope_down * w - s_down * noise
    return clip_bounds(jnp.where(down, dn, up), b_min, b_max)
