"""The pulsed update through the C++ / CUDA kernels (XLA FFI target ``rpujax_pulsed_update``).

Same signature and, for the same key, the same random numbers as the pure-JAX
:func:`rpujax.pulsed.jax_backend.apply_pulses` (``ffi/README.md``): the results agree to float
rounding. The kernels are ``ffi/pulsed_cpu.cc`` (platform ``cpu``) and ``ffi/pulsed_cuda.cu``
(platform ``CUDA``); registration is lazy and guarded (:mod:`rpujax._ffi`).

- ``weights`` (and ``persistent``) are aliased input to output (``input_output_aliases``): under
  ``jax.jit(..., donate_argnums=...)`` the kernel updates the donated buffer in place.
- ``jax.vmap`` over tiles is one kernel call (a ``custom_vmap`` rule): operands that carry the
  mapped axis get a leading tile axis, operands that do not (e.g. ``px``, ``pd`` and ``bl`` shared
  by all tiles) are passed once and read in place by every tile, never broadcast. Nested vmaps
  merge their axes into one tile axis (an operand mapped by only one of the levels is then
  broadcast to the merged axis: the one case with a copy).
- ``row_offset`` (the global index of the first row when ``weights`` is a row shard of a larger
  tile) is an int32 *operand*, not a static attribute: inside ``shard_map`` it comes from
  ``jax.lax.axis_index`` and is traced, and one compiled kernel call then serves every shard. Under
  ``vmap`` it is shared like ``px`` (or per tile if it is mapped).
- Works under ``jit``; not differentiable (the update is not a differentiable function).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["apply_pulses", "available", "TARGET", "NUM_PARAMS"]

#: Name of the FFI target (both platforms).
TARGET = "rpujax_pulsed_update"

#: Per-element parameter planes of each device kind (ffi/README.md §3).
NUM_PARAMS = {0: 4, 1: 6, 2: 4, 3: 6, 4: 7, 5: 5, 6: 4}

# Operand order of the kernel call and the rank of each operand without a tile axis.
_NAMES = ("weights", "persistent", "params", "px", "pd", "bl", "key_data", "row_offset")
_RANKS = (2, 2, 3, 2, 2, 1, 1, 0)


def available(platform: str = "cpu") -> bool:
    """Whether the kernel is registered for ``platform`` (``"cpu"``, ``"cuda"``/``"gpu"``)."""
    from rpujax import _ffi  # noqa: PLC0415

    return _ffi.available(platform)


def _ensure_registered() -> None:
    from rpujax import _ffi  # noqa: PLC0415

    if not _ffi.ensure_registered():
        raise RuntimeError(
            "rpujax.pulsed.ffi_backend: the rpujax FFI kernels are not available "
            f"({_ffi.unavailable_reason() or 'disabled by RPUJAX_DISABLE_FFI'}); use the pure-JAX backend"
        )


@functools.lru_cache(maxsize=None)
def _kernel(kind: int, scalars: tuple[float, ...], mode: int, bl_max: int, tiled: tuple[bool, ...]):
    """The kernel call for one static configuration, as a ``custom_vmap`` function.

    ``tiled[i]`` says whether operand ``i`` (order of ``_NAMES``) carries a leading tile axis.
    ``weights`` is tiled whenever any operand is; ``persistent`` is either a ``(0,)`` placeholder
    (no persistent weights, never tiled) or has the shape of ``weights``.
    """
    attrs = dict(
        kind=np.int32(kind),
        mode=np.int32(mode),
        bl_max=np.int32(bl_max),
        scalars=np.asarray(scalars, dtype=np.float64),
    )

    @jax.custom_batching.custom_vmap
    def call(weights, persistent, params, px, pd, bl, key_data, row_offset):
        out = (
            jax.ShapeDtypeStruct(weights.shape, jnp.float32),
            jax.ShapeDtypeStruct(persistent.shape, jnp.float32),
        )
        fn = jax.ffi.ffi_call(TARGET, out, input_output_aliases={0: 0, 1: 1})
        return tuple(fn(weights, persistent, params, px, pd, bl, key_data, row_offset, **attrs))

    @call.def_vmap
    def rule(axis_size, in_batched, *args):
        # The mapped axis is the leading axis of every batched operand. Merge it with an existing
        # tile axis, or make it the tile axis.
        has_pers = args[1].ndim >= 2  # else the (0,) placeholder
        # tile count of the inner vmap level, if any (weights carry it, after the new axis if mapped)
        t_old = (args[0].shape[1] if in_batched[0] else args[0].shape[0]) if tiled[0] else None
        new_args = []
        new_tiled = []
        for i, (a, batched) in enumerate(zip(args, in_batched)):
            if i == 1 and not has_pers:
                new_args.append(a)
                new_tiled.append(False)
                continue
            # weights (and persistent) always get the tile axis: the results differ per tile.
            must = i in (0, 1)
            if not batched and not tiled[i] and not must:
                new_args.append(a)  # shared by every tile: passed once
                new_tiled.append(False)
                continue
            if not batched:
                a = jnp.broadcast_to(a[None], (axis_size, *a.shape))
            if t_old is not None:
                if not tiled[i]:
                    a = jnp.broadcast_to(a[:, None], (axis_size, t_old, *a.shape[1:]))
                a = a.reshape(axis_size * t_old, *a.shape[2:])
            new_args.append(a)
            new_tiled.append(True)
        w, p = _kernel(kind, scalars, mode, bl_max, tuple(new_tiled))(*new_args)
        if t_old is not None:
            w = w.reshape(axis_size, t_old, *w.shape[1:])
            if has_pers:
                p = p.reshape(axis_size, t_old, *p.shape[1:])
        return (w, p), (True, bool(has_pers))

    return call


def _check(name: str, a: Array, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != shape:
        raise ValueError(f"apply_pulses: {name} has shape {tuple(a.shape)}, expected {shape}")


def apply_pulses(
    weights: Array,
    persistent: Array | None,
    params: Array,
    px: Array,
    pd: Array,
    bl: Array,
    key_data: Array,
    *,
    kind: int,
    scalars: Sequence[float],
    mode: int,
    bl_max: int,
    row_offset: Array | int = 0,
) -> tuple[Array, Array | None]:
    """Apply the pulses of a batch of samples to one tile with the FFI kernel (ffi/README.md §4).

    Args:
      weights: ``f32[D, X]`` (apparent) weights.
      persistent: ``f32[D, X]`` persistent weights when the device has write noise, else None.
      params: ``f32[P, D, X]`` per-element device parameters in the kind's order (§3 table).
      px: ``f32[B, X]``, pd: ``f32[B, D]``, bl: ``int32[B]``: the pulse inputs of
        :func:`rpujax.pulsed.probabilities.pulse_inputs` (meaning set by ``mode``).
      key_data: ``uint32[2]``, the update key's data ``(k0, k1)``.
      kind: device kind (static). scalars: tile-wide device scalars (static, Python floats).
      mode: 0 stochastic, 1 mean count, 2 deterministic implicit (static).
      bl_max: static upper bound of ``bl``.
      row_offset: global index of the first row of ``weights`` (a Python int or a traced int32
        scalar): nonzero when ``weights`` is a row shard of a larger tile (:mod:`rpujax.parallel`).
        The d bits and per-element normals use global rows, as
        :func:`rpujax.pulsed.jax_backend.apply_pulses` with the same ``row_offset``. The kernel
        checks ``0 <= row_offset`` and ``(row_offset + D) * X < 2**32`` on CPU only.

    Returns:
      ``(weights, persistent)`` after all samples, applied in order (``persistent`` None when it
      was None). Weights are in weight units, float32.

    Raises:
      ValueError: on a shape mismatch (at trace time), an unknown kind or mode, or a weights dtype
        other than float32.
      RuntimeError: if the FFI kernels are not available.
    """
    kind = int(kind)
    mode = int(mode)
    bl_max = int(bl_max)
    scalars = tuple(float(s) for s in scalars)
    if kind not in NUM_PARAMS:
        raise ValueError(f"apply_pulses: kind = {kind}: expected one of {sorted(NUM_PARAMS)}")
    if mode not in (0, 1, 2):
        raise ValueError(f"apply_pulses: mode = {mode}: expected 0, 1 or 2")
    if bl_max < 0:
        raise ValueError(f"apply_pulses: bl_max = {bl_max} must be >= 0")
    if weights.ndim != 2:
        raise ValueError(f"apply_pulses: weights has shape {tuple(weights.shape)}, expected (D, X)")
    if weights.dtype != jnp.float32:
        raise ValueError(f"apply_pulses: weights must be float32, got {weights.dtype}")
    d_size, x_size = weights.shape
    batch = px.shape[0] if px.ndim == 2 else -1
    _check("params", params, (NUM_PARAMS[kind], d_size, x_size))
    _check("px", px, (batch, x_size))
    _check("pd", pd, (batch, d_size))
    _check("bl", bl, (batch,))
    _check("key_data", key_data, (2,))
    row_offset = jnp.asarray(row_offset)
    _check("row_offset", row_offset, ())
    if not jnp.issubdtype(row_offset.dtype, jnp.integer):
        raise ValueError(f"apply_pulses: row_offset must be an integer, got dtype {row_offset.dtype}")
    if persistent is not None:
        _check("persistent", persistent, (d_size, x_size))
    _ensure_registered()

    has_pers = persistent is not None
    pers = persistent.astype(jnp.float32) if has_pers else jnp.zeros((0,), jnp.float32)
    call = _kernel(kind, scalars, mode, bl_max, (False,) * len(_NAMES))
    w, p = call(
        weights,
        pers,
        params.astype(jnp.float32),
        px.astype(jnp.float32),
        pd.astype(jnp.float32),
        bl.astype(jnp.int32),
        key_data.astype(jnp.uint32),
        row_offset.astype(jnp.int32),
    )
    return w, (p if has_pers else None)
