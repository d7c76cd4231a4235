"""``VectorUnitCell`` and ``ReferenceUnitCell`` (spec cells-inference-api §3.1–§3.2).

Visible weight ``W = Σ_k γ_k W_k``. The update policy decides which sub-device an update writes:

- ``ALL``: every sub-device receives the same pulse coincidences (each with its own response and
  its own cycle-to-cycle noise, :func:`rpujax.cells._common.shared_bit_update`).
- ``SINGLE_FIXED``: the device at ``hidden_update_index`` (``set_hidden_update_index``).
- ``SINGLE_SEQUENTIAL``: the index advances by one (mod n) *before* the update, so the first
  update after ``set_weights`` writes device ``first_update_idx + 1`` (spec §7 item 7).
- ``SINGLE_RANDOM``: a uniform random index per update.

Granularity of an update cycle: aihwkit's CPU tile re-selects the device for every vector of a
batch, its CUDA tile once per update call (spec §7 item 27). rpujax follows CUDA: one selection
per :func:`rpujax.tile.update` call, the whole batch goes to that device. Pulses are generated
with the mean granularity of the sub-devices (spec §3.0).

``set_weights(W)``: for every policy but ``SINGLE_FIXED`` the index becomes ``first_update_idx``
and every sub-device is set to ``W`` (clipped to its own bounds), so the visible weight is
``(Σγ)·W`` (spec §7 item 7); with ``SINGLE_FIXED`` only the device at the current index is set
(a ``ReferenceUnitCell`` reference is programmed with index 1). Every sub-device then goes through
its ``onSetWeights`` (clip; write noise redrawn), as in aihwkit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.cells import _common as c
# Cells whose only hidden parameters are their sub-devices': the shared no-extras hooks.
from rpujax.cells._common import extra_hidden_names, get_extra_hidden, set_extra_hidden  # noqa: F401
from rpujax.configs.compounds import VectorUnitCellUpdatePolicy as Policy
from rpujax.tile.state import TileState

Array = jax.Array


def init_aux(cell: Any, rpu_config: Any, key: Array, d_size: int, x_size: int, dtype: Any) -> dict[str, Any]:
    """Bookkeeping: ``update_count`` (vectors since ``set_weights``, aihwkit ``current_update_idx``)."""
    del cell, rpu_config, key, d_size, x_size, dtype
    return {"update_count": jnp.zeros((), jnp.int32)}


def initial_index(cell: Any) -> int:
    """The hidden update index after construction (``first_update_idx``)."""
    return int(cell.first_update_idx)


def reduce(state: TileState) -> Array:
    """``W = Σ_k γ_k W_k``."""
    return c.weighted_sum(state.device["hidden_weights"], c.gammas(state.rpu_config.device))


def set_weights(state: TileState, weights: Array, key: Array | None) -> TileState:
    """aihwkit ``VectorRPUDevice::onSetWeights`` (see the module docstring)."""
    from rpujax.tile.core import set_weights as single_set_weights

    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    fixed = cell.update_policy == Policy.SINGLE_FIXED
    index = state.hidden_update_index if fixed else jnp.full_like(state.hidden_update_index, cell.first_update_idx)
    subs = c.sub_states(state.device, state.drift, cfgs, state.bias)
    new = []
    for k, sub in enumerate(subs):
        target = jnp.where(index == k, weights, sub.weights) if fixed else weights
        sub_key = None if key is None else jax.random.fold_in(key, k)
        new.append(single_set_weights(sub, target, key=sub_key))
    device, drift = c.restack(state.device, state.drift, cfgs, new)
    aux = c.cell_aux(state)
    aux["update_count"] = jnp.zeros_like(aux["update_count"])
    state = c.with_cell_aux(state.replace(device=device, drift=drift, hidden_update_index=index), aux)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


def _select(cell: Any, index: Array, key: Array, n: int) -> Array:
    policy = cell.update_policy
    if policy == Policy.SINGLE_RANDOM:
        u = jax.random.uniform(key, (), jnp.float32)
        return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)
    if policy == Policy.SINGLE_SEQUENTIAL:
        return (index + 1) % n
    return index


def update(state: TileState, x: Array, d: Array, lr: Any, key: Array, backend: str | None) -> TileState:
    """One update call (``x``: ``(B, X)``, ``d``: ``(B, D)``), see the module docstring."""
    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    n = len(cfgs)
    g = c.granularity(cell)
    up = state.rpu_config.update
    k_sel, k_upd = jax.random.split(key)
    device, drift = state.device, state.drift
    index = state.hidden_update_index
    if cell.update_policy == Policy.ALL:
        subs = c.sub_states(device, drift, cfgs, state.bias)
        device, drift = c.restack(device, drift, cfgs, c.shared_bit_update(subs, up, x, d, lr, k_upd, g, backend))
    else:
        index = _select(cell, index, k_sel, n).astype(state.hidden_update_index.dtype)
        idx = jnp.clip(index, 0, n - 1)
        if all(cfg == cfgs[0] for cfg in cfgs):
            # Identical configs share the kernel's static layout: one call on the selected slice.
            sub = c.sub_state(device, drift, cfgs, idx, state.bias, cfg=cfgs[0])
            sub = c.sub_update(sub, up, x, d, lr, k_upd, g, backend)
            device, drift = c.restack(device, drift, cfgs, [sub], at=[idx])
        else:
            def branch(k: int):
                def run(operands):
                    dev, dr = operands
                    sub = c.sub_update(c.sub_state(dev, dr, cfgs, k, state.bias), up, x, d, lr, k_upd, g, backend)
                    return c.restack(dev, dr, cfgs, [sub], at=[k])
                return run

            device, drift = jax.lax.switch(idx, [branch(k) for k in range(n)], (device, drift))
    aux = c.cell_aux(state)
    aux["update_count"] = aux["update_count"] + x.shape[0]
    state = c.with_cell_aux(state.replace(device=device, drift=drift, hidden_update_index=index), aux)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


def lifecycle_targets(cell: Any, op: str) -> tuple[int, ...]:
    """Decay, diffusion, drift, clip and reset act on every sub-device."""
    del op
    return tuple(range(len(c.sub_configs(cell))))


def index_settable(cell: Any) -> bool:
    """``set_hidden_update_index`` selects the device of the next ``SINGLE_*`` update."""
    del cell
    return True
