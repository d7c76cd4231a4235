"""Random draws of the inference code: the tile's counter-based generator (see ``rpujax.tile.mvm``).

The MVM's generator draws two 32-bit words per Threefry hash (about twice as fast on CPU as
``jax.random.normal`` under the partitionable layout) and falls back to ``jax.random`` for other
key implementations. Same key, same numbers, with or without ``jit`` and under ``vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.tile import mvm

Array = jax.Array


def normal(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Standard normal draws of ``shape``."""
    return mvm._normal(mvm._as_key(key), tuple(shape), dtype)


def uniform(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32, minval: float = 0.0, maxval: float = 1.0) -> Array:
    """Uniform draws in ``[minval, maxval)``."""
    u = mvm._uniform(mvm._as_key(key), tuple(shape), dtype)
    if minval == 0.0 and maxval == 1.0:
        return u
    return (minval + (maxval - minval) * u).astype(dtype)
