"""Weight ↔ conductance conversion (spec cells-inference-api §4.6).

Every conversion uses one scale per tile and per call: the pair converters map the tile's
``max|W|`` to the top of the conductance range, the single-device converter maps
``[min W, max W]`` onto ``[g_min, g_max]``. Functions act on one tile ``(D, X)``; ``jax.vmap``
them for a batch of tiles.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.inference import (
    NPairConductanceConverter,
    SingleDeviceConductanceConverter,
    SinglePairConductanceConverter,
)

Array = jax.Array

_ZERO_CLIP = 1e-7


def to_conductances(converter: Any, weights: Array) -> tuple[Array, dict[str, Array]]:
    """Convert weights to conductances (µS).

    Args:
      converter: a conductance converter config.
      weights: ``(D, X)`` tile weights.

    Returns:
      ``(g, params)``: ``g`` of shape ``(S, D, X)`` with ``S = converter.n_slices`` conductance
      slices (pairs as ``g+, g-, g+, g-, …``), and the scale parameters needed to convert back.
    """
    w = jnp.asarray(weights)
    if isinstance(converter, SinglePairConductanceConverter):
        abs_max = jnp.max(jnp.abs(w))
        ratio = (converter.g_max - converter.g_min) / jnp.maximum(abs_max, _ZERO_CLIP)
        scaled = w * ratio
        g = jnp.stack(
            [
                jnp.clip(scaled, 0.0, converter.g_max) + converter.g_min,
                jnp.clip(-scaled, 0.0, converter.g_max) + converter.g_min,
            ]
        )
        return g, {"scale_ratio": ratio}
    if isinstance(converter, NPairConductanceConverter):
        g_range = converter.g_max - converter.g_min
        abs_max = jnp.maximum(jnp.max(jnp.abs(w)), _ZERO_CLIP)
        ratio = sum(f * g_range for f in converter.f_lst) / abs_max
        w_us = w * ratio
        lower = 0.0
        slices = []
        for f in converter.f_lst:
            for signed in (w_us, -w_us):
                slices.append(
                    jnp.clip((jnp.maximum(signed, 0.0) - lower) / f + converter.g_min, converter.g_min, converter.g_max)
                )
            lower += f * g_range
        return jnp.stack(slices), {"scale_ratio": ratio}
    if isinstance(converter, SingleDeviceConductanceConverter):
        w_min = jnp.min(w)
        w_max = jnp.max(w)
        # aihwkit divides by (w_max - w_min) unguarded (NaN for a constant matrix); the guard maps a
        # constant matrix to g_min and back exactly.
        ratio = (converter.g_max - converter.g_min) / jnp.maximum(w_max - w_min, _ZERO_CLIP)
        g = (w - w_min) * ratio + converter.g_min
        return g[None], {"scale_ratio": ratio, "min": w_min}
    raise ValueError(f"to_conductances: unknown conductance converter {converter!r}")


def from_conductances(converter: Any, conductances: Array, params: dict[str, Array]) -> Array:
    """Convert conductance slices ``(S, D, X)`` back to weights ``(D, X)`` with ``params``."""
    g = jnp.asarray(conductances)
    if g.shape[0] != converter.n_slices:
        raise ValueError(
            f"from_conductances: {type(converter).__name__} needs {converter.n_slices} conductance slices, "
            f"got shape {g.shape}"
        )
    ratio = params["scale_ratio"]
    if isinstance(converter, SinglePairConductanceConverter):
        return ((g[0] - converter.g_min) - (g[1] - converter.g_min)) / ratio
    if isinstance(converter, NPairConductanceConverter):
        total = jnp.zeros_like(g[0])
        for k, f in enumerate(converter.f_lst):
            total = total + f * (g[2 * k] - g[2 * k + 1])
        return total / ratio
    if isinstance(converter, SingleDeviceConductanceConverter):
        return params["min"] + (g[0] - converter.g_min) / ratio
    raise ValueError(f"from_conductances: unknown conductance converter {converter!r}")
