"""Unit cells and compound devices (spec cells-inference-api §3): the tile functions of compounds.

The tile functions of :mod:`rpujax.tile` (``init``, ``set_weights``, ``update``, the lifecycle
operators, the hidden parameters and the hidden update index) dispatch here when the rpu config is
a ``UnitCellRPUConfig`` or a ``DigitalRankUpdateRPUConfig``. One module per family:

- :mod:`rpujax.cells.vector`: ``VectorUnitCell``, ``ReferenceUnitCell``;
- :mod:`rpujax.cells.onesided`: ``OneSidedUnitCell``;
- :mod:`rpujax.cells.transfer`: ``TransferCompound``, ``BufferedTransferCompound``,
  ``ChoppedTransferCompound``, ``DynamicTransferCompound``;
- :mod:`rpujax.cells.mixed_precision`: ``MixedPrecisionCompound``.

The state layout (sub-devices stacked on a leading device axis) is described in
:mod:`rpujax.cells._common`. The per-pulse work of every sub-device is the single-device kernel of
:mod:`rpujax.pulsed` (either backend); the compound bookkeeping is plain JAX. Every function is
pure and works under ``jit`` and ``vmap``.

Lifecycle of a compound (aihwkit's C++ compounds): ``decay_weights``, ``diffuse_weights`` and
``drift_weights`` act on every sub-device (each with its own parameters and drift memory), then the
visible weight is re-reduced; ``reset`` / ``reset_columns`` act on every sub-device of vector and
one-sided cells, on the fast device 0 only for the transfer family; mixed precision forwards all of
them to its analog device. ``post_update_step`` diffuses (decays) when any sub-device diffuses
(decays).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from rpujax.cells import _common as c
from rpujax.cells import mixed_precision, onesided, transfer, vector
from rpujax.cells._common import CELL, granularity
from rpujax.configs.compounds import (
    MixedPrecisionCompound,
    OneSidedUnitCell,
    TransferCompound,
)
from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "compound_set_weights",
    "compound_update",
    "decay_weights",
    "diffuse_weights",
    "drift_weights",
    "get_hidden_parameters",
    "granularity",
    "hidden_parameter_names",
    "init_compound_state",
    "is_compound",
    "reduce_weights",
    "reset_columns",
    "set_hidden_parameters",
    "set_hidden_update_index",
]


def is_compound(rpu_config: Any) -> bool:
    """Whether a tile with this rpu config is a compound (unit cell or digital rank update)."""
    return c.is_compound_device(getattr(rpu_config, "device", None))


def _mixed(cell: Any) -> bool:
    return isinstance(cell, MixedPrecisionCompound)


def _family(cell: Any) -> Any:
    if c.vector_like(cell):
        return vector
    if isinstance(cell, OneSidedUnitCell):
        return onesided
    if isinstance(cell, TransferCompound):
        return transfer
    raise TypeError(f"{type(cell).__name__} is not a unit cell / compound device")


# ---------------------------------------------------------------------------------------------
# Construction and weights
# ---------------------------------------------------------------------------------------------


def init_compound_state(key: Array, d_size: int, x_size: int, rpu_config: Any, *, dtype: Any = jnp.float32
                        ) -> dict[str, Any]:
    """The compound-specific fields of a new tile: ``device``, ``drift``, ``aux``, ``hidden_update_index``.

    ``rpujax.tile.init`` builds the rest (periphery, initial weights) and then writes the initial
    weights with :func:`compound_set_weights`.

    Args:
      key: key of the device-to-device draws (the cell's non-zero ``construction_seed`` replaces
        it) and of the read periphery of transfers / refresh.
      d_size, x_size: weight shape (``x_size`` includes an analog-bias column).
      rpu_config: a ``UnitCellRPUConfig`` or ``DigitalRankUpdateRPUConfig``.
      dtype: weight dtype.
    """
    cell = rpu_config.device
    if _mixed(cell):
        return mixed_precision.init_parts(key, d_size, x_size, rpu_config, dtype)
    fam = _family(cell)
    cfgs = c.sub_configs(cell)
    k_dev, k_aux = jax.random.split(key)
    device, drift = c.init_stack(
        k_dev, cfgs, d_size, x_size, dtype, construction_seed=cell.construction_seed,
        copy_inverted=isinstance(cell, OneSidedUnitCell) and cell.copy_inverted,
    )
    aux = fam.init_aux(cell, rpu_config, k_aux, d_size, x_size, dtype)
    return {
        "device": device,
        "drift": drift,
        "aux": {CELL: aux},
        "hidden_update_index": jnp.asarray(fam.initial_index(cell), jnp.int32),
    }


def compound_set_weights(state: TileState, weights: Array, key: Array | None) -> TileState:
    """aihwkit ``onSetWeights`` of the compound (see each family's docstring).

    ``weights`` is the full ``(D, X)`` matrix; ``key`` draws the write noise of sub-devices with
    ``write_noise_std > 0`` (required then).
    """
    cell = state.rpu_config.device
    if _mixed(cell):
        return mixed_precision.set_weights(state, weights, key)
    return _family(cell).set_weights(state, weights, key)


def reduce_weights(state: TileState) -> Array:
    """The visible weight computed from the sub-devices (what ``state.weights`` holds)."""
    cell = state.rpu_config.device
    if _mixed(cell):
        return mixed_precision.reduce(state)
    return _family(cell).reduce(state)


# ---------------------------------------------------------------------------------------------
# Update
# ---------------------------------------------------------------------------------------------


def compound_update(state: TileState, x: Array, d: Array, lr: Any, key: Array, *, backend: str | None = None
                    ) -> TileState:
    """One update call of a compound tile: ``x`` ``(B, X)`` (analog-bias column included), ``d``
    ``(B, D)``, tile learning rate ``lr`` (may be traced; 0 or non-finite leaves the tile
    unchanged, as aihwkit's ``update`` returns at once for lr 0)."""
    cell = state.rpu_config.device
    fam = mixed_precision if _mixed(cell) else _family(cell)
    try:
        lr_value = float(lr)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        lr_value = None
    if lr_value is not None:
        if lr_value == 0.0 or not math.isfinite(lr_value):
            return state
        return fam.update(state, x, d, lr_value, key, backend)
    lr_arr = jnp.asarray(lr, jnp.float32)
    skip = (lr_arr == 0.0) | ~jnp.isfinite(lr_arr)
    return jax.lax.cond(skip, lambda s: s, lambda s: fam.update(s, x, d, lr_arr, key, backend), state)


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------


def _per_subdevice(state: TileState, op: str, fn: Callable[[TileState, Array | None], TileState],
                   key: Array | None) -> TileState:
    cell = state.rpu_config.device
    if _mixed(cell):
        return mixed_precision.lifecycle(state, lambda inner: fn(inner, key))
    fam = _family(cell)
    cfgs = c.sub_configs(cell)
    targets = fam.lifecycle_targets(cell, op)
    subs = [c.sub_state(state.device, state.drift, cfgs, k, state.bias) for k in targets]
    new = [fn(sub, None if key is None else jax.random.fold_in(key, k)) for k, sub in zip(targets, subs)]
    device, drift = c.restack(state.device, state.drift, cfgs, new, at=targets)
    state = state.replace(device=device, drift=drift)
    return state.replace(weights=fam.reduce(state).astype(state.weights.dtype))


def decay_weights(state: TileState, alpha: Any = 1.0, *, key: Array | None = None) -> TileState:
    """Decay every sub-device (toward its reset bias), then re-reduce (spec §3, tile-core §5.1)."""
    from rpujax.tile import lifecycle

    return _per_subdevice(state, "decay", lambda s, k: lifecycle.decay_weights(s, alpha, key=k), key)


def diffuse_weights(state: TileState, key: Array) -> TileState:
    """Diffuse every sub-device with its own rates, then re-reduce (tile-core §5.2)."""
    from rpujax.tile import lifecycle

    return _per_subdevice(state, "diffuse", lambda s, k: lifecycle.diffuse_weights(s, k), key)


def drift_weights(state: TileState, delta_t: Any, key: Array) -> TileState:
    """Drift every drifting sub-device with its own memory, then re-reduce (tile-core §5.3)."""
    from rpujax.tile import lifecycle

    return _per_subdevice(state, "drift", lambda s, k: lifecycle.drift_weights(s, delta_t, k), key)


def reset_columns(state: TileState, key: Array, start_column_idx: Any = 0, num_columns: Any = 1,
                  reset_prob: Any = 1.0) -> TileState:
    """Reset columns of every sub-device (vector / one-sided) or of the fast device 0 only
    (transfer family); mixed precision resets its analog device (tile-core §5.4)."""
    from rpujax.tile import lifecycle

    return _per_subdevice(
        state, "reset",
        lambda s, k: lifecycle.reset_columns(s, k, start_column_idx, num_columns, reset_prob), key,
    )


# ---------------------------------------------------------------------------------------------
# Hidden parameters and hidden update index
# ---------------------------------------------------------------------------------------------


def hidden_parameter_names(rpu_config: Any) -> tuple[str, ...]:
    """aihwkit's hidden-parameter names of a compound, in aihwkit's order (spec §1.11).

    For every sub-device ``k``: its single-device names with suffix ``_k`` (``persistent_weights_k``
    included when it has write noise), then ``hidden_weights_k``; then the buffered kinds'
    ``buffered_FP_weight_k`` (k < n−1), or AGAD's ``buffered_FP_weight``, ``running_mean_weight``,
    ``past_mean_weight``. Mixed precision: the analog device's names, then ``hidden_weights_chi``.
    """
    cell = rpu_config.device
    if _mixed(cell):
        return mixed_precision.hidden_parameter_names(rpu_config)
    names: list[str] = []
    for k, cfg in enumerate(c.sub_configs(cell)):
        names.extend(f"{name}_{k}" for name in c.device_names(cfg))
        names.append(f"hidden_weights_{k}")
    names.extend(_family(cell).extra_hidden_names(cell))
    return tuple(names)


def get_hidden_parameters(state: TileState) -> dict[str, Array]:
    """The hidden parameters of a compound tile by aihwkit's names, each ``(D, X)``."""
    cell = state.rpu_config.device
    if _mixed(cell):
        return mixed_precision.get_hidden_parameters(state)
    fam = _family(cell)
    out: dict[str, Array] = {}
    for k, cfg in enumerate(c.sub_configs(cell)):
        for name in c.device_names(cfg):
            out[f"{name}_{k}"] = state.device[name][k]
        out[f"hidden_weights_{k}"] = state.device["hidden_weights"][k]
    out.update(fam.get_extra_hidden(state))
    return {name: out[name] for name in hidden_parameter_names(state.rpu_config)}


def set_hidden_parameters(state: TileState, params: Mapping[str, Any]) -> TileState:
    """Replace the hidden parameters of a compound tile (exactly the names of
    :func:`hidden_parameter_names`, each ``(D, X)``).

    Each sub-device gets its parameters and hidden weight and is re-clipped by the single-device
    ``set_hidden_parameters`` (bounds; write-noise offset kept); then the visible weight is
    re-reduced (aihwkit ``setDeviceParameter``).
    """
    from rpujax.tile import parameters as single

    cell = state.rpu_config.device
    names = hidden_parameter_names(state.rpu_config)
    missing = [n for n in names if n not in params]
    unexpected = [n for n in params if n not in names]
    if missing or unexpected:
        raise ValueError(
            f"set_hidden_parameters: names do not match this tile's hidden parameters; missing {missing}, "
            f"unexpected {unexpected}; expected (in aihwkit's order) {list(names)}"
        )
    shape = tuple(state.weights.shape)
    for name in names:
        if tuple(jnp.shape(params[name])) != shape:
            raise ValueError(
                f"set_hidden_parameters: {name!r} has shape {tuple(jnp.shape(params[name]))}, expected {shape}"
            )
    if _mixed(cell):
        return mixed_precision.set_hidden_parameters(state, dict(params))
    fam = _family(cell)
    cfgs = c.sub_configs(cell)
    dtype = state.weights.dtype
    new = []
    for k, sub in enumerate(c.sub_states(state.device, state.drift, cfgs, state.bias)):
        sub = sub.replace(weights=jnp.asarray(params[f"hidden_weights_{k}"], dtype))
        if "persistent_weights" in sub.device:
            # Keep the sub-device's write-noise offset on top of the new hidden weight.
            device = dict(sub.device)
            device["persistent_weights"] = sub.weights - (state.device["hidden_weights"][k]
                                                          - state.device["persistent_weights"][k])
            sub = sub.replace(device=device)
        sub = single.set_hidden_parameters(sub, {n: params[f"{n}_{k}"] for n in c.device_names(cfgs[k])})
        new.append(sub)
    device, drift = c.restack(state.device, state.drift, cfgs, new)
    state = fam.set_extra_hidden(state.replace(device=device, drift=drift), dict(params))
    return state.replace(weights=fam.reduce(state).astype(dtype))


def set_hidden_update_index(state: TileState, index: Any) -> TileState:
    """Vector / reference cells: select the sub-device of the next ``SINGLE_*`` update (``0 … n−1``).
    One-sided and transfer family: a no-op (aihwkit). Mixed precision: forwarded to its device."""
    cell = state.rpu_config.device
    if _mixed(cell):
        return mixed_precision.set_hidden_update_index(state, index)
    fam = _family(cell)
    if not fam.index_settable(cell):
        return state
    n = len(c.sub_configs(cell))
    if isinstance(index, int) and not 0 <= index < n:
        raise ValueError(f"set_hidden_update_index: index = {index}: expected an int in [0, {n - 1}]")
    value = jnp.asarray(index, jnp.int32)
    return state.replace(hidden_update_index=jnp.broadcast_to(value, state.hidden_update_index.shape))
