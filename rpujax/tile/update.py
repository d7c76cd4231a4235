"""``update``: the tile's weight update from the layer's inputs and output errors (spec §3)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rpujax.tile.state import TileState

Array = jax.Array


def _flatten(name: str, v: Array, width: int, state: TileState, what: str) -> Array:
    v = jnp.asarray(v)
    if v.ndim < 1 or v.shape[-1] != width:
        raise ValueError(
            f"update: {name} has shape {tuple(v.shape)}, expected (..., {width}) ({what}; weights have "
            f"shape {tuple(state.weights.shape)})"
        )
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"update: {name} has dtype {v.dtype}, expected a floating dtype")
    return v.reshape((-1, width))


def update(
    state: TileState,
    x: Array,
    d: Array,
    lr: float | Array,
    key: Array,
    *,
    backend: str | None = None,
    debug_checks: bool = False,
) -> TileState:
    """Update the tile's weights with ``W <- W - lr * sum_b d_b x_b^T`` (aihwkit ``tile.update``).

    Samples are applied one after the other, each with its own pulse-train length and update
    management (spec §3.3). With a pulsed device the step is realised by stochastic (or
    deterministic) pulses and is exact only in expectation, with the device's step sizes, bounds
    and cycle-to-cycle noise (§3.5–§3.7, §4); ``pulse_type=NONE`` and ideal / floating-point
    devices update exactly; ``NONE_WITH_DEVICE`` updates exactly and clips to the device bounds
    after every sample.

    Args:
      state: the tile.
      x: ``(..., in_size)`` layer inputs (leading dims are the batch, flattened); with an analog
        bias (``state.bias``) a constant 1 is appended to every sample, as aihwkit does.
      d: ``(..., out_size)`` errors (gradient of the loss w.r.t. the tile outputs), same batch.
      lr: learning rate (a Python number or a traced scalar). ``0`` leaves the tile unchanged; a
        negative lr moves the weights along ``+|lr| d x^T`` (see :mod:`rpujax.pulsed`).
      key: a threefry ``jax.random`` key; all randomness of the update derives from it.
      backend: ``"auto"`` / ``"ffi"`` / ``"jax"``; None uses ``rpu_config.update.backend``.
      debug_checks: ``checkify`` checks that x, d and lr are finite (by default samples with
        non-finite values are skipped silently).

    Returns:
      The new tile state (weights, and persistent weights when the device has write noise).
    """
    if state.weights.ndim != 2:
        raise ValueError(
            f"update: state.weights has shape {tuple(state.weights.shape)}, expected (D, X); vmap over a "
            "batch of tiles instead"
        )
    what = "in_size" + (" without the analog-bias column" if state.bias else "")
    x2 = _flatten("x", x, state.in_size, state, what)
    d2 = _flatten("d", d, state.out_size, state, "out_size")
    if x2.shape[0] != d2.shape[0]:
        raise ValueError(
            f"update: x has shape {tuple(jnp.shape(x))} and d has shape {tuple(jnp.shape(d))}: their "
            "batches differ"
        )
    if state.bias:
        x2 = jnp.concatenate([x2, jnp.ones((x2.shape[0], 1), x2.dtype)], axis=1)

    from rpujax.pulsed import resolve_backend  # noqa: PLC0415

    cfg = state.rpu_config
    backend = resolve_backend(backend, cfg.update)
    try:
        lr_value = float(lr)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        lr_value = None
    if debug_checks:
        # checkify checks must not sit under a jit that is not checkified: run unjitted.
        return _apply(state, x2, d2, lr, key, backend, True)
    if lr_value is not None and (lr_value == 0.0 or not math.isfinite(lr_value)):
        return state
    # The pulse-train length depends on lr only for fixed_bl=False without update-BL management.
    lr_static = lr_value if not (cfg.update.fixed_bl or cfg.update.update_bl_management) else None
    return _apply_jit(state, x2, d2, None if lr_static is not None else lr, key, backend=backend,
                      lr_static=lr_static)


def _apply(state: TileState, x2: Array, d2: Array, lr, key: Array, backend: str, debug_checks: bool) -> TileState:
    from rpujax.pulsed import pulsed_update  # noqa: PLC0415
    from rpujax.cells import compound_update, is_compound  # noqa: PLC0415

    from rpujax.tile.parameters import apply_delta_mode  # noqa: PLC0415

    cfg = state.rpu_config
    if is_compound(cfg):  # unit cells / compounds (rpujax.cells)
        return apply_delta_mode(state, compound_update(state, x2, d2, lr, key, backend=backend))
    device = dict(state.device)
    persistent = device.get("persistent_weights")
    weights, persistent = pulsed_update(
        state.weights, persistent, device, cfg.device, cfg.update, x2, d2, lr, key,
        backend=backend, debug_checks=debug_checks,
    )
    if persistent is not None:
        device["persistent_weights"] = persistent
    return apply_delta_mode(state, state.replace(weights=weights, device=device))


# One compiled program per (tile structure, config, backend): eager callers do not pay for
# op-by-op dispatch of the scan; under an outer jit this is simply inlined.
@functools.partial(jax.jit, static_argnames=("backend", "lr_static"))
def _apply_jit(state: TileState, x2: Array, d2: Array, lr, key: Array, *, backend: str,
               lr_static: float | None) -> TileState:
    return _apply(state, x2, d2, lr_static if lr_static is not None else lr, key, backend, False)
