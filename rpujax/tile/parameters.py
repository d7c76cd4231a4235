"""Reading and writing a tile's hidden state by aihwkit's names (spec cells-inference-api §1.11–§1.15).

Pure functions over :class:`TileState`:

* hidden update index (``get/set_hidden_update_index``),
* forward / backward periphery parameters (``get/set_forward_parameters``,
  ``get/set_backward_parameters``) under aihwkit's keys ``v_offset``, ``w_asymmetry``,
  ``out_nonlinearity``, ``out_nonlinearity_factor``, ``out_noise_values``,
* ``get_forward_out_bound``,
* per-cross-point device parameters (``get/set_hidden_parameters``) in aihwkit's name order,
* delta-weight mode (``set_delta_weights`` / ``reset_delta_weights`` and the update hook
  :func:`apply_delta_mode`), the functional meaning of aihwkit's shared weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "FB_PARAMETER_NAMES",
    "apply_delta_mode",
    "get_backward_parameters",
    "get_delta_weights",
    "get_forward_out_bound",
    "get_forward_parameters",
    "get_hidden_parameters",
    "get_hidden_update_index",
    "hidden_parameter_names",
    "reset_delta_weights",
    "set_backward_parameters",
    "set_delta_weights",
    "set_forward_parameters",
    "set_hidden_parameters",
    "set_hidden_update_index",
]

#: aihwkit's forward/backward parameter keys, in aihwkit's order (spec cells-inference-api §1.13).
FB_PARAMETER_NAMES = ("v_offset", "w_asymmetry", "out_nonlinearity", "out_nonlinearity_factor", "out_noise_values")

DELTA_KEY = "delta_weights"


def _is_single_device(device_cfg: Any) -> bool:
    from rpujax.configs.devices import FloatingPointDevice, IdealDevice, PulsedDevice

    return isinstance(device_cfg, (PulsedDevice, IdealDevice, FloatingPointDevice))


def _has_io(rpu_config: Any) -> bool:
    """Whether the config has forward/backward IO fields (aihwkit's ``hasattr(rpu_config, 'forward')``).

    ``FloatingPointRPUConfig`` exposes exact IO as properties for the MVM code, but in aihwkit it
    has no ``forward`` field: its tile has no periphery parameters and no out bound.
    """
    if dataclasses.is_dataclass(rpu_config):
        return "forward" in {f.name for f in dataclasses.fields(rpu_config)}
    return hasattr(rpu_config, "forward")


# ---------------------------------------------------------------------------------------------
# hidden update index
# ---------------------------------------------------------------------------------------------


def get_hidden_update_index(state: TileState) -> Array:
    """Index of the sub-device that the next update writes (aihwkit ``get_hidden_update_index``).

    Always 0 for single devices (one device per cross-point); compound devices keep their index in
    the same slot. Returned as an int32 array so that it can be read inside ``jit``.
    """
    return state.hidden_update_index


def set_hidden_update_index(state: TileState, index: int | Array) -> TileState:
    """Select the sub-device updated next (aihwkit ``set_hidden_update_index``).

    Single devices ignore the call and return the state unchanged (aihwkit does the same: the
    index stays 0). Compound devices store ``index`` in ``state.hidden_update_index``.
    """
    from rpujax import cells
    from rpujax.tile.core import effective_device

    if cells.is_compound(state.rpu_config):
        return cells.set_hidden_update_index(state, index)
    if _is_single_device(effective_device(state.rpu_config)):
        return state
    if isinstance(index, (bool, float)):
        raise ValueError(f"set_hidden_update_index: index = {index!r}: expected an int")
    if isinstance(index, int) and index < 0:
        raise ValueError(f"set_hidden_update_index: index = {index}: expected an int >= 0")
    value = jnp.asarray(index, jnp.int32)
    return state.replace(hidden_update_index=jnp.broadcast_to(value, state.hidden_update_index.shape))


# ---------------------------------------------------------------------------------------------
# forward / backward periphery parameters
# ---------------------------------------------------------------------------------------------


def _get_fb(state: TileState, direction: str) -> dict[str, Array]:
    if not _has_io(state.rpu_config):
        return {}
    stored = state.fwd if direction == "fwd" else state.bwd
    dtype = state.weights.dtype
    out: dict[str, Array] = {}
    for name in FB_PARAMETER_NAMES:
        if name in stored:
            out[name] = stored[name]
        elif name == "out_nonlinearity_factor":
            out[name] = jnp.ones((), dtype)
        else:
            out[name] = jnp.zeros((0,), dtype)
    # Keys the MVM stores beyond aihwkit's five (none today) are passed through as well.
    for name in stored:
        if name not in out:
            out[name] = stored[name]
    return out


def _set_fb(state: TileState, direction: str, dic: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> TileState:
    what = "set_forward_parameters" if direction == "fwd" else "set_backward_parameters"
    if dic is None:
        dic = kwargs
    elif kwargs:
        raise ValueError(f"{what}: pass the parameters either as a dict or as keywords, not both")
    current = _get_fb(state, direction)
    unknown = [k for k in dic if k not in current]
    if unknown:
        known = ", ".join(current) if current else "none (this tile has no periphery parameters)"
        raise ValueError(f"{what}: unknown parameter name(s) {unknown}; expected names: {known}")
    stored = dict(state.fwd if direction == "fwd" else state.bwd)
    for name, value in dic.items():
        old = current[name]
        value = jnp.asarray(value, old.dtype)
        if name not in stored:
            # A feature the IO config does not use: aihwkit exposes it as an empty vector (the
            # factor as 1) and accepts only that value back; anything else cannot take effect.
            unused = value.size == 0 or (
                name == "out_nonlinearity_factor" and value.size == 1 and bool(np.all(np.asarray(value) == 1.0))
            )
            if not unused:
                raise ValueError(
                    f"{what}: parameter {name!r} is not used by this tile's IO config (it is empty "
                    f"here, got shape {tuple(value.shape)}); enable the feature in the config to set it"
                )
            continue
        if value.shape != old.shape:
            if value.size == old.size:  # aihwkit hands these out flattened
                value = value.reshape(old.shape)
            else:
                raise ValueError(
                    f"{what}: parameter {name!r} has shape {tuple(value.shape)}, expected "
                    f"{tuple(old.shape)} (or {old.size} values)"
                )
        stored[name] = value
    if direction == "fwd":
        return state.replace(fwd=stored)
    return state.replace(bwd=stored)


def get_forward_parameters(state: TileState) -> dict[str, Array]:
    """The forward periphery parameters sampled at construction (aihwkit ``get_forward_parameters``).

    Keys in aihwkit's order: ``v_offset`` ``(D,)``, ``w_asymmetry`` ``(D, X)``, ``out_nonlinearity``
    ``(D,)``, ``out_nonlinearity_factor`` ``()``, ``out_noise_values`` ``(D,)``. A feature the IO
    config does not use is an empty ``(0,)`` array (the factor is 1), as in aihwkit. Empty dict for
    ``FloatingPointRPUConfig`` tiles.
    """
    return _get_fb(state, "fwd")


def set_forward_parameters(state: TileState, dic: Mapping[str, Any] | None = None, **kwargs: Any) -> TileState:
    """Replace forward periphery parameters (aihwkit ``set_forward_parameters(dic=None, **kwargs)``).

    Names must be among :func:`get_forward_parameters`' keys and shapes must match (aihwkit's flat
    vectors of the same size are reshaped). Unused features accept only their empty value.
    Raises ``ValueError`` naming the offending key and both shapes.
    """
    return _set_fb(state, "fwd", dic, kwargs)


def get_backward_parameters(state: TileState) -> dict[str, Array]:
    """The backward periphery parameters (aihwkit ``get_backward_parameters``); per-output arrays
    have length X, ``w_asymmetry`` is ``(X, D)``. See :func:`get_forward_parameters`."""
    return _get_fb(state, "bwd")


def set_backward_parameters(state: TileState, dic: Mapping[str, Any] | None = None, **kwargs: Any) -> TileState:
    """Replace backward periphery parameters (aihwkit ``set_backward_parameters``); see
    :func:`set_forward_parameters`."""
    return _set_fb(state, "bwd", dic, kwargs)


def get_forward_out_bound(state: TileState) -> float | None:
    """Output bound used to mask gradients (aihwkit ``get_forward_out_bound``, spec §1.15).

    ``forward.out_scale · forward.out_bound · 0.999`` if the config has forward IO with a finite
    ``out_bound``, else None (unbounded output, or a ``FloatingPointRPUConfig`` tile). Computed
    even for ``is_perfect`` forward passes, as in aihwkit.
    """
    cfg = state.rpu_config
    if not _has_io(cfg):
        return None
    fwd = cfg.forward
    if not math.isfinite(fwd.out_bound) or fwd.out_bound <= 0:
        return None
    return float(fwd.out_scale) * float(fwd.out_bound) * 0.999


# ---------------------------------------------------------------------------------------------
# hidden (device) parameters
# ---------------------------------------------------------------------------------------------


def hidden_parameter_names(rpu_config: Any) -> tuple[str, ...]:
    """aihwkit's hidden-parameter names of a single-device tile, in aihwkit's order (spec §1.11).

    ``max_bound, min_bound, dwmin_up, dwmin_down, decay_scales, diffusion_rates, reset_bias,
    drift_nu``, then ``persistent_weights`` when the device has write noise, then the model's
    extras (LinearStep/SoftBounds ``slope_up, slope_down``; PowStep ``gamma_up, gamma_down``;
    SoftBoundsReference ``reference``; PowStepReference ``gamma_up, gamma_down, reference``).
    Empty for ideal and floating-point devices.
    """
    from rpujax import cells
    from rpujax.configs.devices import PulsedDevice
    from rpujax.devices import BASE_NAMES, extra_parameter_names, uses_persistent_weights
    from rpujax.tile.core import effective_device

    if cells.is_compound(rpu_config):
        return cells.hidden_parameter_names(rpu_config)
    dev = effective_device(rpu_config)
    if not isinstance(dev, PulsedDevice):
        if _is_single_device(dev):
            return ()
        raise TypeError(f"hidden_parameter_names: {type(dev).__name__} is not a single device")
    persistent = ("persistent_weights",) if uses_persistent_weights(dev) else ()
    return tuple(BASE_NAMES) + persistent + tuple(extra_parameter_names(dev))


def get_hidden_parameters(state: TileState) -> dict[str, Array]:
    """Per-cross-point device parameters under aihwkit's names, in aihwkit's order (spec §1.11).

    Each value is a ``(D, X)`` array (the analog-bias column included). Ideal and floating-point
    tiles have none (empty dict), as in aihwkit. See :func:`hidden_parameter_names`.
    """
    from rpujax import cells

    if cells.is_compound(state.rpu_config):
        return cells.get_hidden_parameters(state)
    names = hidden_parameter_names(state.rpu_config)
    missing = [n for n in names if n not in state.device]
    if missing:
        raise ValueError(
            f"get_hidden_parameters: state.device lacks {missing} (has {sorted(state.device)}); "
            "was the state built with rpujax.tile.init for this rpu config?"
        )
    return {name: state.device[name] for name in names}


def set_hidden_parameters(state: TileState, params: Mapping[str, Any]) -> TileState:
    """Replace the per-cross-point device parameters (aihwkit ``set_hidden_parameters``, spec §1.11).

    ``params`` must have exactly the names of :func:`get_hidden_parameters` (missing or unexpected
    names raise ``ValueError`` listing them) and each value the shape of the stored array
    (``(D, X)``; a mismatch raises naming both shapes). Values are converted to the weight dtype.

    Then the weights are re-clipped to the new bounds ``[min_bound, max_bound]``. With write noise
    the supplied ``persistent_weights`` are kept (clipped to the bounds) and the apparent weights
    keep their current write-noise realisation on top of them
    (``W ← persistent_new + (W − persistent_old)``), so no key is needed.

    Differences from aihwkit, on purpose:

    * aihwkit re-estimates ``dw_min`` from the mean of ``(|dwmin_up| + |dwmin_down|)/2`` and, if it
      deviates from the config by more than ``2·dw_min_dtod`` (relative), overwrites the tile's
      ``dw_min`` and weight granularity ``g`` used by update management. rpujax keeps the
      per-element arrays as given (they drive every pulse) but takes ``g`` from the (static)
      config: to change ``g``, change the config's ``dw_min``.
    * aihwkit discards a supplied ``persistent_weights`` array (spec §1.2, §7.28); rpujax loads it.

    Migrating a tile from aihwkit::

        hidden = {k: v.cpu().numpy() for k, v in aihwkit_tile.get_hidden_parameters().items()}
        w = aihwkit_tile.tile.get_weights().cpu().numpy()      # raw tile weights (D, X)
        state = rpujax.tile.set_hidden_parameters(state, hidden)
        state = state.replace(weights=jnp.asarray(w))         # exact apparent weights, no redraw

    (``set_weights`` would clip and, with write noise, redraw the apparent weights.) Use an rpu
    config with the same device class and fields as the aihwkit tile.
    """
    from rpujax import cells

    if cells.is_compound(state.rpu_config):
        return cells.set_hidden_parameters(state, params)
    names = hidden_parameter_names(state.rpu_config)
    given = list(params)
    missing = [n for n in names if n not in params]
    unexpected = [n for n in given if n not in names]
    if missing or unexpected:
        raise ValueError(
            f"set_hidden_parameters: names do not match this tile's hidden parameters; missing "
            f"{missing}, unexpected {unexpected}; expected (in aihwkit's order) {list(names)}"
        )
    if not names:
        return state
    device = dict(state.device)
    dtype = state.weights.dtype
    for name in names:
        old = state.device[name]
        value = jnp.asarray(params[name], dtype)
        if value.shape != old.shape:
            raise ValueError(
                f"set_hidden_parameters: {name!r} has shape {tuple(value.shape)}, expected {tuple(old.shape)}"
            )
        device[name] = value
    lo, hi = device["min_bound"], device["max_bound"]
    if "persistent_weights" in device:
        noise = state.weights - state.device["persistent_weights"]
        persistent = jnp.clip(device["persistent_weights"], lo, hi)
        device["persistent_weights"] = persistent
        weights = persistent + noise
    else:
        weights = jnp.clip(state.weights, lo, hi)
    return state.replace(weights=weights.astype(dtype), device=device)


# ---------------------------------------------------------------------------------------------
# delta weights (aihwkit's shared-weight gradient mode)
# ---------------------------------------------------------------------------------------------


def set_delta_weights(state: TileState, delta: Array | None = None) -> TileState:
    """Switch the tile into delta-weight mode (aihwkit ``set_delta_weights``, spec §1.14).

    While the mode is on, :func:`rpujax.tile.update` does not change the weights: it computes the
    update as usual (pulsed or floating point, with all device effects) and stores the change it
    would have made, ``ΔW = W_new − W_old`` (shape ``(D, X)``, analog-bias column included), in
    ``state.aux['delta_weights']``, overwriting the previous content (aihwkit's ``beta = 0``).
    Read it with :func:`get_delta_weights`.

    aihwkit's buffer holds the raw gradient ``dᵀx`` in tile units, i.e. ``−ΔW / lr`` for a
    floating-point update; divide by ``−lr`` to compare. The mode is part of the pytree
    structure, so switching it retraces jitted functions.

    Args:
      state: the tile.
      delta: initial buffer content ``(D, X)``; zeros if None.
    """
    shape = state.weights.shape
    if delta is None:
        buf = jnp.zeros(shape, state.weights.dtype)
    else:
        buf = jnp.asarray(delta, state.weights.dtype)
        if buf.shape != shape:
            raise ValueError(f"set_delta_weights: delta has shape {tuple(buf.shape)}, expected {tuple(shape)}")
    aux = dict(state.aux)
    aux[DELTA_KEY] = buf
    return state.replace(aux=aux)


def reset_delta_weights(state: TileState) -> TileState:
    """Leave delta-weight mode: updates write the weights again (aihwkit ``reset_delta_weights``)."""
    if DELTA_KEY not in state.aux:
        return state
    aux = dict(state.aux)
    del aux[DELTA_KEY]
    return state.replace(aux=aux)


def get_delta_weights(state: TileState) -> Array | None:
    """The delta-weight buffer ``ΔW`` written by the last update in delta mode (None if the mode is off)."""
    return state.aux.get(DELTA_KEY)


def apply_delta_mode(old_state: TileState, new_state: TileState) -> TileState:
    """Hook at the end of ``update``: in delta mode, keep the tile as it was and record the change.

    ``old_state`` is the state ``update`` received, ``new_state`` the one it computed. Outside delta
    mode ``new_state`` is returned as is. In delta mode the result is ``old_state`` (weights, device
    arrays — persistent and compound hidden weights included — and bookkeeping all unchanged) with
    ``aux['delta_weights'] = new.weights − old.weights``: the would-be change of the visible weights.
    """
    if DELTA_KEY not in old_state.aux:
        return new_state
    delta = (new_state.weights - old_state.weights).astype(old_state.weights.dtype)
    return old_state.replace(aux={**old_state.aux, DELTA_KEY: delta})
