"""How a logical layer maps onto a grid of tiles, and the digital weight scaling around each tile.

Spec cells-inference-api §1.7 (``set_weights`` / ``get_weights`` with ``weight_scaling_omega``),
§1.9 (learning-rate compensation) and §2.3 (``TileModuleArray``: splitting a layer over tiles).
Everything here is a pure function of arrays and static sizes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "lr_scale",
    "scale_weights",
    "split_sizes",
    "tile_grid_sizes",
    "uses_tile_array",
]


def split_sizes(size: int, max_size: int) -> tuple[int, ...]:
    """Near-equal split of ``size`` features into pieces of at most ``max_size`` (larger first).

    aihwkit ``TileModuleArray``: ``n = ceil(size / max_size)`` pieces, ``base, extra = divmod(size,
    n)``, sizes ``[base + 1] * extra + [base] * (n - extra)``; ``max_size <= 0`` means no split.
    """
    if max_size <= 0:
        return (size,)
    n = math.ceil(size / max_size)
    base, extra = divmod(size, n)
    return (base + 1,) * extra + (base,) * (n - extra)


def uses_tile_array(out_size: int, in_size: int, mapping: Any) -> bool:
    """Whether aihwkit maps a layer of this size onto a ``TileModuleArray`` (spec §2.3).

    No array when both limits are 0; otherwise an array as soon as one limit is smaller than the
    layer (a limit of 0 counts as "smaller", as in aihwkit, so ``max_output_size=0`` with a
    positive ``max_input_size`` always builds an array). An array always has a digital bias.
    """
    if mapping.max_input_size == 0 and mapping.max_output_size == 0:
        return False
    return mapping.max_input_size < in_size or mapping.max_output_size < out_size


def tile_grid_sizes(out_size: int, in_size: int, mapping: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(in_sizes, out_sizes)`` of the tile grid of a layer: one tile per (input piece, output piece)."""
    if not uses_tile_array(out_size, in_size, mapping):
        return (in_size,), (out_size,)
    return split_sizes(in_size, mapping.max_input_size), split_sizes(out_size, mapping.max_output_size)


def scale_weights(weights: Array, omega: float, columnwise: bool) -> tuple[Array, Array | None]:
    """aihwkit's weight scaling on ``set_weights`` (spec §1.7 step 4).

    Args:
      weights: ``(out, x)`` logical weights of one tile (analog-bias column included).
      omega: ``weight_scaling_omega``; ``<= 0`` leaves the weights alone.
      columnwise: one scale per output row instead of one per tile.

    Returns:
      ``(tile_weights, scales)``: ``tile_weights = weights / scales`` (rows) so that
      ``max|tile_weights| = omega`` (per row if columnwise), and the scales (``(1,)`` or
      ``(out,)``, zeros replaced by 1); ``scales`` is None when ``omega <= 0``.
    """
    if omega <= 0:
        return weights, None
    if columnwise:
        scales = jnp.max(jnp.abs(weights), axis=1) / omega
    else:
        scales = jnp.max(jnp.abs(weights)).reshape((1,)) / omega
    scales = jnp.where(scales == 0, 1.0, scales).astype(weights.dtype)
    return weights / scales[:, None], scales


def lr_scale(mapping_scales: Array, compensate: bool) -> Array | None:
    """``mapping_lr_scale`` (spec §1.9): ``1 / mean(s_map)`` with lr compensation, else None (= 1).

    None rather than a traced 1 keeps a concrete learning rate concrete in the tile update.
    """
    if not compensate:
        return None
    return 1.0 / jnp.mean(mapping_scales)
