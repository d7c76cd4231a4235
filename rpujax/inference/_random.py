"""Random draws of the inference code (one place, so the generator can be changed in one place).

Every draw is ``jax.random`` from an explicit key: the same key gives the same numbers with or
without ``jit`` and under ``vmap``. Legacy ``uint32[2]`` keys are accepted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def _typed(key: Array) -> Array:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def normal(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Standard normal draws of ``shape``."""
    return jax.random.normal(_typed(key), tuple(shape), dtype)


def uniform(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32, minval: float = 0.0, maxval: float = 1.0) -> Array:
    """Uniform draws in ``[minval, maxval)``."""
    return jax.random.uniform(_typed(key), tuple(shape), dtype, minval, maxval)
