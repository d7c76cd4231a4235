"""The counter-based random numbers of rpujax: the JAX half of the RNG contract.

Every random draw of the pulsed update is a pure function of the key data and a counter, so results
do not depend on thread count, launch shape, batching or sharding, and the pure-JAX path, the C++
kernels and the CUDA kernels draw the same numbers. ``ffi/rng.h`` is the C++/CUDA half of this
contract; the two are pinned together bit for bit by ``tests/test_ffi.py``.

The contract (all words uint32, all floats float32):

``threefry(k0, k1, c0, c1) -> (y0, y1)``
    Threefry-2x32 with 20 rounds, ``jax.extend.random.threefry2x32_p`` (Random123 constants).
``uniform24(w) = float(w >> 8) * 2**-24``
    in ``[0, 1)``, 24 random bits.
``box_muller(w0, w1) = sqrt(-2 log(u1)) * cos(6.2831853 * u2)``
    with ``u1 = float((w0 >> 8) + 1) * 2**-24`` in ``(0, 1]`` and ``u2 = uniform24(w1)``; one
    standard normal per word pair (the sine half is not used). ``|z| <= sqrt(48 log 2) ~= 5.77``.
``sample_key(k0, k1, b) = threefry(k0, k1, 0, b)``
    the key of sample ``b`` of a batch.
``stream_c0(purpose, sub) = (purpose << 28) | sub``
    counter word ``c0`` of a stream; ``sub < 2**28``. Streams, keyed by the sample key:

    ============== ===================== =====================
    purpose        sub                   c1
    ============== ===================== =====================
    XBIT (1)       pulse position k      column j
    DBIT (2)       pulse position k      row i
    PULSE_NORMAL(3) pulse number t       i * X + j
    SUM_NORMAL (4) 0                     i * X + j
    WRITE_NOISE(5) 0                     i * X + j
    ============== ===================== =====================

``key_words(key)`` turns a JAX key (new-style typed ``jax.random.key`` or legacy uint32[2]
``jax.random.PRNGKey``, both with the default threefry2x32 implementation) into ``(k0, k1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

__all__ = [
    "PURPOSE_SHIFT",
    "SUB_MASK",
    "XBIT",
    "DBIT",
    "PULSE_NORMAL",
    "SUM_NORMAL",
    "WRITE_NOISE",
    "TWO_PI",
    "stream_c0",
    "threefry",
    "sample_key",
    "uniform24",
    "box_muller",
    "key_words",
]

PURPOSE_SHIFT = 28
SUB_MASK = (1 << PURPOSE_SHIFT) - 1

XBIT = 1
DBIT = 2
PULSE_NORMAL = 3
SUM_NORMAL = 4
WRITE_NOISE = 5

TWO_PI = np.float32(6.2831853)  # == 0x40C90FDB, the C++ literal 6.2831853f
_TWO_NEG24 = np.float32(2.0**-24)


def _u32(x) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.uint32)


def stream_c0(purpose, sub) -> jax.Array:
    """Counter word ``c0 = (purpose << 28) | sub`` of a stream (``sub < 2**28``)."""
    return (_u32(purpose) << np.uint32(PURPOSE_SHIFT)) | _u32(sub)


def threefry(k0, k1, c0, c1) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32-20 of counters ``(c0, c1)`` under key ``(k0, k1)``; arguments broadcast."""
    args = jnp.broadcast_arrays(_u32(k0), _u32(k1), _u32(c0), _u32(c1))
    y0, y1 = threefry2x32_p.bind(*args)
    return y0, y1


def sample_key(k0, k1, b) -> tuple[jax.Array, jax.Array]:
    """Key of sample ``b``: ``threefry(k0, k1, 0, b)``."""
    return threefry(k0, k1, 0, b)


def _top24_to_f32(w) -> jax.Array:
    # w < 2**24: the int32 detour is exact and mirrors the C++ (fast int32 -> float conversion).
    return w.astype(jnp.int32).astype(jnp.float32) * _TWO_NEG24


def uniform24(w) -> jax.Array:
    """``float(w >> 8) * 2**-24`` in ``[0, 1)``."""
    return _top24_to_f32(_u32(w) >> np.uint32(8))


def box_muller(w0, w1) -> jax.Array:
    """One standard normal from two words: ``sqrt(-2 log u1) * cos(2 pi u2)``, float32."""
    u1 = _top24_to_f32((_u32(w0) >> np.uint32(8)) + np.uint32(1))  # (0, 1]
    u2 = _top24_to_f32(_u32(w1) >> np.uint32(8))  # [0, 1)
    return jnp.sqrt(np.float32(-2.0) * jnp.log(u1)) * jnp.cos(TWO_PI * u2)


def key_words(key) -> tuple[jax.Array, jax.Array]:
    """``(k0, k1)`` uint32 words of a threefry2x32 key (typed or legacy uint32[..., 2]).

    Batched keys are accepted: the words have the key's batch shape.
    """
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        if impl != "threefry2x32":
            raise ValueError(
                f"rpujax needs threefry2x32 keys (jax.random.key(seed) with the default implementation); "
                f"got a key with implementation {impl!r}"
            )
        data = jax.random.key_data(key)
    else:
        if key.dtype != jnp.uint32 or key.ndim < 1 or key.shape[-1] != 2:
            raise ValueError(
                "rpujax expects a JAX PRNG key: a typed key from jax.random.key(seed), or a legacy "
                f"uint32[..., 2] key from jax.random.PRNGKey(seed); got an array of dtype {key.dtype} "
                f"and shape {key.shape} (a uint32[4] legacy key means jax_default_prng_impl is not "
                "threefry2x32)"
            )
        data = key
    return data[..., 0], data[..., 1]
