"""Shared machinery of the compound devices: sub-device stacks, sub-device views, pulse helpers.

State layout of a compound tile (:class:`rpujax.tile.TileState`):

- ``weights``: the visible weight ``(D, X)`` (what forward/backward see).
- ``device``: the sub-devices, stacked on a leading device axis: ``hidden_weights`` ``(n, D, X)``
  (each sub-device's apparent weight, aihwkit's ``weights_vec_``), and every per-cross-point
  parameter of the sub-devices under its single-device name, ``(n, D, X)``
  (``max_bound``, ``dwmin_up``, ..., ``persistent_weights`` when a sub-device has write noise).
  Sub-devices of different classes share the stack: a name that a sub-device does not have is
  zero in its slice and never read.
- ``drift``: the sub-devices' drift memories, stacked the same way (``current_t`` and
  ``initialized`` are ``(n,)``), when any sub-device drifts.
- ``aux['cell']``: the compound's bookkeeping (counters, buffers, choppers, read periphery).
- ``hidden_update_index``: the index of the sub-device the next update writes (vector cells).

A sub-device is handed to the single-device code as a temporary single-device ``TileState``
(:func:`sub_states` / :func:`restack`), so decay, diffusion, drift, reset and ``set_weights`` of a
sub-device are exactly the single-device functions.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.configs.compounds import (
    ChoppedTransferCompound,
    DigitalRankUpdateCell,
    OneSidedUnitCell,
    ReferenceUnitCell,
    TransferCompound,
    UnitCell,
    VectorUnitCell,
)
from rpujax.configs.devices import PulsedDevice
from rpujax.configs.update import PulseType, UpdateParameters
from rpujax.tile.state import TileState

Array = jax.Array

#: Key of the compound bookkeeping inside ``TileState.aux``.
CELL = "cell"


# ---------------------------------------------------------------------------------------------
# Static facts about a cell config
# ---------------------------------------------------------------------------------------------


def is_compound_device(device: Any) -> bool:
    """Whether a device config is a unit cell or a digital-rank-update cell."""
    return isinstance(device, (UnitCell, DigitalRankUpdateCell))


def sub_configs(cell: UnitCell) -> tuple[PulsedDevice, ...]:
    """The device config of every sub-device, as aihwkit's C++ builds them.

    Vector / Reference: as given. OneSided: two copies of the first entry (spec §7 item 8).
    Transfer family: entry 0, then ``n − 1`` copies of entry 1 (spec §3.4).
    """
    devices = tuple(cell.unit_cell_devices)
    if not devices:
        raise ValueError(
            f"{type(cell).__name__}.unit_cell_devices is empty: give the sub-device configs, e.g. "
            f"{type(cell).__name__}(unit_cell_devices=[ConstantStepDevice(), ConstantStepDevice()])"
        )
    if isinstance(cell, OneSidedUnitCell):
        return (devices[0], devices[0])
    if isinstance(cell, TransferCompound):
        if len(devices) < 2:
            raise ValueError(f"{type(cell).__name__}.unit_cell_devices: expected at least 2 devices")
        return (devices[0],) + (devices[1],) * (len(devices) - 1)
    if isinstance(cell, ReferenceUnitCell) and len(devices) != 2:
        raise ValueError("ReferenceUnitCell.unit_cell_devices: expected 2 devices")
    return devices


def granularity(device: Any) -> float:
    """Weight granularity used for pulse generation of an update on ``device`` (spec §3.0).

    Pulsed device: its own (spec tile-core §4.3). Unit cells and transfer compounds: the mean of
    the sub-devices' granularities (aihwkit ``VectorRPUDevice::populate``).
    """
    from rpujax.devices import weight_granularity

    if isinstance(device, PulsedDevice):
        return float(weight_granularity(device))
    if isinstance(device, UnitCell):
        cfgs = sub_configs(device)
        return float(np.mean([weight_granularity(c) for c in cfgs]))
    raise TypeError(f"{type(device).__name__} has no weight granularity")


def num_states(device: PulsedDevice) -> float:
    """``(w_max − w_min) / granularity`` of a device config (aihwkit ``getNumStates``)."""
    return (float(device.w_max) - float(device.w_min)) / granularity(device)


def gammas(cell: UnitCell) -> tuple[float, ...]:
    """The reduction weights ``γ_k`` of the visible weight ``Σ γ_k W_k``."""
    n = len(sub_configs(cell))
    if isinstance(cell, OneSidedUnitCell):
        return (-1.0, 1.0)
    if isinstance(cell, TransferCompound):
        if cell.gamma_vec:
            return tuple(cell.gamma_vec)
        return tuple(float(cell.gamma) ** (n - 1 - k) for k in range(n))
    if cell.gamma_vec:
        return tuple(cell.gamma_vec)
    return (1.0 / n,) * n


def fully_hidden(cell: TransferCompound) -> bool:
    """aihwkit's ``fullyHidden``: ``gamma == 0`` and ``γ_{n−1} == 1`` (visible = last device)."""
    g = gammas(cell)
    gamma = sum(g[:-1]) if cell.gamma_vec else float(cell.gamma)
    return gamma == 0.0 and g[-1] == 1.0


def device_names(cfg: PulsedDevice) -> tuple[str, ...]:
    """Per-cross-point parameter names of a sub-device in aihwkit's hidden-parameter order
    (``persistent_weights`` included when the device has write noise)."""
    from rpujax.devices import BASE_NAMES, extra_parameter_names, uses_persistent_weights

    persistent = ("persistent_weights",) if uses_persistent_weights(cfg) else ()
    return tuple(BASE_NAMES) + persistent + tuple(extra_parameter_names(cfg))


@functools.lru_cache(maxsize=None)
def single_config(dev_cfg: PulsedDevice, update: UpdateParameters | None = None) -> Any:
    """The ``SingleRPUConfig`` of a sub-device (the static config of its temporary tile)."""
    from rpujax.configs.rpu_configs import SingleRPUConfig

    if update is None:
        return SingleRPUConfig(device=dev_cfg)
    return SingleRPUConfig(device=dev_cfg, update=update)


# ---------------------------------------------------------------------------------------------
# Construction of a sub-device stack
# ---------------------------------------------------------------------------------------------


def init_stack(
    key: Array, cfgs: Sequence[PulsedDevice], d_size: int, x_size: int, dtype: Any,
    *, construction_seed: int = 0, copy_inverted: bool = False,
) -> tuple[dict[str, Array], dict[str, Array]]:
    """Sample the sub-devices and stack them: ``(device, drift)`` dicts with a leading axis ``n``.

    Sub-device ``k`` draws from ``fold_in(key, k)`` (``key`` replaced by
    ``jax.random.key(construction_seed)`` when the cell's seed is non-zero); a sub-device's own
    non-zero ``construction_seed`` still wins, as in the single-device code. ``copy_inverted``
    (OneSided): device 1's up/down steps are swapped and its bounds mirrored. ``hidden_weights``
    and ``persistent_weights`` start at 0 (the tile's ``set_weights`` writes them).
    """
    from rpujax.devices import sample_device_parameters
    from rpujax.tile.lifecycle import initial_drift_state

    if construction_seed != 0:
        key = jax.random.key(construction_seed)
    n = len(cfgs)
    per = []
    for k, cfg in enumerate(cfgs):
        params = dict(sample_device_parameters(cfg, jax.random.fold_in(key, k), d_size, x_size, dtype=dtype))
        if copy_inverted and k == 1:
            # aihwkit's copyInvertDeviceParameter mirrors the device's *own* draw (spec §7 item 8).
            params["dwmin_up"], params["dwmin_down"] = params["dwmin_down"], params["dwmin_up"]
            params["max_bound"], params["min_bound"] = -params["min_bound"], -params["max_bound"]
        per.append(params)
    names: list[str] = []
    for cfg in cfgs:
        for name in device_names(cfg):
            if name not in names:
                names.append(name)
    zeros = jnp.zeros((d_size, x_size), dtype)
    device = {name: jnp.stack([p.get(name, zeros) for p in per]) for name in names}
    device["hidden_weights"] = jnp.zeros((n, d_size, x_size), dtype)
    drifts = [initial_drift_state(cfg, (d_size, x_size), dtype) for cfg in cfgs]
    drift: dict[str, Array] = {}
    template = next((dr for dr in drifts if dr), None)
    if template is not None:
        for name, leaf in template.items():
            drift[name] = jnp.stack([dr.get(name, jnp.zeros_like(leaf)) for dr in drifts])
    return device, drift


# ---------------------------------------------------------------------------------------------
# Sub-device views as single-device tiles
# ---------------------------------------------------------------------------------------------


def sub_state(device: dict[str, Array], drift: dict[str, Array], cfgs: Sequence[PulsedDevice], k: Any,
              bias: bool = False, cfg: PulsedDevice | None = None) -> TileState:
    """Sub-device ``k`` as a single-device :class:`TileState` (weights = ``hidden_weights[k]``).

    ``k`` may be a traced index when ``cfg`` (the config every candidate shares) is given.
    """
    cfg = cfgs[k] if cfg is None else cfg
    params = {name: device[name][k] for name in device_names(cfg)}
    sub_drift = {name: leaf[k] for name, leaf in drift.items()} if cfg.drift.nu > 0.0 else {}
    return TileState(
        weights=device["hidden_weights"][k],
        device=params,
        drift=sub_drift,
        rpu_config=single_config(cfg),
        bias=bias,
    )


def sub_states(device: dict[str, Array], drift: dict[str, Array], cfgs: Sequence[PulsedDevice],
               bias: bool = False) -> list[TileState]:
    """Every sub-device as a single-device tile (see :func:`sub_state`)."""
    return [sub_state(device, drift, cfgs, k, bias) for k in range(len(cfgs))]


def restack(device: dict[str, Array], drift: dict[str, Array], cfgs: Sequence[PulsedDevice],
            subs: Sequence[TileState], at: Sequence[Any] | None = None) -> tuple[dict[str, Array], dict[str, Array]]:
    """Write sub-device tiles back into the stacks (``subs[i]`` goes to slot ``at[i]``, default ``i``)."""
    del cfgs
    items = zip(range(len(subs)) if at is None else at, subs)
    device = dict(device)
    drift = dict(drift)
    for k, sub in items:
        device["hidden_weights"] = device["hidden_weights"].at[k].set(sub.weights)
        for name, value in sub.device.items():
            device[name] = device[name].at[k].set(value)
        for name, value in sub.drift.items():
            drift[name] = drift[name].at[k].set(value)
    return device, drift


def weighted_sum(hidden: Array, gamma: Sequence[float]) -> Array:
    """``Σ_k γ_k W_k`` over the leading device axis (float32 accumulation, as aihwkit's gemv)."""
    out = jnp.zeros(hidden.shape[1:], hidden.dtype)
    for k, g in enumerate(gamma):
        if g != 0.0:
            out = out + np.float32(g) * hidden[k]
    return out


# ---------------------------------------------------------------------------------------------
# Pulses on one sub-device with an explicit granularity
# ---------------------------------------------------------------------------------------------


def is_fp_update(update: UpdateParameters) -> bool:
    """Whether an update applies exact steps (``NONE``, ``NONE_WITH_DEVICE``) instead of pulses."""
    return update.pulse_type in (PulseType.NONE, PulseType.NONE_WITH_DEVICE)


def apply_inputs(sub: TileState, update: UpdateParameters, bl: Array, px: Array, pd: Array,
                 key_data: Array, bl_max: int, backend: str, *, mode: int | None = None) -> TileState:
    """Apply prepared pulse inputs to a single-device tile with the single-device kernel.

    This is the kernel call of :func:`rpujax.pulsed.pulsed_update` (``ffi/README.md`` §4) for
    pulse inputs prepared by the caller, so that several sub-devices can share the bit lines
    (same key) or receive sign-masked copies of them.
    """
    from rpujax import pulsed
    from rpujax.pulsed import probabilities

    persistent = sub.device.get("persistent_weights")
    kind, scalars, params = pulsed.kernel_operands(sub.rpu_config.device, sub.device, persistent, "update")
    module = pulsed._backend_module(backend)  # noqa: SLF001 - the single-device kernel, shared on purpose
    w_new, p_new = module.apply_pulses(
        sub.weights.astype(jnp.float32),
        None if persistent is None else persistent.astype(jnp.float32),
        params, px, pd, bl, key_data,
        kind=kind, scalars=scalars,
        mode=probabilities.pulse_mode(update.pulse_type) if mode is None else mode,
        bl_max=bl_max,
    )
    device = dict(sub.device)
    if persistent is not None:
        device["persistent_weights"] = p_new.astype(persistent.dtype)
    return sub.replace(weights=w_new.astype(sub.weights.dtype), device=device)


def sub_update(sub: TileState, update: UpdateParameters, x: Array, d: Array, lr: Any, key: Array,
               g: float, backend: str | None) -> TileState:
    """``W ← W − lr·Σ_b d_b x_bᵀ`` on one sub-device (pulses with granularity ``g``).

    ``NONE`` / ``NONE_WITH_DEVICE`` are the exact single-device forms of
    :func:`rpujax.pulsed.pulsed_update`; the pulsed types use ``g`` (the compound's or the
    target device's granularity, which the single-device entry point cannot take).
    """
    from rpujax.pulsed import pulse_inputs, pulsed_update, resolve_backend

    x = jnp.asarray(x, jnp.float32)
    d = jnp.asarray(d, jnp.float32)
    if is_fp_update(update):
        persistent = sub.device.get("persistent_weights")
        w, p = pulsed_update(sub.weights, persistent, sub.device, sub.rpu_config.device, update, x, d, lr, key,
                             backend="jax")
        device = dict(sub.device)
        if p is not None:
            device["persistent_weights"] = p
        return sub.replace(weights=w, device=device)
    name = resolve_backend(backend, update)
    bl, px, pd, key_data, bl_max = pulse_inputs(update, x, d, lr, key, g)
    return apply_inputs(sub, update, bl, px, pd, key_data, bl_max, name)


def shared_bit_update(subs: Sequence[TileState], update: UpdateParameters, x: Array, d: Array, lr: Any,
                      key: Array, g: float, backend: str | None) -> list[TileState]:
    """Update several sub-devices with the *same* pulse coincidences (VectorUnitCell ``ALL``).

    aihwkit hands the coincidences of a sample to every sub-device, each drawing its own
    cycle-to-cycle noise (``rpu_vector_device.cpp doSparseUpdate``). The kernel draws bits and
    noise from one key, so here the stochastic bit lines are drawn once in JAX and every pulse
    position ``k`` of sample ``b`` becomes one deterministic (``DETERMINISTIC_IMPLICIT``,
    ``BL = 1``) pseudo-sample with the 0/1 bits as probabilities: the coincidence pattern is
    shared exactly, the per-pulse noise of sub-device ``i`` comes from ``fold_in(key, i)``.
    Positions are applied in order, as aihwkit's CPU loop does. Deterministic pulse types share
    their counts anyway and only get per-device keys.
    """
    from rpujax.pulsed import probabilities, pulse_inputs, resolve_backend

    if len(subs) == 1 or is_fp_update(update):
        if is_fp_update(update):
            return [sub_update(s, update, x, d, lr, jax.random.fold_in(key, i), g, backend) for i, s in enumerate(subs)]
        return [sub_update(subs[0], update, x, d, lr, key, g, backend)]
    name = resolve_backend(backend, update)
    k_bits, k_dev = jax.random.split(key)
    bl, px, pd, key_data, bl_max = pulse_inputs(update, jnp.asarray(x, jnp.float32), jnp.asarray(d, jnp.float32),
                                                lr, k_bits, g)
    mode = probabilities.pulse_mode(update.pulse_type)
    if mode != probabilities.MODE_STOCHASTIC:
        return [
            apply_inputs(s, update, bl, px, pd, probabilities.key_to_data(jax.random.fold_in(k_dev, i)), bl_max, name)
            for i, s in enumerate(subs)
        ]
    batch = px.shape[0]
    kx, kd = jax.random.split(k_bits)
    ux = jax.random.uniform(kx, (batch, bl_max, px.shape[1]), jnp.float32)
    ud = jax.random.uniform(kd, (batch, bl_max, pd.shape[1]), jnp.float32)
    live = (jnp.arange(bl_max)[None, :] < bl[:, None])[..., None]
    xbit = (ux < jnp.abs(px)[:, None, :]) & live
    dbit = (ud < jnp.abs(pd)[:, None, :]) & live
    # A sign is needed where the bit is 0 too (direction is decided per pair); |p| = 0 never fires.
    px_s = jnp.where(xbit, jnp.where(px[:, None, :] < 0, -1.0, 1.0), 0.0).reshape(batch * bl_max, -1)
    pd_s = jnp.where(dbit, jnp.where(pd[:, None, :] < 0, -1.0, 1.0), 0.0).reshape(batch * bl_max, -1)
    bl_s = jnp.ones((batch * bl_max,), jnp.int32)
    implicit = probabilities.MODE_IMPLICIT
    return [
        apply_inputs(s, update, bl_s, px_s.astype(jnp.float32), pd_s.astype(jnp.float32),
                     probabilities.key_to_data(jax.random.fold_in(k_dev, i)), 1, name, mode=implicit)
        for i, s in enumerate(subs)
    ]


def cell_aux(state: TileState) -> dict[str, Any]:
    """The compound bookkeeping dict of a tile (``state.aux['cell']``)."""
    return dict(state.aux.get(CELL, {}))


def with_cell_aux(state: TileState, aux: dict[str, Any]) -> TileState:
    """Return ``state`` with ``aux['cell']`` replaced."""
    new = dict(state.aux)
    new[CELL] = aux
    return state.replace(aux=new)


def chopped(cell: Any) -> bool:
    """Whether a transfer compound is of the chopped family (Chopped, Dynamic)."""
    return isinstance(cell, ChoppedTransferCompound)


def vector_like(cell: Any) -> bool:
    """VectorUnitCell or ReferenceUnitCell (same C++ class)."""
    return isinstance(cell, (VectorUnitCell, ReferenceUnitCell))


# Hooks of a cell family without hidden parameters beyond its sub-devices' (vector, one-sided).


def extra_hidden_names(cell: Any) -> tuple[str, ...]:
    """No hidden parameters beyond the sub-devices'."""
    del cell
    return ()


def get_extra_hidden(state: TileState) -> dict[str, Array]:
    """No extra hidden parameters."""
    del state
    return {}


def set_extra_hidden(state: TileState, params: dict[str, Array]) -> TileState:
    """No extra hidden parameters."""
    del params
    return state
