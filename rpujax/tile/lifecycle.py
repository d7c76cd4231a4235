"""Weight operators outside forward/backward/update: decay, diffusion, drift, reset (spec tile-core §5).

Every function here is pure: it takes a :class:`TileState` (and a key where it draws random numbers)
and returns a new state. All of them work under ``jax.jit`` and ``jax.vmap`` (over a batch of tile
states and keys).

Which formula applies depends on the tile's (effective) device (:func:`rpujax.tile.effective_device`):

* pulsed devices (per-cross-point parameters in ``state.device``): spec §5.1–§5.4. Every operator
  clips to the device's own hard bounds ``[min_bound, max_bound]`` (reference devices clip the
  visible weight to the unshifted bounds, spec §7.12). With write noise (``write_noise_std > 0``) the
  operator acts on ``state.device['persistent_weights']`` and then redraws the apparent weights of
  **all** elements as ``persistent + write_noise_std·dw_min·ξ`` (spec §4.11; aihwkit's CPU scaling),
  with ``ξ`` drawn from the key passed in.
* ``IdealDevice`` (and any pulsed device with ``pulse_type=NONE``) and ``FloatingPointDevice``:
  spec §5.6, tile-wide scalar rates from the config, no bounds.

Units: weights in device units; ``delta_t`` in the drift's time unit ``t_0`` multiples (it is divided
by ``t_0``); rates (``decay_scales``, ``diffusion_rates``) per call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "decay_weights",
    "diffuse_weights",
    "drift_weights",
    "initial_drift_state",
    "post_update_step",
    "reset",
    "reset_columns",
]


# ---------------------------------------------------------------------------------------------
# dispatch helpers
# ---------------------------------------------------------------------------------------------


def _normal(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """Standard normals from ``key`` (``jax.random``: identical under jit and vmap)."""
    return jax.random.normal(key, shape, dtype)


def _uniform(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """Uniforms in [0, 1) from ``key``."""
    return jax.random.uniform(key, shape, dtype)


def _device_config(state: TileState) -> Any:
    from rpujax.tile.core import effective_device

    return effective_device(state.rpu_config)


def _kind(state: TileState) -> str:
    """``'pulsed'``, ``'ideal'`` or ``'fp'``: which family of formulas the tile uses."""
    from rpujax.configs.devices import FloatingPointDevice, IdealDevice, PulsedDevice

    dev = _device_config(state)
    if isinstance(dev, PulsedDevice):
        if "max_bound" not in state.device:
            raise ValueError(
                f"{type(dev).__name__} tile has no per-device parameters in state.device "
                "(expected 'max_bound', ...): was the state built with rpujax.tile.init?"
            )
        return "pulsed"
    if isinstance(dev, IdealDevice):
        return "ideal"
    if isinstance(dev, FloatingPointDevice):
        return "fp"
    raise TypeError(
        f"weight operators of {type(dev).__name__} are not implemented for single tiles "
        "(expected a PulsedDevice subclass, IdealDevice or FloatingPointDevice)"
    )


def _write_noise_scale(state: TileState) -> float:
    """Std of the apparent-weight write noise, ``write_noise_std·dw_min`` (0 without persistent weights)."""
    if "persistent_weights" not in state.device:
        return 0.0
    dev = _device_config(state)
    return float(dev.write_noise_std) * float(dev.dw_min)


def _target(state: TileState) -> Array:
    """The array the operators act on: the persistent weights when the device has write noise."""
    return state.device.get("persistent_weights", state.weights)


def _finish(state: TileState, new: Array, key: Array | None, what: str) -> TileState:
    """Store the operator's result; with write noise redraw every apparent weight (spec §4.11)."""
    new = new.astype(state.weights.dtype)
    if "persistent_weights" not in state.device:
        return state.replace(weights=new)
    if key is None:
        raise ValueError(
            f"{what}: this device has write noise (write_noise_std > 0), so the apparent weights "
            "are redrawn after the operator: pass key=jax.random.key(...)"
        )
    device = dict(state.device)
    device["persistent_weights"] = new
    noise = _normal(key, new.shape, new.dtype)
    return state.replace(weights=new + _write_noise_scale(state) * noise, device=device)


def _clip(state: TileState, w: Array) -> Array:
    """Clip to the device bounds with aihwkit's C-macro semantics: a NaN weight becomes
    ``max_bound`` (its ``MIN(w, max)`` then ``MAX(w, min)``), where ``jnp.clip`` would keep NaN."""
    lo, hi = state.device["min_bound"], state.device["max_bound"]
    return jnp.where(w < hi, jnp.where(w > lo, w, lo), hi)


def _is_static_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _inference(state: TileState) -> Any:
    """The inference package when ``state`` is an inference tile, else None.

    aihwkit's ``InferenceTile`` overrides ``drift_weights`` (drift relative to the programmed
    weights at an inference time) and ``post_update_step`` (clip, remap, modifier): the same
    names route there for inference configs.
    """
    from rpujax.configs.inference import InferenceRPUConfig  # noqa: PLC0415

    if isinstance(state.rpu_config, InferenceRPUConfig):
        from rpujax import inference  # noqa: PLC0415

        return inference
    return None


def _compound(state: TileState) -> Any:
    """``rpujax.cells`` when the tile is a unit cell / compound (its operators act per sub-device)."""
    from rpujax import cells

    return cells if cells.is_compound(state.rpu_config) else None


# ---------------------------------------------------------------------------------------------
# decay
# ---------------------------------------------------------------------------------------------


def decay_weights(state: TileState, alpha: float | Array = 1.0, *, key: Array | None = None) -> TileState:
    """Decay the weights once (aihwkit ``decay_weights(alpha)``, spec tile-core §5.1, §5.6).

    Pulsed devices: ``s = 1 + alpha·(decay_scales − 1)``, ``w ← (w − reset_bias)·s + reset_bias``,
    then clip to ``[min_bound, max_bound]``: decay pulls toward each device's reset bias. Elements
    with ``s == 1`` (lifetime 0) keep their value exactly (they are only clipped). A sampled lifetime
    ``≤ 1`` has ``decay_scales = 0``: with ``alpha = 1`` that element is set to its reset bias.

    Ideal / floating-point devices: ``σ = 1 − alpha/lifetime`` (rate 0 if ``lifetime ≤ 1``) and
    ``W ← σ·W`` only where ``0 < σ < 1``.

    Args:
      state: the tile.
      alpha: extra scale of the decay rate (e.g. a learning-rate factor); may be traced.
      key: needed only for devices with write noise (the apparent weights are redrawn).

    Returns:
      The new state.
    """
    if (cells := _compound(state)) is not None:
        return cells.decay_weights(state, alpha, key=key)
    kind = _kind(state)
    w = _target(state)
    if kind == "pulsed":
        rb = state.device["reset_bias"]
        s = 1.0 + alpha * (state.device["decay_scales"] - 1.0)
        decayed = (w - rb) * s + rb
        # (w - b)·1 + b can differ from w in the last bit; a device without decay must not move.
        new = _clip(state, jnp.where(s == 1.0, w, decayed))
        return _finish(state, new, key, "decay_weights")
    lifetime = float(_device_config(state).lifetime)
    rate = 1.0 / lifetime if lifetime > 1.0 else 0.0
    if rate == 0.0:
        return state
    sigma = 1.0 - alpha * rate
    if _is_static_number(alpha):
        return state.replace(weights=w * sigma) if 0.0 < sigma < 1.0 else state
    sigma = jnp.asarray(sigma, w.dtype)
    active = (sigma > 0.0) & (sigma < 1.0)
    return state.replace(weights=jnp.where(active, w * sigma, w))


# ---------------------------------------------------------------------------------------------
# diffusion
# ---------------------------------------------------------------------------------------------


def diffuse_weights(state: TileState, key: Array) -> TileState:
    """Diffuse the weights once (aihwkit ``diffuse_weights()``, spec tile-core §5.2, §5.6).

    Pulsed devices: ``w ← clip(w + diffusion_rates·ξ, min_bound, max_bound)`` with a fresh standard
    normal ``ξ`` per element (elements with rate 0 keep their value). Ideal / floating-point devices:
    ``W ← W + diffusion·ξ`` if the config's ``diffusion > 0`` (else unchanged).

    Args:
      state: the tile.
      key: a ``jax.random`` key.

    Returns:
      The new state.
    """
    if (cells := _compound(state)) is not None:
        return cells.diffuse_weights(state, key)
    kind = _kind(state)
    w = _target(state)
    k_diff, k_wn = jax.random.split(key)
    if kind == "pulsed":
        xi = _normal(k_diff, w.shape, w.dtype)
        new = _clip(state, w + state.device["diffusion_rates"] * xi)
        return _finish(state, new, k_wn, "diffuse_weights")
    diffusion = float(_device_config(state).diffusion)
    if diffusion <= 0.0:
        return state
    return state.replace(weights=w + diffusion * _normal(k_diff, w.shape, w.dtype))


# ---------------------------------------------------------------------------------------------
# drift
# ---------------------------------------------------------------------------------------------


def _drift_config(device_cfg: Any) -> Any | None:
    """The device's drift parameters when they switch drift on (``nu > 0``), else None."""
    from rpujax.configs.devices import FloatingPointDevice, PulsedDevice

    if isinstance(device_cfg, (PulsedDevice, FloatingPointDevice)) and device_cfg.drift.nu > 0.0:
        return device_cfg.drift
    return None


def initial_drift_state(device_cfg: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> dict[str, Array]:
    """The drift memory a new tile starts with (spec tile-core §5.3; aihwkit ``WeightDrifter``).

    Empty when the device does not drift (pulsed devices and ``FloatingPointDevice`` drift only when
    ``drift.nu > 0``; ``IdealDevice`` never does). Otherwise: ``w0`` (weight at the last reset of
    the drift), ``t`` (per-element time stamp of that reset), ``prev`` (weight after the last drift
    call), ``current_t`` (the drift clock, in units of ``t_0``) and ``initialized`` (False until
    the first ``drift_weights`` call, which stores ``w0 = prev = w`` and ``t = 0``).

    Args:
      device_cfg: the effective device config (``rpujax.tile.effective_device(rpu_config)``).
      shape: the weight shape ``(D, X)``.
      dtype: the weight dtype.
    """
    if _drift_config(device_cfg) is None:
        return {}
    zeros = jnp.zeros(shape, dtype)
    return {
        "w0": zeros,
        "t": zeros,
        "prev": zeros,
        "current_t": jnp.zeros((), dtype),
        "initialized": jnp.zeros((), jnp.bool_),
    }


def drift_weights(state: TileState, delta_t: float | Array, key: Array) -> TileState:
    """Drift the weights once (aihwkit ``drift_weights(delta_t)``, spec tile-core §5.3).

    Power-law drift with per-element clocks. The first call stores ``w0 = prev = w`` and ``t = 0``
    and then applies drift like any later call. Each call advances the clock
    ``current_t += delta_t / t_0`` and, per element:

    * if ``|prev − w| > reset_tol`` (the weight was changed since the last drift call, e.g. by an
      update): restart its drift, ``t = current_t``, ``w0 = w`` (weight left as is);
    * else ``ν = drift_nu`` (times ``1 + nu_std·ξ`` if ``nu_std > 0``; minus
      ``nu_k·ln((w − w_offset)/wg_ratio + g_offset) − nu_k·log_g0`` if ``nu_k ≠ 0``: NaN for a
      negative argument, as in aihwkit, whose clip then sets the weight to ``max_bound``; same here
      for pulsed devices), ``Δ = max(current_t − t, 1)``,
      ``w = w0·Δ^−ν + a·(Δ^−ν − 1)`` with ``a = g_offset·wg_ratio + w_offset`` (0 if below
      ``reset_tol``). Drift is therefore not cumulative: repeated calls move ``w0`` along one curve;

    then ``w += w_noise_std·ξ`` (read noise, every element), ``prev = w``, and both ``w`` and ``prev``
    are clipped to the device bounds (pulsed devices). Elements with ``drift_nu = 0`` keep ``w0``.
    ``FloatingPointDevice`` uses its scalar ``SimpleDriftParameter`` (``nu``, ``t_0``, ``reset_tol``)
    and no bounds. A tile without drift (``nu = 0``, ``IdealDevice``) is returned unchanged.

    Args:
      state: the tile.
      delta_t: time since the last drift call (same unit as ``t_0``); may be traced.
      key: a ``jax.random`` key (``nu_std``, read noise, write-noise redraw).

    Returns:
      The new state (weights and drift memory).
    """
    if (inference := _inference(state)) is not None:
        return inference.drift_weights(state, delta_t, key)
    if (cells := _compound(state)) is not None:
        return cells.drift_weights(state, delta_t, key)
    if not state.drift:
        return state
    kind = _kind(state)
    par = _drift_config(_device_config(state))
    if par is None:  # drift memory without drift parameters: nothing can drift
        return state
    drift = state.drift
    w = _target(state)
    dtype = w.dtype
    k_nu, k_read, k_wn = jax.random.split(key, 3)

    # The clock and the flag are scalars per tile; [..., None, None] lets a state with a leading
    # batch axis broadcast correctly outside vmap too.
    init = drift["initialized"][..., None, None]
    w0 = jnp.where(init, drift["w0"], w)
    prev = jnp.where(init, drift["prev"], w)
    t = jnp.where(init, drift["t"], jnp.zeros_like(w))
    current_t = jnp.where(drift["initialized"], drift["current_t"], jnp.zeros_like(drift["current_t"]))
    current_t = current_t + jnp.asarray(delta_t, dtype) / jnp.asarray(par.t_0, dtype)
    now = current_t[..., None, None]

    changed = jnp.abs(prev - w) > par.reset_tol
    t = jnp.where(changed, now, t)
    w0 = jnp.where(changed, w, w0)

    nu = state.device["drift_nu"] if kind == "pulsed" else jnp.full_like(w, par.nu)
    nu_std = float(getattr(par, "nu_std", 0.0))
    if nu_std > 0.0:
        nu = nu + nu_std * nu * _normal(k_nu, w.shape, dtype)
    nu_k = float(getattr(par, "nu_k", 0.0))
    wg_ratio = float(getattr(par, "wg_ratio", 1.0))
    g_offset = float(getattr(par, "g_offset", 0.0))
    w_offset = float(getattr(par, "w_offset", 0.0))
    if nu_k != 0.0:
        nu = nu - nu_k * jnp.log((w - w_offset) / wg_ratio + g_offset) + nu_k * float(par.log_g0)
    a = g_offset * wg_ratio + w_offset
    if abs(a) < par.reset_tol:
        a = 0.0
    elapsed = jnp.maximum(now - t, 1.0)
    # elapsed >= 1 > 0, so Δ^−ν = exp(−ν·ln Δ); XLA's general pow is ~10× slower on CPU.
    nu_scale = jnp.exp(-nu * jnp.log(elapsed))
    drifted = w0 * nu_scale
    if a != 0.0:
        drifted = drifted + a * (nu_scale - 1.0)
    new = jnp.where(changed, w, drifted)
    read_std = float(getattr(par, "w_noise_std", 0.0))
    if read_std > 0.0:
        new = new + read_std * _normal(k_read, w.shape, dtype)
    prev = new
    if kind == "pulsed":
        new = _clip(state, new)
        prev = _clip(state, prev)
    new_drift = {
        "w0": w0.astype(dtype),
        "t": t.astype(dtype),
        "prev": prev.astype(dtype),
        "current_t": current_t.astype(drift["current_t"].dtype),
        "initialized": jnp.ones_like(drift["initialized"]),
    }
    state = state.replace(drift=new_drift)
    if kind == "pulsed":
        return _finish(state, new, k_wn, "drift_weights")
    return state.replace(weights=new.astype(dtype))


# ---------------------------------------------------------------------------------------------
# reset
# ---------------------------------------------------------------------------------------------


def _column_mask(x_size: int, start_column_idx: Any, num_columns: Any) -> Array:
    """Columns selected by aihwkit's ``resetCols`` (spec tile-core §5.4), as a boolean ``(X,)`` mask.

    ``n = num_columns`` if ``>= 0`` else ``X``; without wrap the columns ``start … start+n−1``, with
    wrap (``start + n > X``) ``{j ≥ start} ∪ {j < n − (X − start)}``. Works for Python ints and
    traced integers alike.
    """
    j = jnp.arange(x_size)
    start = jnp.asarray(start_column_idx, jnp.int32)
    n = jnp.asarray(num_columns, jnp.int32)
    n = jnp.where(n >= 0, n, x_size)
    end = start + n
    plain = (end <= x_size) & (j >= start) & (j < end)
    wrapped = (end > x_size) & ((j >= start) | (j < n - (x_size - start)))
    return plain | wrapped


def reset_columns(
    state: TileState,
    key: Array,
    start_column_idx: int | Array = 0,
    num_columns: int | Array = 1,
    reset_prob: float | Array = 1.0,
) -> TileState:
    """Reset a block of columns (aihwkit ``reset_columns``, spec tile-core §5.4, §5.6).

    Columns ``start_column_idx … start_column_idx + num_columns − 1`` wrap around the ``X`` weight
    columns (including an analog-bias column); ``num_columns < 0`` selects every column. Each
    element of those columns is reset independently with probability ``reset_prob`` (always if it
    is 1; ``reset_prob = 0`` returns the state unchanged, without a write-noise redraw):

    * pulsed devices: ``w = clip(reset_bias + reset_std·ξ, min_bound, max_bound)``;
    * ``IdealDevice``: ``w = reset_std·ξ`` (no bias, no clip).

    ``FloatingPointDevice`` tiles cannot be reset (aihwkit's floating-point tile aborts): ValueError.

    Args:
      state: the tile.
      key: a ``jax.random`` key.
      start_column_idx: first column, ``0 … X−1`` (Python int or traced integer).
      num_columns: number of consecutive columns, negative for all.
      reset_prob: probability that an element of a selected column is reset; may be traced.

    Returns:
      The new state.
    """
    if (cells := _compound(state)) is not None:
        return cells.reset_columns(state, key, start_column_idx, num_columns, reset_prob)
    kind = _kind(state)
    if kind == "fp":
        raise ValueError(
            "reset / reset_columns: not supported for a FloatingPointDevice tile (aihwkit's "
            "floating-point tile aborts); use SingleRPUConfig(device=IdealDevice()) for an ideal "
            "device that can be reset"
        )
    x_size = state.x_size
    for name, value in (("start_column_idx", start_column_idx), ("num_columns", num_columns)):
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(f"reset_columns: {name} = {value!r}: expected an int")
    if isinstance(start_column_idx, int) and not 0 <= start_column_idx < x_size:
        raise ValueError(f"reset_columns: start_column_idx = {start_column_idx}: expected an int in [0, {x_size - 1}]")
    if _is_static_number(reset_prob):
        if not 0.0 <= reset_prob <= 1.0:
            raise ValueError(f"reset_columns: reset_prob = {reset_prob!r}: expected a number in [0, 1]")
        if reset_prob == 0.0:
            return state

    w = _target(state)
    dtype = w.dtype
    k_sel, k_val, k_wn = jax.random.split(key, 3)
    cols = _column_mask(x_size, start_column_idx, num_columns)
    if _is_static_number(reset_prob) and reset_prob == 1.0:
        chosen = jnp.broadcast_to(cols, w.shape)
    else:
        prob = jnp.asarray(reset_prob, dtype)
        u = _uniform(k_sel, w.shape, dtype)
        chosen = cols & ((prob == 1.0) | (u < prob))

    reset_std = float(_device_config(state).reset_std)
    xi = _normal(k_val, w.shape, dtype) if reset_std > 0.0 else jnp.zeros_like(w)
    if kind == "pulsed":
        value = _clip(state, state.device["reset_bias"] + reset_std * xi)
        new = jnp.where(chosen, value, w)
        if _is_static_number(reset_prob):
            return _finish(state, new, k_wn, "reset_columns")
        # A traced reset_prob of exactly 0 must leave even the write noise untouched.
        out = _finish(state, new, k_wn, "reset_columns")
        skip = jnp.asarray(reset_prob) == 0.0
        device = dict(out.device)
        if "persistent_weights" in device:
            device["persistent_weights"] = jnp.where(skip, w, device["persistent_weights"])
        return out.replace(weights=jnp.where(skip, state.weights, out.weights), device=device)
    return state.replace(weights=jnp.where(chosen, reset_std * xi, w).astype(dtype))


def reset(state: TileState, key: Array, reset_prob: float | Array = 1.0) -> TileState:
    """Reset every column (aihwkit ``reset(reset_prob)`` = ``reset_columns(0, −1, reset_prob)``, spec §5.4).

    Each element is reset independently with probability ``reset_prob`` to
    ``clip(reset_bias + reset_std·ξ, min_bound, max_bound)`` (pulsed devices) or ``reset_std·ξ``
    (``IdealDevice``). See :func:`reset_columns`.
    """
    return reset_columns(state, key, 0, -1, reset_prob)


# ---------------------------------------------------------------------------------------------
# post-update step
# ---------------------------------------------------------------------------------------------


def _requires(device_cfg: Any, what: str) -> bool:
    method = getattr(device_cfg, f"requires_{what}", None)
    if method is not None:
        return bool(method())
    field = "diffusion" if what == "diffusion" else "lifetime"
    return float(getattr(device_cfg, field, 0.0)) > 0.0


def post_update_step(state: TileState, key: Array) -> TileState:
    """Once-per-mini-batch operators (aihwkit ``post_update_step()``, spec tile-core §5.5).

    ``diffuse_weights`` if the config's ``device.diffusion > 0``, then ``decay_weights(alpha=1)``
    if ``device.lifetime > 0``. The decisions use the scalar config values (not the sampled
    per-device rates), as aihwkit does; nothing else happens (no clip, drift or reset).

    Args:
      state: the tile.
      key: a ``jax.random`` key.

    Returns:
      The new state.

    Inference tiles (``InferenceRPUConfig``) route to :func:`rpujax.inference.post_update_step`
    (clip, remap, weight modifier; their ideal device neither diffuses nor decays).
    """
    if (inference := _inference(state)) is not None:
        return inference.post_update_step(state, key)
    device_cfg = state.rpu_config.device
    k_diff, k_decay = jax.random.split(key)
    if _requires(device_cfg, "diffusion"):
        state = diffuse_weights(state, k_diff)
    if _requires(device_cfg, "decay"):
        state = decay_weights(state, 1.0, key=k_decay)
    return state
