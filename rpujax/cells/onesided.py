"""``OneSidedUnitCell`` (spec cells-inference-api §3.3): a potentiation-only device pair.

Sub-device 0 is ``g−``, sub-device 1 is ``g+``; visible ``W = W_{g+} − W_{g−}``. Both are draws
of the first configured device (aihwkit ignores a second one, spec §7 item 8); with
``copy_inverted`` device 1's own up/down steps are swapped and its bounds mirrored.

Update: the coincidences of a sample are drawn once; a coincidence that asks for an increase is an
up pulse on ``g+``, one that asks for a decrease an up pulse on ``g−``. With the single-device
kernel this is four calls with the same key on sign-masked pulse inputs: the bit of column ``j``
(row ``i``) depends only on the key and ``|p_j|`` (``|p_i|``), so the masked calls see exactly the
coincidences of the full sample, restricted to the elements of one sign pattern. An element's
pulses of different samples may be applied in another order than aihwkit's, which does not
change their distribution (they are all up pulses of the same device).

Refresh: after an update call, if the vector counter crossed a multiple of
``P = refresh_every·(batch if units_in_mbatch else 1)`` (aihwkit's CPU tile checks after every
vector, its CUDA tile at multiples of the batch; rpujax checks once per call, as CUDA), every
column ``j`` of both devices is read with ``refresh_forward``; elements with
``(wp > wm and wp/M > upper and wm/M > lower) or (wp ≤ wm and wp/M > lower and wm/M > upper)``
(``M = |w_max|`` of the device config) are reset on both devices and the difference is rewritten
onto the larger one with ``refresh_update`` (``x = e_j``, ``lr = −1``). As in aihwkit, refresh is
not available with write noise (aihwkit aborts; rpujax raises at ``init``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.cells import _common as c
# Cells whose only hidden parameters are their sub-devices': the shared no-extras hooks.
from rpujax.cells._common import extra_hidden_names, get_extra_hidden, set_extra_hidden  # noqa: F401
from rpujax.tile.state import TileState

Array = jax.Array

G_MINUS = 0
G_PLUS = 1


def init_aux(cell: Any, rpu_config: Any, key: Array, d_size: int, x_size: int, dtype: Any) -> dict[str, Any]:
    """Counters and the periphery parameters of the refresh reads."""
    from rpujax.devices import uses_persistent_weights
    from rpujax.tile.mvm import sample_periphery_parameters

    del rpu_config
    cfgs = c.sub_configs(cell)
    if cell.refresh_every > 0 and uses_persistent_weights(cfgs[0]):
        raise ValueError(
            "OneSidedUnitCell: refresh (refresh_every > 0) is not available with write noise "
            f"(write_noise_std = {cfgs[0].write_noise_std}); aihwkit aborts as well"
        )
    aux: dict[str, Any] = {
        "update_count": jnp.zeros((), jnp.int32),
        "refresh_count": jnp.zeros((), jnp.int32),
    }
    if cell.refresh_every > 0:
        aux["refresh_fwd"] = sample_periphery_parameters(cell.refresh_forward, key, d_size, x_size, dtype=dtype)
    return aux


def initial_index(cell: Any) -> int:
    """Always 0 (set is a no-op)."""
    del cell
    return 0


def reduce(state: TileState) -> Array:
    """``W = W_{g+} − W_{g−}``."""
    hidden = state.device["hidden_weights"]
    return hidden[G_PLUS] - hidden[G_MINUS]


def set_weights(state: TileState, weights: Array, key: Array | None) -> TileState:
    """``W_{g+} = max(W, 0)``, ``W_{g−} = max(−W, 0)``, each clipped by its device; counters reset."""
    from rpujax.tile.core import set_weights as single_set_weights

    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    subs = c.sub_states(state.device, state.drift, cfgs, state.bias)
    targets = {G_PLUS: jnp.maximum(weights, 0.0), G_MINUS: jnp.maximum(-weights, 0.0)}
    new = [
        single_set_weights(sub, targets[k], key=None if key is None else jax.random.fold_in(key, k))
        for k, sub in enumerate(subs)
    ]
    device, drift = c.restack(state.device, state.drift, cfgs, new)
    aux = c.cell_aux(state)
    aux["update_count"] = jnp.zeros_like(aux["update_count"])
    aux["refresh_count"] = jnp.zeros_like(aux["refresh_count"])
    state = c.with_cell_aux(state.replace(device=device, drift=drift), aux)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


def _routed(sub_p: TileState, sub_m: TileState, up: Any, x: Array, d: Array, lr: Any, key: Array, g: float,
            backend: str | None) -> tuple[TileState, TileState]:
    """Route one batch: increases → up pulses on g+, decreases → up pulses on g−."""
    x = jnp.asarray(x, jnp.float32)
    d = jnp.asarray(d, jnp.float32)

    def pos(v):
        return jnp.where(v > 0, v, 0.0)

    def neg(v):
        return jnp.where(v < 0, v, 0.0)

    if c.is_fp_update(up):
        # Exact steps with the same routing: (x+, d−) and (x−, d+) ask for increases.
        k1, k2 = jax.random.split(key)
        sub_p = c.sub_update(sub_p, up, jnp.concatenate([pos(x), neg(x)]), jnp.concatenate([neg(d), pos(d)]),
                             lr, k1, g, backend)
        sub_m = c.sub_update(sub_m, up, jnp.concatenate([pos(x), neg(x)]), jnp.concatenate([-pos(d), -neg(d)]),
                             lr, k2, g, backend)
        return sub_p, sub_m
    from rpujax.pulsed import pulse_inputs, resolve_backend

    name = resolve_backend(backend, up)
    bl, px, pd, key_data, bl_max = pulse_inputs(up, x, d, lr, key, g)
    # (sign px)·(sign pd) < 0 is an up pulse in the kernel (W ← W − lr d xᵀ).
    sub_p = c.apply_inputs(sub_p, up, bl, pos(px), neg(pd), key_data, bl_max, name)
    sub_p = c.apply_inputs(sub_p, up, bl, neg(px), pos(pd), key_data, bl_max, name)
    sub_m = c.apply_inputs(sub_m, up, bl, pos(px), -pos(pd), key_data, bl_max, name)
    sub_m = c.apply_inputs(sub_m, up, bl, neg(px), -neg(pd), key_data, bl_max, name)
    return sub_p, sub_m


def update(state: TileState, x: Array, d: Array, lr: Any, key: Array, backend: str | None) -> TileState:
    """One update call, then the refresh check (see the module docstring)."""
    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    up = state.rpu_config.update
    k_upd, k_ref = jax.random.split(key)
    subs = c.sub_states(state.device, state.drift, cfgs, state.bias)
    sub_p, sub_m = _routed(subs[G_PLUS], subs[G_MINUS], up, x, d, lr, k_upd, c.granularity(cell), backend)
    device, drift = c.restack(state.device, state.drift, cfgs, [sub_m, sub_p], at=[G_MINUS, G_PLUS])
    aux = c.cell_aux(state)
    old = aux["update_count"]
    new = old + x.shape[0]
    aux["update_count"] = new
    state = c.with_cell_aux(state.replace(device=device, drift=drift), aux)
    if cell.refresh_every > 0:
        period = cell.refresh_every * (x.shape[0] if cell.units_in_mbatch else 1)
        due = (new // period) > (old // period)
        state = jax.lax.cond(due, functools.partial(_refresh, key=k_ref, backend=backend), lambda s: s, state)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


def _reset_at(sub: TileState, mask: Array, key: Array) -> TileState:
    """aihwkit ``resetAtIndices``: ``clip(reset_bias + reset_std·ξ)`` where ``mask``."""
    cfg = sub.rpu_config.device
    w = sub.weights
    value = sub.device["reset_bias"]
    if cfg.reset_std > 0:
        value = value + np.float32(cfg.reset_std) * jax.random.normal(key, w.shape, w.dtype)
    value = jnp.clip(value, sub.device["min_bound"], sub.device["max_bound"])
    return sub.replace(weights=jnp.where(mask, value, w).astype(w.dtype))


def _refresh(state: TileState, *, key: Array, backend: str | None) -> TileState:
    from rpujax.tile.mvm import analog_forward

    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    aux = c.cell_aux(state)
    x_size = state.x_size
    eye = jnp.eye(x_size, dtype=state.weights.dtype)
    k_p, k_m, k_rp, k_rm, k_wp, k_wm = jax.random.split(key, 6)
    subs = c.sub_states(state.device, state.drift, cfgs, state.bias)
    sub_p, sub_m = subs[G_PLUS], subs[G_MINUS]
    nm = jnp.asarray(-1.0, state.weights.dtype)
    # Row j of a read is column j of the device (one-hot input e_j).
    wp = analog_forward(cell.refresh_forward, sub_p.weights, aux["refresh_fwd"], eye, k_p, nm)[0].T
    wm = analog_forward(cell.refresh_forward, sub_m.weights, aux["refresh_fwd"], eye, k_m, nm)[0].T
    m_p = abs(float(cfgs[G_PLUS].w_max))
    m_m = abs(float(cfgs[G_MINUS].w_max))
    upper = np.float32(cell.refresh_upper_thres)
    lower = np.float32(cell.refresh_lower_thres)
    larger = wp > wm
    crit = jnp.where(
        larger,
        (wp / m_p > upper) & (wm / m_m > lower),
        (wp / m_p > lower) & (wm / m_m > upper),
    )
    sub_p = _reset_at(sub_p, crit, k_rp)
    sub_m = _reset_at(sub_m, crit, k_rm)
    d_p = jnp.where(crit & larger, wp - wm, 0.0)
    d_m = jnp.where(crit & ~larger, wm - wp, 0.0)
    up = cell.refresh_update
    # One sample per column j: x = e_j, d = column j of the difference, lr = −1 ⇒ W[:, j] += d.
    sub_p = c.sub_update(sub_p, up, eye, d_p.T, -1.0, k_wp, c.granularity(cfgs[G_PLUS]), backend)
    sub_m = c.sub_update(sub_m, up, eye, d_m.T, -1.0, k_wm, c.granularity(cfgs[G_MINUS]), backend)
    device, drift = c.restack(state.device, state.drift, cfgs, [sub_m, sub_p], at=[G_MINUS, G_PLUS])
    aux["refresh_count"] = aux["refresh_count"] + jnp.sum(crit, dtype=jnp.int32)
    return c.with_cell_aux(state.replace(device=device, drift=drift), aux)


def lifecycle_targets(cell: Any, op: str) -> tuple[int, ...]:
    """Decay, diffusion, drift and reset act on both devices (a reset with ``reset_prob < 1`` may
    hit only one of a pair, as in aihwkit)."""
    del cell, op
    return (G_MINUS, G_PLUS)


def index_settable(cell: Any) -> bool:
    """``set_hidden_update_index`` is a no-op (both devices are always updated)."""
    del cell
    return False
