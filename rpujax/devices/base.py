"""Shared pieces of the device models: kind numbers, the C-style clip, base construction sampling.

Construction sampling (spec tile-core §1.3) draws every quantity from its own sub-key
``jax.random.fold_in(key, tag)``, so the draws are independent and adding a quantity never changes
the others. aihwkit's draw order (one sequential generator) is not reproduced: only the
statistics are.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.devices import FloatingPointDevice, IdealDevice, PulsedDevice

Array = jax.Array

# Device kinds of the pulse rule (ffi/README.md §3 table).
CONSTANT_STEP = 0
LINEAR_STEP = 1
EXP_STEP = 2
POW_STEP = 3
POW_STEP_REFERENCE = 4
SOFT_BOUNDS_REFERENCE = 5
PIECEWISE_STEP = 6

KIND_NAMES = {
    CONSTANT_STEP: "ConstantStep",
    LINEAR_STEP: "LinearStep/SoftBounds",
    EXP_STEP: "ExpStep",
    POW_STEP: "PowStep",
    POW_STEP_REFERENCE: "PowStepReference",
    SOFT_BOUNDS_REFERENCE: "SoftBoundsReference",
    PIECEWISE_STEP: "PiecewiseStep",
}

# Largest |normal| the Box-Muller transform of ffi/README.md §1 can return: sqrt(-2 ln 2^-24).
XI_MAX = math.sqrt(-2.0 * math.log(2.0**-24))

# Names of the base per-cross-point arrays, in aihwkit's hidden-parameter order.
BASE_NAMES = (
    "max_bound",
    "min_bound",
    "dwmin_up",
    "dwmin_down",
    "decay_scales",
    "diffusion_rates",
    "reset_bias",
    "drift_nu",
)

# fold_in tags of the construction draws (fixed, so each quantity has its own stream).
_TAG_NU = 1
_TAG_MAX_BOUND = 2
_TAG_MIN_BOUND = 3
_TAG_GAIN = 4
_TAG_UP_DOWN = 5
_TAG_CORRUPT = 6
_TAG_CORRUPT_VALUE = 7
_TAG_DIFFUSION = 8
_TAG_RESET = 9
_TAG_LIFETIME = 10
TAG_EXTRA = 32  # device extras use TAG_EXTRA + i


def cmax(a: Array, b: Array | float) -> Array:
    """C's ``MAX(a, b) = a > b ? a : b`` (a NaN ``a`` gives ``b``), as aihwkit's macro."""
    return jnp.where(a > b, a, b)


def cmin(a: Array, b: Array | float) -> Array:
    """C's ``MIN(a, b) = a < b ? a : b`` (a NaN ``a`` gives ``b``)."""
    return jnp.where(a < b, a, b)


def clip_bounds(w: Array, min_bound: Array, max_bound: Array) -> Array:
    """``w = MIN(MAX(w, min_bound), max_bound)`` with C semantics: a NaN weight becomes
    ``min_bound`` (aihwkit's clip after a pulse; NaN arises from a negative base in PowStep)."""
    return cmin(cmax(w, min_bound), max_bound)


def construction_key(device: Any, key: Array) -> Array:
    """The key of the construction draws: ``jax.random.key(construction_seed)`` when the seed is
    non-zero (same seed → same devices whatever the init key), else ``key`` itself."""
    seed = getattr(device, "construction_seed", 0)
    if seed != 0:
        return jax.random.key(seed)
    return key


def _normal(key: Array, tag: int, shape: tuple[int, ...], dtype: Any) -> Array:
    return jax.random.normal(jax.random.fold_in(key, tag), shape, dtype)


def extra_normal(key: Array, index: int, shape: tuple[int, ...], dtype: Any) -> Array:
    """Standard normals of device extra number ``index`` (its own stream)."""
    return _normal(key, TAG_EXTRA + index, shape, dtype)


def sample_simple(
    device: IdealDevice | FloatingPointDevice, d_size: int, x_size: int, dtype: Any
) -> dict[str, Array]:
    """Per-element arrays of an ideal / floating-point device (spec §5.6); nothing is random.

    ``decay_scales = 1 − 1/lifetime`` if ``lifetime > 1`` else 1 (the per-call multiplier at
    ``alpha = 1``; §5.6 applies ``1 − alpha/lifetime`` only when it lies in (0, 1)),
    ``diffusion_rates = diffusion``, ``reset_bias = 0``; ``FloatingPointDevice`` adds
    ``drift_nu = drift.nu`` (0 when drift is off).
    """
    shape = (d_size, x_size)
    lifetime = float(device.lifetime)
    decay = 1.0 - 1.0 / lifetime if lifetime > 1.0 else 1.0
    out = {
        "decay_scales": jnp.full(shape, decay, dtype),
        "diffusion_rates": jnp.full(shape, float(device.diffusion), dtype),
        "reset_bias": jnp.zeros(shape, dtype),
    }
    if isinstance(device, FloatingPointDevice):
        nu = float(device.drift.nu) if device.drift.nu > 0 else 0.0
        out["drift_nu"] = jnp.full(shape, nu, dtype)
    return out


def sample_base(
    device: PulsedDevice, key: Array, d_size: int, x_size: int, dtype: Any
) -> dict[str, Array]:
    """The base per-cross-point arrays of a pulsed device (spec §1.3, steps 1–2).

    Returns ``max_bound``, ``min_bound``, ``dwmin_up``, ``dwmin_down`` (steps in weight units per
    pulse; signed when ``enforce_consistency`` is off), ``decay_scales``, ``diffusion_rates``,
    ``reset_bias``, ``drift_nu``, each ``(d_size, x_size)``. ``key`` is the construction key
    (see :func:`construction_key`).
    """
    p = device
    shape = (d_size, x_size)
    n = lambda tag: _normal(key, tag, shape, dtype)  # noqa: E731

    if p.drift.nu > 0:
        drift_nu = p.drift.nu + p.drift.nu_dtod * p.drift.nu * n(_TAG_NU)
    else:
        drift_nu = jnp.zeros(shape, dtype)

    b_max = p.w_max * (1.0 + p.w_max_dtod * n(_TAG_MAX_BOUND))
    b_min = p.w_min * (1.0 + p.w_min_dtod * n(_TAG_MIN_BOUND))
    if p.dw_min_dtod_log_normal:
        gain = jnp.exp(p.dw_min_dtod * n(_TAG_GAIN))
    else:
        gain = 1.0 + p.dw_min_dtod * n(_TAG_GAIN)
    # up_down_dtod is absolute (units of dw_min) and enters up and down with opposite signs.
    r = p.up_down_dtod * n(_TAG_UP_DOWN)
    up_bias = min(p.up_down, 0.0)
    down_bias = -max(p.up_down, 0.0)
    s_up = (up_bias + gain + r) * p.dw_min
    s_down = (down_bias + gain - r) * p.dw_min

    if p.enforce_consistency:
        s_up = jnp.abs(s_up)
        s_down = jnp.abs(s_down)
        # swap when inverted, then force the bounds to straddle 0
        hi = jnp.maximum(b_max, b_min)
        lo = jnp.minimum(b_max, b_min)
        b_max = jnp.abs(hi)
        b_min = -jnp.abs(lo)
    else:
        # an inverted pair becomes a stuck device at the midpoint
        inverted = b_min > b_max
        mid = b_max + (b_min - b_max) / 2.0
        b_max = jnp.where(inverted, mid, b_max)
        b_min = jnp.where(inverted, mid, b_min)

    if p.corrupt_devices_prob > 0:
        k_c = jax.random.fold_in(key, _TAG_CORRUPT)
        k_v = jax.random.fold_in(key, _TAG_CORRUPT_VALUE)
        corrupt = p.corrupt_devices_prob > jax.random.uniform(k_c, shape, dtype)
        rng = abs(p.corrupt_devices_range)
        c_lo = jnp.maximum(jnp.minimum(b_max, b_min), -rng)
        c_hi = jnp.minimum(jnp.maximum(b_max, b_min), rng)
        value = c_lo + (c_hi - c_lo) * jax.random.uniform(k_v, shape, dtype)
        b_max = jnp.where(corrupt, value, b_max)
        b_min = jnp.where(corrupt, value, b_min)
        s_up = jnp.where(corrupt, 0.0, s_up)
        s_down = jnp.where(corrupt, 0.0, s_down)

    if p.perfect_bias:
        last = (jnp.arange(x_size) == x_size - 1)[None, :]
        s_up = jnp.where(last, p.dw_min, s_up)
        s_down = jnp.where(last, p.dw_min, s_down)
        b_min = jnp.where(last, 100.0 * p.w_min, b_min)
        b_max = jnp.where(last, 100.0 * p.w_max, b_max)

    if p.diffusion > 0:
        diffusion_rates = jnp.abs(p.diffusion * (1.0 + p.diffusion_dtod * n(_TAG_DIFFUSION)))
    else:
        diffusion_rates = jnp.zeros(shape, dtype)

    reset_bias = p.reset + p.reset_dtod * n(_TAG_RESET)

    if p.lifetime > 0:
        life = p.lifetime * (1.0 + p.lifetime_dtod * n(_TAG_LIFETIME))
        # a sampled lifetime <= 1 means complete decay to the reset bias in one call
        decay_scales = jnp.where(life > 1.0, 1.0 - 1.0 / jnp.where(life > 1.0, life, 2.0), 0.0)
    else:
        decay_scales = jnp.ones(shape, dtype)

    out = {
        "max_bound": b_max,
        "min_bound": b_min,
        "dwmin_up": s_up,
        "dwmin_down": s_down,
        "decay_scales": decay_scales,
        "diffusion_rates": diffusion_rates,
        "reset_bias": reset_bias,
        "drift_nu": drift_nu,
    }
    return {k: jnp.broadcast_to(jnp.asarray(a, dtype), shape) for k, a in out.items()}
