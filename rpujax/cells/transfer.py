"""The transfer family (spec cells-inference-api §3.4–§3.7): Tiki-Taka v1, TTv2, c-TTv2, AGAD.

Device 0 (``A``, fast) receives the gradient updates; transfers move what it learned to device 1
(``C``) and onwards. Every update call is scanned vector by vector, as aihwkit's CPU tile does
(its CUDA tile chunks the batch at the transfer points and gives the same schedule, spec §3.0):
per vector ``v`` the gradient step on ``A`` (the single-device kernel with batch 1 and the mean
granularity of all sub-devices), then the vector counter ``c`` advances and device ``j``
transfers to ``j + 1`` when ``c mod every_j == 0`` (``every_j = ceil(te_j·batch)`` with
``units_in_mbatch``, else ``round(te_j)``). When all transfers of a call can only follow one vector
(every period a multiple of the batch, as with ``units_in_mbatch`` and ``transfer_every = 1``, or
one period of at least the batch, as in the c-TTv2/AGAD presets), ``A`` is updated in two kernel
calls around that vector instead of one per vector (:func:`_chunk_rule`,
:func:`_update_in_two_chunks`; same distribution, other random draws).

Transfer reads go through ``transfer_forward`` with noise and bound management forced off
(forward passes with one-hot inputs for columns, backward passes for rows); writes are pulsed
updates with ``transfer_update`` and the *target* device's granularity. Bookkeeping lives in
``state.aux['cell']``: ``update_count`` (vectors since ``set_weights``), ``slice_idx`` (next
column / row per source device), the read periphery (``transfer_fwd`` / ``transfer_bwd``) and,
for the buffered kinds, ``buffer`` (``(n−1, D, X)``; aihwkit ``buffered_FP_weight_k``), for the
chopped kinds ``in_chopper`` / ``out_chopper`` (bool, True = −1), ``transfer_counter`` (full
passes), ``m_x`` / ``m_d`` (auto-scale estimates), ``count_lr`` (the last fast lr), and for AGAD
``running_mean``, ``past_mean``, ``in_chopper_switched``.

Decisions on aihwkit's quirks (spec §7):

- item 3 (``scale_fast_lr`` default differs by class) and item 4 (geometric periods use
  ``out_size``): reproduced.
- item 18 (with ``n_reads_per_transfer > 1``, a reset after a read resets all columns of that
  read block, including ones not yet read): reproduced, it is aihwkit's CPU behaviour.
- item 20 (buffers, choppers, auto-scale estimates and the chopper pass counter survive
  ``set_weights``): reproduced.
- item 5 (CPU de-chopping of the visible weight indexes the wrong element): **not** reproduced;
  the visible weight is ``γ_A·c_d[i]·c_x[j]·A_ij + Σ_{k≥1} γ_k W_k``, as intended (and as on CUDA).
- item 28 (CPU: with ``transfer_every < 0`` the last device's auto period fires extra A→C
  transfers): **not** reproduced, C has no period of its own (CUDA has no such stream).
- item 27: the CUDA tile's missing tail chunk is not reproduced; every vector updates ``A``.
- auto-scale (``auto_scale=True``): estimates are updated per vector with
  ``τ = (1 − auto_momentum)/batch`` before the vector's fast lr is computed (aihwkit's CPU tile;
  the CUDA tile updates them once per call).
- fully hidden (``gamma = 0``, ``γ_last = 1``) ``set_weights``: the other devices are zeroed
  including their persistent weights (aihwkit zeroes only their apparent weights).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.cells import _common as c
from rpujax.configs.compounds import BufferedTransferCompound, DynamicTransferCompound
from rpujax.configs.io import BoundManagementType, IOParameters, NoiseManagementType
from rpujax.tile.state import TileState

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Static helpers
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def transfer_io(io: IOParameters) -> IOParameters:
    """The transfer-read IO: ``transfer_forward`` with noise and bound management off."""
    return dataclasses.replace(io, noise_management=NoiseManagementType.NONE,
                               bound_management=BoundManagementType.NONE)


def in_out_sizes(cell: Any, d_size: int, x_size: int) -> tuple[int, int]:
    """``(in_size, out_size)`` of the transfer: ``(X, D)`` for columns, ``(D, X)`` for rows."""
    return (x_size, d_size) if cell.transfer_columns else (d_size, x_size)


def _roundf(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def transfer_periods(cell: Any, batch: int, d_size: int, x_size: int) -> tuple[int, ...]:
    """Transfer period (in vectors) of every source device ``j`` for a batch of ``batch`` vectors.

    ``te`` per device: ``transfer_every_vec`` or geometric ``te_{k+1} = te_k·out_size/n_reads``
    (spec §7 item 4), last device 0 with ``no_self_transfer``; then ``max(ceil(te·batch), 0)`` with
    ``units_in_mbatch`` else ``max(round(te), 0)``. Chopped kinds with ``transfer_every < 0``:
    ``max(1, round(n_states_A / in_size · |transfer_every|))`` for device 0 (spec §3.6).
    """
    cfgs = c.sub_configs(cell)
    n = len(cfgs)
    in_size, out_size = in_out_sizes(cell, d_size, x_size)
    n_reads = min(cell.n_reads_per_transfer, in_size)
    if cell.transfer_every_vec:
        te = list(cell.transfer_every_vec)
    else:
        te = []
        value = np.float32(cell.transfer_every)
        for _ in range(n):
            te.append(float(value))
            value = np.float32(value * (np.float32(out_size) / np.float32(n_reads)))
        if cell.no_self_transfer:
            te[-1] = 0.0
    periods = []
    for j in range(n):
        if c.chopped(cell) and cell.transfer_every < 0:
            # spec §7 item 28: no auto period of its own for the last device (not reproduced).
            if j == 0:
                auto = c.num_states(cfgs[0]) / in_size * abs(cell.transfer_every)
                periods.append(max(1, _roundf(float(np.float32(auto)))))
            else:
                periods.append(0)
            continue
        if cell.units_in_mbatch:
            periods.append(max(int(np.ceil(np.float32(te[j]) * np.float32(batch))), 0))
        else:
            periods.append(max(_roundf(te[j]), 0))
    if c.chopped(cell):
        periods[1:] = [0] * (n - 1)
    return tuple(periods)


def _is_buffered(cell: Any) -> bool:
    return isinstance(cell, BufferedTransferCompound) or c.chopped(cell)


def _dynamic(cell: Any) -> bool:
    return isinstance(cell, DynamicTransferCompound)


def _n_chop_samples(cell: Any) -> int:
    if cell.in_chop_prob > 0:
        return max(int(np.ceil(np.float32(1.0) / np.float32(cell.in_chop_prob))), 2)
    return 2


# ---------------------------------------------------------------------------------------------
# Construction, reduction, set_weights
# ---------------------------------------------------------------------------------------------


def init_aux(cell: Any, rpu_config: Any, key: Array, d_size: int, x_size: int, dtype: Any) -> dict[str, Any]:
    """The transfer bookkeeping of a new tile (see the module docstring)."""
    from rpujax.tile.mvm import sample_periphery_parameters

    del rpu_config
    n = len(c.sub_configs(cell))
    in_size, out_size = in_out_sizes(cell, d_size, x_size)
    io = transfer_io(cell.transfer_forward)
    aux: dict[str, Any] = {
        "update_count": jnp.zeros((), jnp.int32),
        "slice_idx": jnp.zeros((n,), jnp.int32),
    }
    if cell.transfer_columns:
        aux["transfer_fwd"] = sample_periphery_parameters(io, key, d_size, x_size, dtype=dtype)
    else:
        aux["transfer_bwd"] = sample_periphery_parameters(io, key, x_size, d_size, dtype=dtype)
    if _is_buffered(cell):
        aux["buffer"] = jnp.zeros((n - 1, d_size, x_size), dtype)
    if c.chopped(cell):
        aux["in_chopper"] = jnp.zeros((in_size,), bool)
        aux["out_chopper"] = jnp.zeros((out_size,), bool)
        aux["transfer_counter"] = jnp.zeros((), jnp.int32)
        aux["m_x"] = jnp.zeros((), jnp.float32)
        aux["m_d"] = jnp.zeros((), jnp.float32)
        aux["count_lr"] = jnp.zeros((), jnp.float32)
    if _dynamic(cell):
        aux["running_mean"] = jnp.zeros((d_size, x_size), dtype)
        aux["past_mean"] = jnp.zeros((d_size, x_size), dtype)
        aux["in_chopper_switched"] = jnp.zeros((in_size,), bool)
    return aux


def initial_index(cell: Any) -> int:
    """Always 0: only the fast device is updated (aihwkit forces ``SINGLE_FIXED``, index 0)."""
    del cell
    return 0


def _chop_signs(cell: Any, aux: dict[str, Any]) -> tuple[Array, Array]:
    """``(c_d, c_x)``: ±1 chopper signs over rows and columns (spec §3.6)."""
    inc = jnp.where(aux["in_chopper"], -1.0, 1.0)
    outc = jnp.where(aux["out_chopper"], -1.0, 1.0)
    return (outc, inc) if cell.transfer_columns else (inc, outc)


def _reduce(cell: Any, hidden: Array, aux: dict[str, Any]) -> Array:
    if c.fully_hidden(cell):
        return hidden[-1]
    gamma = c.gammas(cell)
    if c.chopped(cell) and gamma[0] != 0.0:
        c_d, c_x = _chop_signs(cell, aux)
        fast = np.float32(gamma[0]) * (c_d[:, None] * c_x[None, :]) * hidden[0]
        return fast + c.weighted_sum(hidden, (0.0,) + tuple(gamma[1:]))
    return c.weighted_sum(hidden, gamma)


def reduce(state: TileState) -> Array:
    """Visible weight: the last device if fully hidden, else ``Σ γ_k W_k`` (chopped kinds: the
    fast weight de-chopped, ``γ_A·c_d[i]·c_x[j]·A_ij``)."""
    return _reduce(state.rpu_config.device, state.device["hidden_weights"], c.cell_aux(state))


def set_weights(state: TileState, weights: Array, key: Array | None) -> TileState:
    """``W_{n−1} ← W/γ_{n−1}``, the others 0, each through its ``onSetWeights``; counters reset.

    Buffers, choppers and auto-scale estimates are kept (spec §7 item 20).
    """
    from rpujax.tile.core import set_weights as single_set_weights

    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    n = len(cfgs)
    gamma = c.gammas(cell)
    fully = c.fully_hidden(cell)
    subs = c.sub_states(state.device, state.drift, cfgs, state.bias)
    new = []
    for k, sub in enumerate(subs):
        sub_key = None if key is None else jax.random.fold_in(key, k)
        if k == n - 1:
            target = weights if fully else weights / np.float32(gamma[-1])
            new.append(single_set_weights(sub, target, key=sub_key))
        elif fully:
            device = dict(sub.device)
            if "persistent_weights" in device:
                device["persistent_weights"] = jnp.zeros_like(device["persistent_weights"])
            new.append(sub.replace(weights=jnp.zeros_like(sub.weights), device=device))
        else:
            new.append(single_set_weights(sub, jnp.zeros_like(weights), key=sub_key))
    device, drift = c.restack(state.device, state.drift, cfgs, new)
    aux = c.cell_aux(state)
    aux["update_count"] = jnp.zeros_like(aux["update_count"])
    aux["slice_idx"] = jnp.zeros_like(aux["slice_idx"])
    state = c.with_cell_aux(state.replace(device=device, drift=drift), aux)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


# ---------------------------------------------------------------------------------------------
# Update
# ---------------------------------------------------------------------------------------------


def _base_fast_lr(cell: Any, lr: Array) -> Array:
    """aihwkit ``TransferRPUDevice::getPulseCountLearningRate``."""
    if cell.fast_lr > 0:
        return np.float32(cell.fast_lr) * lr if cell.scale_fast_lr else jnp.full_like(lr, np.float32(cell.fast_lr))
    return lr


def _auto_scaled_lr(cell: Any, m_x: Array, m_d: Array, lr: Array, up: Any, dw_a: float) -> Array:
    """The fast lr of the chopped kinds with ``auto_scale`` and ``fast_lr > 0`` from the running
    estimates of ``max|x|`` and ``max|d|`` (scalars, or one per vector)."""
    scale = jnp.where((m_x > 0) & (m_d > 0), m_x * m_d, 1.0)
    count_lr = np.float32(cell.fast_lr * up.desired_bl * dw_a) / scale
    return count_lr * lr if cell.scale_fast_lr else count_lr


def _transfers_after(device: dict[str, Array], aux: dict[str, Any], count: Array, v: Array, fire: Any, *,
                     cell: Any, cfgs: Any, periods: tuple[int, ...], lr: Array, count_lr: Array, k_tr: Array,
                     drift: dict[str, Array], bias: bool, backend: str | None
                     ) -> tuple[dict[str, Array], dict[str, Any]]:
    """The transfers due after vector ``v`` (vector counter now ``count``): device ``j`` moves to
    ``j + 1`` where ``fire`` and ``count mod period_j == 0``, with key ``fold_in(k_tr, v, j)``."""
    for j, period in enumerate(periods[:-1]):
        if period <= 0:
            continue
        k_ev = jax.random.fold_in(jax.random.fold_in(k_tr, v), j)
        event = functools.partial(_transfer_event, cell=cell, cfgs=cfgs, j=j, lr=lr, count_lr=count_lr,
                                  key=k_ev, drift=drift, bias=bias, backend=backend)
        device, aux = jax.lax.cond(fire & (count % period == 0), event, lambda ops: ops, (device, aux))
    return device, aux


def _update_auto_scale(m: Array, new: Array, tau: float) -> Array:
    """aihwkit ``updateAutoScale``: the first value initialises, non-positive values are skipped."""
    ema = (1.0 - tau) * m + tau * new
    return jnp.where(m <= 0.0, new, jnp.where(new <= 0.0, m, ema))


def _transfer_lr(cell: Any, j: int, lr: Array) -> Array:
    """Transfer lr of source device ``j``; buffered kinds multiply by ``γ_j/γ_{j+1}`` when both > 0."""
    lr_vec = cell.transfer_lr_vec or (cell.transfer_lr,) * len(c.sub_configs(cell))
    out = np.float32(lr_vec[j]) * (lr if cell.scale_transfer_lr else jnp.ones_like(lr))
    if _is_buffered(cell):
        gamma = c.gammas(cell)
        if gamma[j] > 0 and gamma[j + 1] > 0:
            out = out * np.float32(gamma[j] / gamma[j + 1])
    return out


def _buffer_granularity(cell: Any, dw_a: float, in_size: int) -> float:
    """aihwkit ``getBufferGranularity``."""
    bg = float(cell.buffer_granularity) if cell.buffer_granularity > 0 else 1.0
    if cell.auto_granularity > 0:
        period = in_size * abs(float(cell.transfer_every))
        return bg * dw_a * float(cell.auto_granularity) / period
    return bg * dw_a


def update(state: TileState, x: Array, d: Array, lr: Any, key: Array, backend: str | None) -> TileState:
    """One update call: scanned over the vectors of the batch, or in two chunks (module docstring)."""
    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    batch = x.shape[0]
    d_size, x_size = state.weights.shape
    periods = transfer_periods(cell, batch, d_size, x_size)
    up = state.rpu_config.update
    g = c.granularity(cell)
    lr = jnp.asarray(lr, jnp.float32)
    dw_a = c.granularity(cfgs[0])
    drift = state.drift
    bias = state.bias
    k_fast, k_tr = jax.random.split(key)
    chop = c.chopped(cell)
    tau = (1.0 - float(cell.auto_momentum)) / batch if chop else 0.0

    def step(carry, inputs):
        device, aux = carry
        xv, dv, v = inputs
        aux = dict(aux)
        if chop and cell.auto_scale:
            aux["m_x"] = _update_auto_scale(aux["m_x"], jnp.max(jnp.abs(xv)), tau)
            aux["m_d"] = _update_auto_scale(aux["m_d"], jnp.max(jnp.abs(dv)), tau)
        if _varying_fast_lr(cell):
            count_lr = _auto_scaled_lr(cell, aux["m_x"], aux["m_d"], lr, up, dw_a)
        else:
            count_lr = _base_fast_lr(cell, lr)
        if chop:
            aux["count_lr"] = count_lr
            c_d, c_x = _chop_signs(cell, aux)
            xv = xv * c_x
            dv = dv * c_d
        sub0 = c.sub_state(device, drift, cfgs, 0, bias)
        sub0 = c.sub_update(sub0, up, xv[None], dv[None], count_lr, jax.random.fold_in(k_fast, v), g, backend)
        device, _ = c.restack(device, drift, cfgs, [sub0], at=[0])
        count = aux["update_count"] + 1
        aux["update_count"] = count
        device, aux = _transfers_after(device, aux, count, v, True, cell=cell, cfgs=cfgs, periods=periods, lr=lr,
                                       count_lr=count_lr, k_tr=k_tr, drift=drift, bias=bias, backend=backend)
        return (device, aux), None

    x = jnp.asarray(x, jnp.float32)
    d = jnp.asarray(d, jnp.float32)
    rule = _chunk_rule(cell, periods, batch, up)
    if rule is not None:
        return _update_in_two_chunks(state, x, d, lr, k_fast, k_tr, periods, rule, backend)
    (device, aux), _ = jax.lax.scan(step, (state.device, c.cell_aux(state)), (x, d, jnp.arange(batch)))
    state = c.with_cell_aux(state.replace(device=device), aux)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


def _chunk_rule(cell: Any, periods: tuple[int, ...], batch: int, update: Any) -> str | None:
    """How a batch can update ``A`` in two kernel calls instead of one per vector, or None.

    Two calls suffice when at most one vector of the batch is followed by transfers: ``"aligned"``
    when every period is a multiple of the batch (e.g. ``units_in_mbatch`` with an integer
    ``transfer_every``: the transfers follow the vector after which the counter is a multiple of
    the batch), ``"single"`` when one source device transfers with a period of at least the batch.
    A fast lr that changes from vector to vector (chopped kinds with ``auto_scale``) is folded
    into ``d``, which leaves the pulse probabilities unchanged only with update and BL management
    (``lr·max|x|·max|d|`` is what they see) or for exact updates; otherwise None.
    """
    active = [p for p in periods if p > 0]
    if batch <= 1 or not active:
        return None
    if _varying_fast_lr(cell) and not (c.is_fp_update(update) or (
            update.effective_update_management and update.update_bl_management)):
        return None
    if all(p % batch == 0 for p in active):
        return "aligned"
    if len(active) == 1 and active[0] >= batch:
        return "single"
    return None


def _varying_fast_lr(cell: Any) -> bool:
    return c.chopped(cell) and cell.auto_scale and cell.fast_lr > 0


def _per_vector_fast_lr(cell: Any, aux: dict[str, Any], x: Array, d: Array, lr: Array, up: Any,
                        dw_a: float) -> tuple[Array, dict[str, Any]]:
    """The fast lr of every vector, ``(batch,)``, and the auto-scale estimates after the batch.

    The same per-vector recurrence as the scan in :func:`update` (estimates first, then the lr),
    on scalars only.
    """
    batch = x.shape[0]
    aux = dict(aux)
    base = _base_fast_lr(cell, lr)
    if not (c.chopped(cell) and cell.auto_scale):
        return jnp.broadcast_to(base, (batch,)), aux
    tau = (1.0 - float(cell.auto_momentum)) / batch

    def estimate(carry, xd):
        m_x = _update_auto_scale(carry[0], jnp.max(jnp.abs(xd[0])), tau)
        m_d = _update_auto_scale(carry[1], jnp.max(jnp.abs(xd[1])), tau)
        return (m_x, m_d), (m_x, m_d)

    (aux["m_x"], aux["m_d"]), (m_x, m_d) = jax.lax.scan(estimate, (aux["m_x"], aux["m_d"]), (x, d))
    if cell.fast_lr <= 0:
        return jnp.broadcast_to(base, (batch,)), aux
    return _auto_scaled_lr(cell, m_x, m_d, lr, up, dw_a), aux


def _update_in_two_chunks(state: TileState, x: Array, d: Array, lr: Array, k_fast: Array, k_tr: Array,
                          periods: tuple[int, ...], rule: str, backend: str | None) -> TileState:
    """The batch in two ``A`` updates around its transfer point (aihwkit's CUDA chunking, spec §3.0).

    ``v*`` is the one vector after which transfers can fire (:func:`_chunk_rule`): ``batch − 1 −
    (count mod batch)`` ("aligned") or ``p − 1 − (count mod p)`` ("single", no transfer in this
    batch when that is ``≥ batch``). Vectors ``0..v*`` update ``A`` in one kernel call (the
    others enter with ``d = 0``, which makes no pulses), the transfers due after ``v*`` run, then
    vectors ``v*+1..`` in a second call with the choppers as the transfers left them. A fast lr
    that varies per vector is applied as ``d_v·lr_v/lr_ref`` with one ``lr_ref`` per call. Each
    vector's pulses are applied in order with the per-vector BL and update management of the
    per-vector scan, so the result has the same distribution; the random draws differ (one key
    per call instead of per vector), and write noise is drawn once per call for the elements the
    call pulsed, as aihwkit's CUDA tile does per batch (its CPU tile draws it per vector).
    """
    cell = state.rpu_config.device
    cfgs = c.sub_configs(cell)
    batch = x.shape[0]
    up = state.rpu_config.update
    g = c.granularity(cell)
    chop = c.chopped(cell)
    drift, bias = state.drift, state.bias
    k_first, k_second = jax.random.split(k_fast)
    aux = dict(c.cell_aux(state))
    count0 = aux["update_count"]
    lr_v, aux = _per_vector_fast_lr(cell, aux, x, d, lr, up, c.granularity(cfgs[0]))
    if _varying_fast_lr(cell):
        lr_ref = lr_v[jnp.argmax(jnp.abs(lr_v))]
        d = d * jnp.where(lr_ref != 0, lr_v / jnp.where(lr_ref != 0, lr_ref, 1.0), 0.0)[:, None]
    else:
        lr_ref = lr_v[0]
    if rule == "aligned":
        v_star = (batch - 1 - count0 % batch).astype(jnp.int32)
    else:
        period = max(periods)
        v_star = (period - 1 - count0 % period).astype(jnp.int32)
    in_batch = v_star < batch
    first = (jnp.arange(batch) <= v_star)[:, None]
    count_lr = lr_v[jnp.minimum(v_star, batch - 1)]

    def update_a(device, aux, d_part, key):
        xs, ds = x, d_part
        if chop:
            c_d, c_x = _chop_signs(cell, aux)
            xs, ds = x * c_x, d_part * c_d
        sub0 = c.sub_state(device, drift, cfgs, 0, bias)
        sub0 = c.sub_update(sub0, up, xs, ds, lr_ref, key, g, backend)
        return c.restack(device, drift, cfgs, [sub0], at=[0])[0]

    device = update_a(state.device, aux, jnp.where(first, d, 0.0), k_first)
    count = count0 + v_star + 1
    aux["update_count"] = count
    if chop:
        aux["count_lr"] = count_lr
    # the same transfers (and keys) as the per-vector scan after vector v*
    device, aux = _transfers_after(device, aux, count, v_star, in_batch, cell=cell, cfgs=cfgs, periods=periods,
                                   lr=lr, count_lr=count_lr, k_tr=k_tr, drift=drift, bias=bias, backend=backend)
    device = update_a(device, aux, jnp.where(first, 0.0, d), k_second)
    aux["update_count"] = count0 + batch
    if chop:
        aux["count_lr"] = lr_v[-1]
    state = c.with_cell_aux(state.replace(device=device), aux)
    return state.replace(weights=reduce(state).astype(state.weights.dtype))


# ---------------------------------------------------------------------------------------------
# Transfer events
# ---------------------------------------------------------------------------------------------


def _read(cell: Any, weights: Array, aux: dict[str, Any], onehot: Array, key: Array) -> Array:
    """Read ``onehot.shape[0]`` columns (rows) of ``weights`` through the transfer IO: ``(m, out)``."""
    from rpujax.tile.mvm import analog_backward, analog_forward

    io = transfer_io(cell.transfer_forward)
    nm = jnp.asarray(-1.0, weights.dtype)
    if cell.transfer_columns:
        return analog_forward(io, weights, aux["transfer_fwd"], onehot.astype(weights.dtype), key, nm)[0]
    return analog_backward(io, weights, aux["transfer_bwd"], onehot.astype(weights.dtype), key, nm)[0]


def _write(cell: Any, sub: TileState, onehot: Array, values: Array, lr: Any, key: Array,
           backend: str | None) -> TileState:
    """Pulsed write ``W[:, i] += lr·values`` (columns; rows ``W[i, :]``), one sample per index."""
    g_to = c.granularity(sub.rpu_config.device)
    up = cell.transfer_update
    if cell.transfer_columns:
        return c.sub_update(sub, up, onehot, -values, lr, key, g_to, backend)
    return c.sub_update(sub, up, -values, onehot, lr, key, g_to, backend)


def _take(buf: Array, idx: Array, columns: bool) -> Array:
    """``(m, out)`` buffer entries of the columns (rows) ``idx``."""
    return buf[:, idx].T if columns else buf[idx, :]


def _put(buf: Array, idx: Array, values: Array, columns: bool) -> Array:
    return buf.at[:, idx].set(values.T) if columns else buf.at[idx, :].set(values)


def _transfer_event(operands, *, cell, cfgs, j, lr, count_lr, key, drift, bias, backend):
    device, aux = operands
    aux = dict(aux)
    d_size, x_size = device["hidden_weights"].shape[1:]
    in_size, _ = in_out_sizes(cell, d_size, x_size)
    k_sel, k_read, k_reset, k_write, k_chop = jax.random.split(key, 5)
    start = aux["slice_idx"][j]
    if cell.random_selection:
        u = jax.random.uniform(k_sel, (), jnp.float32)
        start = jnp.clip(jnp.floor(u * in_size).astype(jnp.int32), 0, in_size - 1)
    n_reads = min(cell.n_reads_per_transfer, in_size)
    idx = (start + jnp.arange(n_reads)) % in_size
    onehot = jax.nn.one_hot(idx, in_size, dtype=jnp.float32)
    lr_t = _transfer_lr(cell, j, lr)
    src = c.sub_state(device, drift, cfgs, j, bias)
    dst = c.sub_state(device, drift, cfgs, j + 1, bias)
    if c.chopped(cell):
        src, dst, aux = _chopped_event(cell, cfgs, src, dst, aux, idx[0], onehot, lr_t, count_lr,
                                       (k_read, k_write, k_chop), backend)
    elif _is_buffered(cell):
        dst, aux = _buffered_event(cell, j, src, dst, aux, idx, onehot, lr_t, (k_read, k_write), backend)
    else:
        src, dst = _plain_event(cell, src, dst, aux, start, idx, onehot, lr_t, (k_read, k_reset, k_write), backend)
    device, _ = c.restack(device, drift, cfgs, [src, dst], at=[j, j + 1])
    aux["slice_idx"] = aux["slice_idx"].at[j].set((start + n_reads) % in_size)
    return device, aux


def _plain_event(cell, src, dst, aux, start, idx, onehot, lr_t, keys, backend):
    """Tiki-Taka v1: ``W_to[:, i] += lr_t·read(W_from, e_i)`` for each read index (spec §3.4)."""
    k_read, k_reset, k_write = keys
    if cell.with_reset_prob <= 0:
        r = _read(cell, src.weights, aux, onehot, k_read)
        return src, _write(cell, dst, onehot, r, lr_t, k_write, backend)
    return _plain_event_with_reset(cell, src, dst, aux, start, idx, onehot, lr_t, keys, backend)


def _plain_event_with_reset(cell, src, dst, aux, start, idx, onehot, lr_t, keys, backend):
    """Reads one index at a time; after each read, with probability ``with_reset_prob``, the
    source columns of the current read block are reset (aihwkit ``readAndUpdate``; the block is
    ``[start, in)`` then ``[0, rest)`` when the reads wrap; spec §7 item 18)."""
    from rpujax.tile.lifecycle import reset_columns

    k_read, k_reset, k_write = keys
    in_size = onehot.shape[1]
    n_reads = onehot.shape[0]
    n_rest = in_size - start
    first_len = jnp.minimum(n_reads, n_rest)
    for m in range(n_reads):
        r = _read(cell, src.weights, aux, onehot[m:m + 1], jax.random.fold_in(k_read, m))
        in_first = m < first_len
        block_start = jnp.where(in_first, start, 0)
        block_len = jnp.where(in_first, first_len, n_reads - first_len)
        k_u, k_r = jax.random.split(jax.random.fold_in(k_reset, m))
        hit = jax.random.uniform(k_u, (), jnp.float32) < np.float32(cell.with_reset_prob)
        reset = reset_columns(src, k_r, block_start, block_len, 1.0)
        src = jax.tree.map(lambda a, b: jnp.where(hit, a, b), reset, src)
        dst = _write(cell, dst, onehot[m:m + 1], r, lr_t, jax.random.fold_in(k_write, m), backend)
    return src, dst


def _buffered_event(cell, j, src, dst, aux, idx, onehot, lr_t, keys, backend):
    """TTv2 buffer arithmetic (spec §3.5)."""
    k_read, k_write = keys
    columns = cell.transfer_columns
    g_to = c.granularity(dst.rpu_config.device)
    theta = np.float32(cell.thres_scale * g_to)
    max_steps = np.float32(cell.transfer_update.desired_bl)
    r = _read(cell, src.weights, aux, onehot, k_read)
    buf = aux["buffer"][j]
    omega = _take(buf, idx, columns) + r * jnp.abs(lr_t)
    steps = jnp.clip(jnp.trunc(omega / theta), -max_steps, max_steps)
    fired = steps != 0
    if cell.forget_buffer:
        omega = jnp.where(fired, omega * np.float32(cell.momentum), omega)
    else:
        keep = np.float32(1.0 - min(max(cell.momentum, 0.0), 1.0))
        omega = jnp.where(fired, omega - keep * steps * theta, omega)
    aux = dict(aux)
    aux["buffer"] = aux["buffer"].at[j].set(_put(buf, idx, omega, columns))
    dst = _write(cell, dst, onehot, steps, np.float32(cell.step * g_to), k_write, backend)
    return dst, aux


def _chopped_event(cell, cfgs, src, dst, aux, i, onehot, lr_t, count_lr, keys, backend):
    """c-TTv2 (spec §3.6) and AGAD (spec §3.7) transfer of column (row) ``i``."""
    k_read, k_write, k_chop = keys
    columns = cell.transfer_columns
    d_size, x_size = src.weights.shape
    in_size, out_size = in_out_sizes(cell, d_size, x_size)
    dw_a = c.granularity(cfgs[0])
    dw_c = c.granularity(cfgs[1])
    max_steps = np.float32(cell.transfer_update.desired_bl)
    bg = _buffer_granularity(cell, dw_a, in_size)
    if cell.correct_gradient_magnitudes:
        bg = bg * dw_c / dw_a
        lr_scale = jnp.abs(lr_t) / count_lr / np.float32(bg)
    else:
        lr_scale = jnp.abs(lr_t) / np.float32(bg)
    r = _read(cell, src.weights, aux, onehot, k_read)[0]
    sign = jnp.where(aux["in_chopper"][i] != aux["out_chopper"], -1.0, 1.0)
    idx = i[None]
    buf = _take(aux["buffer"][0], idx, columns)[0]
    aux = dict(aux)
    counter = aux["transfer_counter"]
    n_s = _n_chop_samples(cell)
    if _dynamic(cell):
        sample = (counter % n_s) + 1
        if cell.experimental_correct_accumulation:
            lr_scale = lr_scale / jnp.minimum(sample.astype(jnp.float32), np.float32(1.0 / dw_a))
        beta = np.float32(min(cell.tail_weightening / n_s, 1.0))
        prev = aux["in_chopper_switched"][i]
        mean = _take(aux["running_mean"], idx, columns)[0]
        past = jnp.where(prev, mean, _take(aux["past_mean"], idx, columns)[0])
        omega = buf + (r - past) * sign * lr_scale
        aux["past_mean"] = _put(aux["past_mean"], idx, past[None], columns)
        aux["running_mean"] = _put(aux["running_mean"], idx, ((1.0 - beta) * mean + beta * r)[None], columns)
    else:
        omega = (0.0 if cell.no_buffer else buf) + sign * r * lr_scale
    fired = jnp.abs(omega) >= 1.0
    steps = jnp.where(fired, jnp.clip(jnp.trunc(omega), -max_steps, max_steps), 0.0)
    if cell.forget_buffer:
        omega = jnp.where(fired, omega * np.float32(cell.momentum), omega)
    else:
        if _dynamic(cell):
            omega = jnp.where(fired, omega - np.float32(1.0 - cell.momentum) * steps, omega)
            if cell.buffer_cap > 0:
                cap = np.float32(cell.buffer_cap) * max_steps
                omega = jnp.where(fired, jnp.clip(omega, -cap, cap), omega)
        else:
            keep = np.float32(1.0 - min(max(cell.momentum, 0.0), 1.0))
            omega = jnp.where(fired, omega - keep * steps, omega)
    aux["buffer"] = aux["buffer"].at[0].set(_put(aux["buffer"][0], idx, omega[None], columns))
    write_lr = np.float32(cell.step * dw_c)
    written = _write(cell, dst, onehot, steps[None], write_lr, k_write, backend)
    if _dynamic(cell):
        # AGAD writes only after the warm-up (transfer_counter > n_s, spec §7 item 19).
        dst = jax.tree.map(lambda a, b: jnp.where(counter > n_s, a, b), written, dst)
    else:
        dst = written
    k_in, k_out = jax.random.split(k_chop)
    if _dynamic(cell):
        switch = ((counter % n_s) + 1) == n_s
        if cell.in_chop_random:
            switch = switch | (jax.random.uniform(k_in, (), jnp.float32) < np.float32(cell.in_chop_prob))
        aux["in_chopper"] = aux["in_chopper"].at[i].set(aux["in_chopper"][i] ^ switch)
        aux["in_chopper_switched"] = aux["in_chopper_switched"].at[i].set(switch)
    elif cell.in_chop_prob > 0:
        if cell.in_chop_random:
            switch = jax.random.uniform(k_in, (), jnp.float32) < np.float32(cell.in_chop_prob)
        else:
            switch = ((counter % n_s) + 1) == n_s
        aux["in_chopper"] = aux["in_chopper"].at[i].set(aux["in_chopper"][i] ^ switch)
    last = i == in_size - 1
    if not _dynamic(cell) and cell.out_chop_prob > 0:
        flips = jax.random.uniform(k_out, (out_size,), jnp.float32) < np.float32(cell.out_chop_prob)
        aux["out_chopper"] = aux["out_chopper"] ^ (flips & last)
    aux["transfer_counter"] = counter + last.astype(counter.dtype)
    return src, dst, aux


# ---------------------------------------------------------------------------------------------
# Lifecycle and hidden parameters
# ---------------------------------------------------------------------------------------------


def lifecycle_targets(cell: Any, op: str) -> tuple[int, ...]:
    """Decay, diffusion and drift act on every device; reset only on the fast device 0
    (aihwkit ``TransferRPUDevice::resetCols``)."""
    if op == "reset":
        return (0,)
    return tuple(range(len(c.sub_configs(cell))))


def extra_hidden_names(cell: Any) -> tuple[str, ...]:
    """Buffered / chopped: ``buffered_FP_weight_k`` (k < n−1); dynamic: ``buffered_FP_weight``,
    ``running_mean_weight``, ``past_mean_weight`` (spec §1.11)."""
    if _dynamic(cell):
        return ("buffered_FP_weight", "running_mean_weight", "past_mean_weight")
    if _is_buffered(cell):
        return tuple(f"buffered_FP_weight_{k}" for k in range(len(c.sub_configs(cell)) - 1))
    return ()


def get_extra_hidden(state: TileState) -> dict[str, Array]:
    """The digital buffers / means under their aihwkit names."""
    cell = state.rpu_config.device
    aux = c.cell_aux(state)
    if _dynamic(cell):
        return {"buffered_FP_weight": aux["buffer"][0], "running_mean_weight": aux["running_mean"],
                "past_mean_weight": aux["past_mean"]}
    return {name: aux["buffer"][k] for k, name in enumerate(extra_hidden_names(cell))}


def set_extra_hidden(state: TileState, params: dict[str, Array]) -> TileState:
    """Replace the digital buffers / means."""
    cell = state.rpu_config.device
    names = extra_hidden_names(cell)
    if not names:
        return state
    aux = c.cell_aux(state)
    if _dynamic(cell):
        aux["buffer"] = aux["buffer"].at[0].set(params["buffered_FP_weight"])
        aux["running_mean"] = jnp.asarray(params["running_mean_weight"], aux["running_mean"].dtype)
        aux["past_mean"] = jnp.asarray(params["past_mean_weight"], aux["past_mean"].dtype)
    else:
        aux["buffer"] = jnp.stack([jnp.asarray(params[name], aux["buffer"].dtype) for name in names])
    return c.with_cell_aux(state, aux)


def index_settable(cell: Any) -> bool:
    """``set_hidden_update_index`` is a no-op (aihwkit ``TransferRPUDevice``)."""
    del cell
    return False
