"""``MixedPrecisionCompound`` (``DigitalRankUpdateRPUConfig``, spec cells-inference-api §3.8).

The rank update is accumulated digitally on ``χ`` (``aux['cell']['chi']``, aihwkit
``hidden_weights_chi``); whole pulses are transferred to the analog device row by row. Forward and
backward use the analog device's weight; decay, diffusion, drift and reset act on the analog
device only.

Per update call (aihwkit's CUDA timing, spec §3.8 and §7 item 27; its CPU tile checks per vector,
one vector later):

1. per sample, optional quantisation of ``x`` and ``d`` to ``n_bins`` symmetric bins of width
   ``max|v| / floor(n_bins/2)`` with ``rint`` (stochastic rounding adds ``U − 0.5``);
2. ``χ ← χ + lr·Σ_b q(d_b) q(x_b)ᵀ``;
3. with ``k = (vectors before this call) // batch``: if ``transfer_every > 0``, ``k > 0`` and
   ``k mod transfer_every == 0``, rows ``r, …, r + n_rows − 1`` (wrapping; random start with
   ``random_row``) are transferred: ``n = trunc(χ[k, :]/ε)``, ``χ[k, :] −= n·ε`` and the analog
   device gets the pulsed update ``x = n``, ``d = e_k``, ``lr = ε·transfer_lr`` with the tile's
   update parameters and update management + update-BL management forced on, i.e.
   ``W[k, :] ≈ W[k, :] − ε·transfer_lr·n``;
4. the vector counter advances by the batch size.

``set_weights`` zeroes ``χ`` and the counters. The one-sided quantisation defect of aihwkit's CPU
tile (spec §7 item 6: exactly one of ``n_x_bins``, ``n_d_bins`` > 0 corrupts the outer product) is
**not** reproduced; both vectors are quantised as documented.

The analog device (a pulsed device or a vector / reference / one-sided unit cell) is kept in the
tile's own fields (``device``, ``drift``, ``hidden_update_index``, with its unit-cell bookkeeping in
``aux['cell']['inner']``), so it is handled by the single-device or unit-cell code through a
temporary tile with the inner config (:func:`inner_state`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.cells import _common as c
from rpujax.configs.devices import PulsedDevice
from rpujax.tile.state import TileState

Array = jax.Array


@functools.lru_cache(maxsize=None)
def inner_config(rpu_config: Any) -> Any:
    """The rpu config of the analog device: its device, the tile's IO, the transfer update
    (the tile's update parameters with update management and update-BL management on)."""
    from rpujax.configs.compounds import UnitCellRPUConfig
    from rpujax.configs.rpu_configs import SingleRPUConfig

    up = dataclasses.replace(rpu_config.update, update_management=True, update_bl_management=True)
    dev = rpu_config.device.device
    cls = SingleRPUConfig if isinstance(dev, PulsedDevice) else UnitCellRPUConfig
    return cls(device=dev, forward=rpu_config.forward, backward=rpu_config.backward, update=up,
               mapping=rpu_config.mapping)


def inner_state(state: TileState) -> TileState:
    """The analog device as a tile of its own (shares the arrays of ``state``)."""
    aux = c.cell_aux(state)
    inner_aux = {c.CELL: aux["inner"]} if "inner" in aux else {}
    return TileState(
        weights=state.weights, device=state.device, fwd=state.fwd, bwd=state.bwd, nm_value=state.nm_value,
        hidden_update_index=state.hidden_update_index, drift=state.drift, aux=inner_aux,
        rpu_config=inner_config(state.rpu_config), bias=state.bias,
    )


def from_inner(state: TileState, inner: TileState) -> TileState:
    """Write the analog device's tile back into the mixed-precision tile."""
    aux = c.cell_aux(state)
    if c.CELL in inner.aux:
        aux["inner"] = inner.aux[c.CELL]
    state = state.replace(weights=inner.weights, device=inner.device, drift=inner.drift,
                          hidden_update_index=inner.hidden_update_index)
    return c.with_cell_aux(state, aux)


def init_parts(key: Array, d_size: int, x_size: int, rpu_config: Any, dtype: Any) -> dict[str, Any]:
    """``device``, ``drift``, ``aux`` and ``hidden_update_index`` of a new mixed-precision tile."""
    from rpujax.devices import sample_device_parameters
    from rpujax.tile.lifecycle import initial_drift_state

    cell = rpu_config.device
    if cell.construction_seed != 0:
        key = jax.random.key(cell.construction_seed)
    dev = cell.device
    aux: dict[str, Any] = {
        "chi": jnp.zeros((d_size, x_size), dtype),
        "update_count": jnp.zeros((), jnp.int32),
        "row_index": jnp.zeros((), jnp.int32),
    }
    if isinstance(dev, PulsedDevice):
        device = sample_device_parameters(dev, key, d_size, x_size, dtype=dtype)
        drift = initial_drift_state(dev, (d_size, x_size), dtype)
        index = jnp.zeros((), jnp.int32)
    else:
        from rpujax.cells import init_compound_state

        parts = init_compound_state(key, d_size, x_size, inner_config(rpu_config), dtype=dtype)
        device, drift, index = parts["device"], parts["drift"], parts["hidden_update_index"]
        aux["inner"] = parts["aux"][c.CELL]
    granularity_of(cell)  # fails early for a device without granularity
    return {"device": device, "drift": drift, "aux": {c.CELL: aux}, "hidden_update_index": index}


def granularity_of(cell: Any) -> float:
    """``ε``: ``cell.granularity`` or the analog device's weight granularity."""
    if cell.granularity > 0:
        return float(cell.granularity)
    return c.granularity(cell.device)


def reduce(state: TileState) -> Array:
    """The visible weight is the analog device's weight."""
    return state.weights


def set_weights(state: TileState, weights: Array, key: Array | None) -> TileState:
    """Zero ``χ`` and the counters, then set the analog device."""
    from rpujax.tile.core import set_weights as tile_set_weights

    inner = tile_set_weights(inner_state(state), weights, key=key)
    state = from_inner(state, inner)
    aux = c.cell_aux(state)
    aux["chi"] = jnp.zeros_like(aux["chi"])
    aux["update_count"] = jnp.zeros_like(aux["update_count"])
    aux["row_index"] = jnp.zeros_like(aux["row_index"])
    return c.with_cell_aux(state, aux)


def _quantize(v: Array, n_bins: int, stochastic: bool, key: Array) -> Array:
    """Per-sample symmetric quantisation to ``n_bins`` bins (identity for 0)."""
    if n_bins <= 0:
        return v
    half = np.float32(n_bins // 2)
    width = jnp.max(jnp.abs(v), axis=-1, keepdims=True) / half
    width = jnp.where(width == 0.0, 1.0, width)
    scaled = v / width
    if stochastic:
        scaled = scaled + jax.random.uniform(key, v.shape, v.dtype) - 0.5
    return jnp.clip(jnp.rint(scaled), -half, half) * width


def update(state: TileState, x: Array, d: Array, lr: Any, key: Array, backend: str | None) -> TileState:
    """One update call (see the module docstring)."""
    cell = state.rpu_config.device
    batch = x.shape[0]
    k_x, k_d, k_tr = jax.random.split(key, 3)
    qx = _quantize(jnp.asarray(x, jnp.float32), cell.n_x_bins, cell.stoc_round_x, k_x)
    qd = _quantize(jnp.asarray(d, jnp.float32), cell.n_d_bins, cell.stoc_round_d, k_d)
    aux = c.cell_aux(state)
    outer = jax.lax.dot_general(qd, qx, (((0,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST)
    aux["chi"] = (aux["chi"] + jnp.asarray(lr, jnp.float32) * outer).astype(aux["chi"].dtype)
    count = aux["update_count"]
    state = c.with_cell_aux(state, aux)
    n_rows = state.out_size if cell.n_rows_per_transfer < 0 else min(cell.n_rows_per_transfer, state.out_size)
    if cell.transfer_every > 0 and n_rows > 0 and cell.transfer_lr != 0:
        k = count // batch
        due = (k > 0) & (k % cell.transfer_every == 0)
        run = functools.partial(_transfer, n_rows=n_rows, key=k_tr, backend=backend)
        state = jax.lax.cond(due, run, lambda s: s, state)
    aux = c.cell_aux(state)
    aux["update_count"] = count + batch
    return c.with_cell_aux(state, aux)


def _transfer(state: TileState, *, n_rows: int, key: Array, backend: str | None) -> TileState:
    from rpujax.cells import compound_update

    cell = state.rpu_config.device
    d_size = state.out_size
    eps = np.float32(granularity_of(cell))
    k_row, k_upd = jax.random.split(key)
    aux = c.cell_aux(state)
    start = aux["row_index"]
    if cell.random_row and n_rows < d_size:
        u = jax.random.uniform(k_row, (), jnp.float32)
        start = jnp.clip(jnp.floor(u * d_size).astype(jnp.int32), 0, d_size - 1)
    rows = (start + jnp.arange(n_rows)) % d_size
    chi = aux["chi"]
    chi_rows = chi[rows]
    steps = jnp.trunc(chi_rows / eps)
    aux["chi"] = chi.at[rows].set(chi_rows - steps * eps)
    aux["row_index"] = ((start + n_rows) % d_size).astype(jnp.int32)
    state = c.with_cell_aux(state, aux)
    inner = inner_state(state)
    onehot = jax.nn.one_hot(rows, d_size, dtype=jnp.float32)
    lr = eps * np.float32(cell.transfer_lr)
    if isinstance(cell.device, PulsedDevice):
        inner = c.sub_update(inner, inner.rpu_config.update, steps, onehot, lr, k_upd,
                             c.granularity(cell.device), backend)
    else:
        inner = compound_update(inner, steps, onehot, lr, k_upd, backend=backend)
    return from_inner(state, inner)


def hidden_parameter_names(rpu_config: Any) -> tuple[str, ...]:
    """The analog device's names, then ``hidden_weights_chi``."""
    from rpujax.tile.parameters import hidden_parameter_names as names_of

    return tuple(names_of(inner_config(rpu_config))) + ("hidden_weights_chi",)


def get_hidden_parameters(state: TileState) -> dict[str, Array]:
    """The analog device's hidden parameters and ``χ``."""
    from rpujax.tile.parameters import get_hidden_parameters as get_of

    out = dict(get_of(inner_state(state)))
    out["hidden_weights_chi"] = c.cell_aux(state)["chi"]
    return out


def set_hidden_parameters(state: TileState, params: dict[str, Array]) -> TileState:
    """Replace the analog device's hidden parameters and ``χ``."""
    from rpujax.tile.parameters import set_hidden_parameters as set_of

    inner_params = {k: v for k, v in params.items() if k != "hidden_weights_chi"}
    state = from_inner(state, set_of(inner_state(state), inner_params))
    aux = c.cell_aux(state)
    aux["chi"] = jnp.asarray(params["hidden_weights_chi"], aux["chi"].dtype)
    return c.with_cell_aux(state, aux)


def set_hidden_update_index(state: TileState, index: Any) -> TileState:
    """Forwarded to the analog device (a no-op for a pulsed device)."""
    from rpujax.tile.parameters import set_hidden_update_index as set_index

    return from_inner(state, set_index(inner_state(state), index))


def lifecycle(state: TileState, fn: Any) -> TileState:
    """Apply a tile operator ``fn(tile) -> tile`` to the analog device only."""
    return from_inner(state, fn(inner_state(state)))
