"""Scaling out: tiles, rows of a tile and training batches spread over devices (DESIGN §7).

All randomness in rpujax is counter-based (``ffi/README.md`` §1, and JAX's partitionable
threefry for the forward and backward noise), so where a computation is split does not change
what it draws. Three ways to split:

- **A batch of tiles** (``jax.vmap(init)(keys)``, e.g. one tile per seed): :func:`map_tiles` runs
  ``vmap(fn)`` inside ``shard_map`` over the leading axis; each device gets a slice of the tiles
  and, with the FFI backend, one kernel call for its slice. Bit-identical to the unsharded vmap.
- **The rows (outputs) of one large tile**: :func:`shard_rows` places the row-indexed arrays of a
  tile over a mesh axis; ``forward`` / ``backward`` under ``jax.jit`` are then partitioned by XLA,
  and :func:`row_sharded_update` runs the pulsed update with ``shard_map``: the per-sample
  probabilities (BL, A, B, update management need ``max_i |d_i|`` over *all* rows) are computed on
  the whole ``(x, d)`` (small: batch × (in + out)), then every shard applies the pulses of its rows
  with its global row offset (FFI kernel or pure JAX, as ``tile.update`` would choose), so the d
  bits and per-element normals are those of the whole tile.
- **Data-parallel training**: the batch is sharded over a mesh axis, the model replicated
  (:func:`shard_batch`, :func:`replicate`). Each replica computes the forward, backward and the
  tiles' ``(x, d)`` of its slice; :func:`replicate_tile_grads` gathers ``x`` and ``d`` (in sample
  order) so that every replica applies the same pulsed update with the same key: the replicas stay
  identical without an all-reduce of the weights. Digital gradients are reduced over the batch by
  XLA (a sum whose order depends on the split: equal to rounding only).

The same code runs on many processes after ``jax.distributed.initialize`` (see
``examples/multiprocess_train.py``); build global arrays with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "make_mesh",
    "map_tiles",
    "shard_tiles",
    "shard_rows",
    "row_sharded_update",
    "shard_batch",
    "replicate",
    "replicate_tile_grads",
]


def make_mesh(n_devices: int | None = None, axis: str = "x", devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-d mesh of ``n_devices`` devices (default: all of ``jax.devices()``) named ``axis``."""
    devs = list(jax.devices() if devices is None else devices)
    n = len(devs) if n_devices is None else int(n_devices)
    if not 1 <= n <= len(devs):
        raise ValueError(f"make_mesh: n_devices = {n_devices}: expected 1 <= n <= {len(devs)} (available devices)")
    return Mesh(np.asarray(devs[:n]), (axis,))


def _leading_spec(leaf: Any, axis: str) -> P:
    return P(axis) if jnp.ndim(leaf) >= 1 else P()


def shard_tiles(tree: Any, mesh: Mesh, axis: str | None = None) -> Any:
    """Place every array leaf of ``tree`` (e.g. a batch of tiles) sharded along its leading axis.

    The leading axis must be divisible by the mesh size; scalar leaves are replicated.
    """
    axis = axis or mesh.axis_names[0]
    return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, _leading_spec(a, axis))), tree)


def map_tiles(
    fn: Callable[..., Any],
    mesh: Mesh,
    *,
    axis: str | None = None,
    in_axes: int | None | Sequence[int | None] = 0,
) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)`` over a batch of tiles, sharded over ``mesh`` with ``shard_map``.

    Arguments with ``in_axes`` 0 are split along their leading axis (its size must be divisible
    by the mesh size); those with ``None`` are passed whole to every device. The results carry the
    leading batch axis, sharded. Each device runs one ``vmap`` over its slice, i.e. with the FFI
    backend one kernel call per shard (the kernel's batching rule). Per-tile results do not depend
    on the split (every tile's draws come from its own key), so they are bit-identical to an
    unsharded ``vmap``.
    """
    axis = axis or mesh.axis_names[0]

    def wrapped(*args: Any) -> Any:
        axes = (in_axes,) * len(args) if in_axes is None or isinstance(in_axes, int) else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"map_tiles: in_axes has {len(axes)} entries for {len(args)} arguments")
        if any(a not in (0, None) for a in axes):
            raise ValueError(f"map_tiles: in_axes = {in_axes!r}: only 0 and None are supported")
        specs = tuple(
            jax.tree.map(lambda leaf: _leading_spec(leaf, axis) if ax == 0 else P(), a)
            for a, ax in zip(args, axes)
        )
        inner = jax.vmap(fn, in_axes=axes)
        out_shape = jax.eval_shape(inner, *args)
        out_specs = jax.tree.map(lambda s: P(axis), out_shape)
        return jax.shard_map(inner, mesh=mesh, in_specs=specs, out_specs=out_specs, check_vma=False)(*args)

    return wrapped


def _row_leaf_spec(leaf: Any, out_size: int, axis: str) -> P:
    if jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] == out_size:
        return P(axis)
    return P()


def shard_rows(state: TileState, mesh: Mesh, axis: str | None = None) -> TileState:
    """Place a tile's row-indexed arrays (weights, per-element device parameters, per-output
    periphery values: every leaf whose leading axis is ``out_size``) split by rows over ``axis``.

    Only the placement changes: any function of the state under ``jax.jit`` gives the same
    result, partitioned by XLA (``forward`` needs no communication across row shards; the
    ``backward`` sum over rows becomes a cross-device reduction).
    """
    axis = axis or mesh.axis_names[0]
    n = mesh.shape[axis]
    if state.out_size % n:
        raise ValueError(f"shard_rows: out_size {state.out_size} is not divisible by the {n} devices of axis {axis!r}")
    return jax.tree.map(
        lambda a: jax.device_put(a, NamedSharding(mesh, _row_leaf_spec(a, state.out_size, axis))), state
    )


def row_sharded_update(
    state: TileState,
    x: Array,
    d: Array,
    lr: float,
    key: Array,
    mesh: Mesh,
    *,
    axis: str | None = None,
    backend: str | None = None,
) -> TileState:
    """``tile.update`` of one single-device pulsed tile with its rows split over ``axis``.

    Bit-identical to ``rpujax.tile.update(state, x, d, lr, key, backend=backend)`` (same backend
    on both sides): the per-sample pulse inputs are computed from the whole ``x`` and ``d`` (so BL,
    A, B and update management see ``max |d|`` over all rows), then each device applies the pulses
    of its ``D / n`` rows with its global row offset (``apply_pulses(row_offset=...)`` of either
    backend, ``jax.lax.axis_index(axis) * D / n``): the FFI kernel (one call per shard) or the
    pure-JAX path, chosen as ``tile.update`` chooses (:func:`rpujax.pulsed.resolve_backend`:
    ``backend`` if given, else ``rpu_config.update.backend``; ``"auto"`` takes the kernel where it
    is built). The x bit lines are drawn identically on every device; the d bit lines and
    per-element normals only for the local rows. Runs as ``jax.jit``-able code; ``lr`` must be a
    Python number.

    Args:
      state: a tile with a pulsed single device (not a compound / unit cell).
      x: ``(..., in_size)`` inputs; d: ``(..., out_size)`` errors (as ``tile.update``).
      lr: learning rate (concrete number). key: the update key.
      mesh: the device mesh; ``axis`` (default its first axis) splits the rows, ``out_size`` must
        be divisible by its size.
      backend: ``"auto"``, ``"ffi"`` or ``"jax"``; None uses ``rpu_config.update.backend``.

    Returns:
      The updated state (weights and persistent weights sharded by rows).

    Raises:
      RuntimeError: ``backend="ffi"`` (given or configured) without the kernels.
      NotImplementedError: for compound devices, floating-point devices or non-pulsed pulse types
        (use ``tile.update`` under ``jax.jit`` with :func:`shard_rows`: the exact update has no
        randomness and no cross-row coupling).
    """
    from rpujax.cells import is_compound  # noqa: PLC0415
    from rpujax.configs.update import PulseType  # noqa: PLC0415
    from rpujax.devices import weight_granularity  # noqa: PLC0415
    from rpujax.pulsed import (  # noqa: PLC0415
        _backend_module, _is_fp_device, kernel_operands, probabilities, pulse_inputs, resolve_backend,
    )
    from rpujax.tile.update import _flatten  # noqa: PLC0415

    axis = axis or mesh.axis_names[0]
    cfg = state.rpu_config
    if is_compound(cfg) or _is_fp_device(cfg.device) or cfg.update.pulse_type in (
        PulseType.NONE, PulseType.NONE_WITH_DEVICE
    ):
        raise NotImplementedError(
            f"row_sharded_update: {type(cfg.device).__name__} with pulse_type {cfg.update.pulse_type}: only "
            "single pulsed devices are supported (use tile.update under jit with shard_rows)"
        )
    n = mesh.shape[axis]
    d_size, x_size = state.weights.shape
    if d_size % n:
        raise ValueError(f"row_sharded_update: out_size {d_size} is not divisible by the {n} devices of axis {axis!r}")
    module = _backend_module(resolve_backend(backend, cfg.update))
    lr = float(lr)
    x2 = _flatten("x", x, state.in_size, state, "in_size")
    d2 = _flatten("d", d, state.out_size, state, "out_size")
    if x2.shape[0] != d2.shape[0]:
        raise ValueError(f"row_sharded_update: x has shape {jnp.shape(x)} and d {jnp.shape(d)}: batches differ")
    if state.bias:
        x2 = jnp.concatenate([x2, jnp.ones((x2.shape[0], 1), x2.dtype)], axis=1)
    if lr == 0.0 or not np.isfinite(lr):
        return state

    device = dict(state.device)
    persistent = device.get("persistent_weights")
    kind, scalars, params = kernel_operands(cfg.device, device, persistent, "row_sharded_update")
    # global: max |d| over all rows enters BL, A, B and update management
    bl, px, pd, key_data, bl_max = pulse_inputs(cfg.update, x2.astype(jnp.float32), d2.astype(jnp.float32), lr,
                                                key, weight_granularity(cfg.device))
    mode = probabilities.pulse_mode(cfg.update.pulse_type)
    local_rows = d_size // n

    def shard(w, p, prm, px, pd, bl, kd):
        offset = jax.lax.axis_index(axis).astype(jnp.int32) * local_rows
        w_new, p_new = module.apply_pulses(
            w, None if p.ndim < 2 else p, prm, px, pd, bl, kd,
            kind=kind, scalars=scalars, mode=mode, bl_max=bl_max, row_offset=offset,
        )
        return w_new, (p if p_new is None else p_new)

    pers = persistent.astype(jnp.float32) if persistent is not None else jnp.zeros((0,), jnp.float32)
    p_spec = P(axis, None) if persistent is not None else P()
    w_new, p_new = jax.shard_map(
        shard,
        mesh=mesh,
        in_specs=(P(axis, None), p_spec, P(None, axis, None), P(), P(None, axis), P(), P()),
        out_specs=(P(axis, None), p_spec),
        check_vma=False,
    )(state.weights.astype(jnp.float32), pers, params, px, pd, bl, key_data)
    if persistent is not None:
        device["persistent_weights"] = p_new.astype(persistent.dtype)
    return state.replace(weights=w_new.astype(state.weights.dtype), device=device)


def shard_batch(tree: Any, mesh: Mesh, axis: str | None = None) -> Any:
    """Data parallelism: place the leading (batch) axis of every array leaf split over ``axis``."""
    return shard_tiles(tree, mesh, axis)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array leaf of ``tree`` (e.g. a model's state) whole on every device of ``mesh``."""
    return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P())), tree)


def replicate_tile_grads(grads: Any, mesh: Mesh) -> Any:
    """Data-parallel pulsed training: gather the tiles' ``x`` and ``d`` on every replica.

    Call it inside the jitted training step between ``rpujax.optim.value_and_grad`` and
    ``optimizer.update``, with the batch sharded (:func:`shard_batch`) and the model replicated
    (:func:`replicate`)::

        loss, grads = rpujax.optim.value_and_grad(loss_fn)(model, x, y)
        grads = rpujax.parallel.replicate_tile_grads(grads, mesh)
        optimizer.update(model, grads, key)

    The pulsed update needs every sample, in order; gathering ``x`` and ``d`` (batch × (in + out)
    values per tile) is much cheaper than all-reducing the weights, and every replica then applies
    the same update with the same key, so the replicated tiles stay identical. The digital
    gradients are left to XLA (a cross-replica sum).
    """
    from rpujax.optim.grad import AnalogGrads  # noqa: PLC0415

    full = NamedSharding(mesh, P())
    tiles = {
        name: g.replace(x=jax.lax.with_sharding_constraint(g.x, full), d=jax.lax.with_sharding_constraint(g.d, full))
        for name, g in grads.tiles.items()
    }
    return AnalogGrads(params=grads.params, tiles=tiles)
