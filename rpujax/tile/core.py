"""Building a tile and reading/writing its weights (spec tile-core §1.3–§1.4, §6.4)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.tile.state import TileState

Array = jax.Array


def _is_pulsed(device: Any) -> bool:
    from rpujax.configs.devices import PulsedDevice

    return isinstance(device, PulsedDevice)


def _device_draws_parameters(rpu_config: Any) -> bool:
    """Whether the tile samples pulsed-device parameters.

    With ``pulse_type=NONE`` aihwkit replaces a pulsed device by an ideal floating-point device at
    construction (spec tile-core §3.2, §7.13): no bounds, no steps; only the base settings
    (diffusion, lifetime, drift, reset) survive.
    """
    from rpujax.configs.update import PulseType

    return _is_pulsed(rpu_config.device) and rpu_config.update.pulse_type != PulseType.NONE


def _uses_persistent(rpu_config: Any) -> bool:
    if not _device_draws_parameters(rpu_config):
        return False
    from rpujax.devices import uses_persistent_weights

    return uses_persistent_weights(rpu_config.device)


def _check_sizes(out_size: int, in_size: int) -> None:
    for name, value in (("out_size", out_size), ("in_size", in_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} = {value!r}: expected an int >= 1")


def init(
    key: Array,
    out_size: int,
    in_size: int,
    rpu_config: Any,
    *,
    bias: bool = False,
    dtype: Any = jnp.float32,
) -> TileState:
    """Build a tile: sample the device-to-device parameters and the periphery, draw initial weights.

    Mirrors aihwkit's construction (spec tile-core §1.3, §1.5): device parameters per
    cross-point, forward/backward periphery parameters per output, then initial weights
    ``U(−0.1, 0.1)`` clipped to each device's bounds (layers normally overwrite them with
    :func:`set_weights`).

    Args:
      key: a ``jax.random`` key; every random draw of the construction derives from it (a device's
        non-zero ``construction_seed`` overrides it for the device parameters).
      out_size: number of outputs D (weight rows).
      in_size: number of inputs (weight columns, without the analog bias).
      rpu_config: ``SingleRPUConfig``, ``FloatingPointRPUConfig``, ``UnitCellRPUConfig``,
        ``DigitalRankUpdateRPUConfig`` (compounds: sub-device stacks, see :mod:`rpujax.cells`), ...
      bias: add an analog bias column (``X = in_size + 1``), fed by a constant input of 1.
      dtype: weight dtype (float32).

    Returns:
      A new :class:`TileState`. ``jax.vmap(lambda k: init(k, ...))(keys)`` builds a batch of tiles.
    """
    from rpujax.tile.mvm import sample_periphery_parameters

    _check_sizes(out_size, in_size)
    x_size = in_size + (1 if bias else 0)
    k_dev, k_fwd, k_bwd, k_w, k_wn = jax.random.split(key, 5)

    from rpujax.devices import sample_device_parameters

    fwd = sample_periphery_parameters(rpu_config.forward, k_fwd, out_size, x_size, dtype=dtype)
    bwd = sample_periphery_parameters(rpu_config.backward, k_bwd, x_size, out_size, dtype=dtype)
    weights = jax.random.uniform(k_w, (out_size, x_size), dtype, -0.1, 0.1)
    from rpujax.cells import init_compound_state, is_compound

    if is_compound(rpu_config):  # unit cells / compounds: sub-device stacks (rpujax.cells)
        parts = init_compound_state(k_dev, out_size, x_size, rpu_config, dtype=dtype)
        state = TileState(weights=weights, fwd=fwd, bwd=bwd, nm_value=jnp.asarray(-1.0, dtype),
                          rpu_config=rpu_config, bias=bias, **parts)
        return _write_weights(state, weights, k_wn)
    device = sample_device_parameters(effective_device(rpu_config), k_dev, out_size, x_size, dtype=dtype)
    from rpujax.tile.lifecycle import initial_drift_state

    state = TileState(
        weights=weights,
        device=device,
        fwd=fwd,
        bwd=bwd,
        nm_value=jnp.asarray(-1.0, dtype),
        hidden_update_index=jnp.asarray(0, jnp.int32),
        drift=initial_drift_state(effective_device(rpu_config), (out_size, x_size), dtype),
        rpu_config=rpu_config,
        bias=bias,
    )
    state = _write_weights(state, weights, k_wn)
    if _is_inference(rpu_config):
        from rpujax.inference import init_inference_aux

        # The inference bookkeeping (compensation alpha, modifier weights, mapping scales) is part
        # of the state from the start, so a training scan carries a fixed pytree structure.
        state = init_inference_aux(state)
    return state


def _is_inference(rpu_config: Any) -> bool:
    from rpujax.configs.inference import InferenceRPUConfig

    return isinstance(rpu_config, InferenceRPUConfig)


def effective_device(rpu_config: Any) -> Any:
    """The device config a tile actually simulates.

    With ``pulse_type=NONE`` aihwkit replaces a pulsed device by an ideal floating-point device at
    construction, keeping only its base settings (spec tile-core §3.2, §7.13): no bounds, no
    steps, no device-to-device variation. We reproduce that with an ``IdealDevice`` carrying the
    pulsed device's diffusion, lifetime and reset_std.
    """
    from rpujax.configs.devices import IdealDevice

    if _is_pulsed(rpu_config.device) and not _device_draws_parameters(rpu_config):
        dev = rpu_config.device
        return IdealDevice(diffusion=dev.diffusion, lifetime=dev.lifetime, reset_std=dev.reset_std)
    return rpu_config.device


def _write_weights(state: TileState, weights: Array, key: Array | None) -> TileState:
    """``onSetWeights``: clip to the device bounds; with write noise, set persistent and redraw apparent."""
    from rpujax.cells import compound_set_weights, is_compound

    if is_compound(state.rpu_config):
        return compound_set_weights(state, weights, key)
    if "reference_weights" in state.aux:
        # aihwkit's set_weights forgets the programming target (reference_combined_weights), so the
        # next program_weights programs the new weights; programmed_weights stay (spec §7 item 2).
        state = state.replace(aux={k: v for k, v in state.aux.items() if k != "reference_weights"})
    device = dict(state.device)
    if "max_bound" in device:
        weights = jnp.clip(weights, device["min_bound"], device["max_bound"])
    if _uses_persistent(state.rpu_config):
        device["persistent_weights"] = weights
        dev_cfg = state.rpu_config.device
        if dev_cfg.apply_write_noise_on_set:
            if key is None:
                raise ValueError(
                    "set_weights: this device has write noise with apply_write_noise_on_set=True, "
                    "so writing weights draws noise: pass key=jax.random.key(...)"
                )
            scale = dev_cfg.write_noise_std * dev_cfg.dw_min
            weights = weights + scale * jax.random.normal(key, weights.shape, weights.dtype)
    return state.replace(weights=weights.astype(state.weights.dtype), device=device)


def set_weights(state: TileState, weights: Array, bias: Array | None = None, *, key: Array | None = None) -> TileState:
    """Write the weights of the tile (aihwkit ``set_weights`` on the C++ tile, spec tile-core §1.4).

    Weights are clipped to each device's hard bounds; with write noise the persistent weights are
    set and the apparent ones redrawn (which needs ``key``).

    Args:
      state: the tile.
      weights: ``(out_size, in_size)``, or ``(out_size, in_size + 1)`` already including the analog
        bias column.
      bias: ``(out_size,)`` analog bias, for a tile built with ``bias=True`` (required then unless
        ``weights`` already has the extra column).
      key: needed only when the device draws write noise on set.
    """
    weights = jnp.asarray(weights)
    d_size, x_size = state.weights.shape[-2:]
    if state.bias and bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (d_size,):
            raise ValueError(f"set_weights: bias has shape {bias.shape}, expected {(d_size,)}")
        if weights.shape != (d_size, x_size - 1):
            raise ValueError(f"set_weights: weights have shape {weights.shape}, expected {(d_size, x_size - 1)}")
        weights = jnp.concatenate([weights, bias[:, None]], axis=1)
    elif bias is not None:
        raise ValueError("set_weights: bias given but the tile has no analog bias column (init(..., bias=True))")
    if weights.shape != (d_size, x_size):
        expected = f"{(d_size, x_size)}" + (f" or {(d_size, x_size - 1)} with bias=" if state.bias else "")
        raise ValueError(f"set_weights: weights have shape {weights.shape}, expected {expected}")
    return _write_weights(state, weights.astype(state.weights.dtype), key)


def get_weights(state: TileState) -> tuple[Array, Array | None]:
    """Return ``(weights (out_size, in_size), analog bias (out_size,) or None)``, an exact copy."""
    if state.bias:
        return state.weights[..., :-1], state.weights[..., -1]
    return state.weights, None
