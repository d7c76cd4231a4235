"""Inference tiles: hardware-aware forward, post-update step, programming and drift (spec §4.5).

These functions act on a :class:`~rpujax.tile.state.TileState` built with an
:class:`~rpujax.configs.inference.InferenceRPUConfig` or
:class:`~rpujax.configs.inference.TorchInferenceRPUConfig`. The inference-specific state lives in
``state.aux``:

========================  ==========================================================================
``alpha``                 drift-compensation factor, ``()`` (global) or ``(D,)`` (per column);
                          present when ``drift_compensation`` is set; multiplies eval outputs
``fb_weights``            the modified forward/backward weights drawn by the last
                          :func:`post_update_step` (``InferenceRPUConfig`` with an active modifier)
``fb_valid``              whether ``fb_weights`` has been drawn (False until the first step)
``mapping_scales``        ``(D,)`` digital output scales moved out of the tile by remapping (when
                          ``remap.type`` is not NONE); multiply the outputs
``reference_weights``     the programming targets (set by :func:`program_weights`; ``set_weights``
                          should drop it, as aihwkit's does)
``programmed_weights``    the weights right after programming
``drift_params``          ``(S, D, X)`` per-device drift parameters drawn at programming
``drift_baseline``        drift-compensation reference read-out taken right after programming
========================  ==========================================================================

The last four keys appear with the first :func:`program_weights`; a state before programming has a
different pytree structure from one after (a ``jit`` retraces once). :func:`init_inference_aux`
creates the others; ``rpujax.tile.init`` calls it for inference configs, and every function here
calls it too (it is idempotent).

Every random function takes an explicit key; the same key gives the same result under ``jit``, no
``jit`` and ``vmap``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.inference import (
    GlobalDriftCompensationWithExactReference,
    InferenceRPUConfig,
    PerColumnDriftCompensation,
    ReRamWan2022NoiseModel,
    TorchInferenceRPUConfig,
    WeightRemapType,
)
from rpujax.inference.modifiers import (
    clip_weights,
    clip_weights_torch,
    modify_weights,
    modify_weights_torch,
    remap_weights,
    remap_weights_torch,
)
from rpujax.inference.noise import apply_drift_noise, apply_programming_noise, check_inference_time
from rpujax.tile import mvm
from rpujax.tile.state import TileState

Array = jax.Array

__all__ = [
    "drift_compensation_readout",
    "drift_weights",
    "forward",
    "forward_with_state",
    "init_inference_aux",
    "is_programmed",
    "post_update_step",
    "program_weights",
]

# What drift needs. ``reference_weights`` is not among them: aihwkit's set_weights forgets the
# programming targets but keeps the (then stale) programmed weights (spec §7 item 2).
_PROGRAM_KEYS = ("programmed_weights", "drift_params")


def _config(state: TileState, what: str) -> InferenceRPUConfig:
    cfg = state.rpu_config
    if not isinstance(cfg, InferenceRPUConfig):
        raise TypeError(
            f"{what}: the tile's rpu_config is {type(cfg).__name__}; inference functions need an "
            "InferenceRPUConfig or TorchInferenceRPUConfig"
        )
    if state.weights.ndim != 2:
        raise ValueError(
            f"{what}: state.weights has shape {tuple(state.weights.shape)}, expected (D, X); use jax.vmap "
            "for a batch of tiles"
        )
    return cfg


def _is_torch(cfg: InferenceRPUConfig) -> bool:
    return isinstance(cfg, TorchInferenceRPUConfig)


def _alpha_shape(cfg: InferenceRPUConfig, d_size: int) -> tuple[int, ...]:
    return (d_size,) if isinstance(cfg.drift_compensation, PerColumnDriftCompensation) else ()


def init_inference_aux(state: TileState, key: Array | None = None) -> TileState:
    """Add the inference bookkeeping to ``state.aux`` (idempotent; existing entries are kept).

    Creates ``alpha`` (ones), ``fb_weights``/``fb_valid`` (RPUCuda-timed modifier: a copy of the
    weights, not valid yet) and ``mapping_scales`` (ones, when remapping is on), as aihwkit's
    ``InferenceTile`` constructor does. ``key`` is accepted for the ``init`` hook and unused
    (nothing random happens before the first optimizer step).

    Raises:
      TypeError: for a non-inference rpu config.
      ValueError: for a ``TorchInferenceRPUConfig`` tile with an analog bias column (the torch tile
        supports a digital bias only).
    """
    del key
    cfg = _config(state, "init_inference_aux")
    if _is_torch(cfg) and state.bias:
        raise ValueError("TorchInferenceRPUConfig: an analog bias column is not supported (use a digital bias)")
    aux = dict(state.aux)
    d_size = state.out_size
    dtype = state.weights.dtype
    if cfg.drift_compensation is not None and "alpha" not in aux:
        aux["alpha"] = jnp.ones(_alpha_shape(cfg, d_size), dtype)
    if not _is_torch(cfg) and cfg.modifier.active and "fb_weights" not in aux:
        aux["fb_weights"] = state.weights
        aux["fb_valid"] = jnp.asarray(False)
    if cfg.remap.type is not WeightRemapType.NONE and "mapping_scales" not in aux:
        aux["mapping_scales"] = jnp.ones((d_size,), dtype)
    if aux.keys() == state.aux.keys():
        return state
    return state.replace(aux=aux)


def is_programmed(state: TileState) -> bool:
    """Whether :func:`program_weights` has been applied to this state (a static property)."""
    return all(k in state.aux for k in _PROGRAM_KEYS)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@jax.custom_vjp
def _straight_through(w: Array, w_mod: Array) -> Array:
    """Forward ``w_mod``; gradient to ``w`` unchanged (the modifier is treated as identity)."""
    return w_mod


def _st_fwd(w: Array, w_mod: Array):
    return w_mod, None


def _st_bwd(_, g: Array):
    return g, jnp.zeros_like(g)


_straight_through.defvjp(_st_fwd, _st_bwd)


@jax.custom_vjp
def _scale_row_grad(w: Array, factor: Array) -> Array:
    """Identity on ``w``; the gradient of row i is multiplied by ``factor[i]``."""
    return w


def _srg_fwd(w: Array, factor: Array):
    return w, factor


def _srg_bwd(factor: Array, g: Array):
    return g * factor[:, None].astype(g.dtype), jnp.zeros_like(factor)


_scale_row_grad.defvjp(_srg_fwd, _srg_bwd)


def _eval_weights(state: TileState, cfg: InferenceRPUConfig, is_test: bool) -> Array:
    """Weights the RPUCuda tile reads (``getFBWeights``): the modified ones in training once drawn,
    in eval only with ``enable_during_test``."""
    w = state.weights
    if _is_torch(cfg) or "fb_weights" not in state.aux:
        return w
    if is_test and not cfg.modifier.enable_during_test:
        return w
    return jnp.where(state.aux["fb_valid"], state.aux["fb_weights"], w)


def _output_scale(state: TileState, cfg: InferenceRPUConfig, is_test: bool) -> Array | None:
    scale = state.aux.get("mapping_scales")
    if is_test and cfg.drift_compensation is not None and "alpha" in state.aux:
        alpha = state.aux["alpha"]
        scale = alpha if scale is None else scale * alpha
    return scale


def forward_with_state(
    state: TileState, x: Array, key: Array, *, is_test: bool = False
) -> tuple[Array, TileState]:
    """Forward pass of an inference tile, returning the state with the updated running NM value.

    Training mode (``is_test=False``): the analog forward (``rpu_config.forward`` IO) on the
    modified weights — for ``InferenceRPUConfig`` the ones drawn by the last
    :func:`post_update_step` (the plain weights before the first step), for
    ``TorchInferenceRPUConfig`` a fresh draw from ``key`` at every call. Eval mode: the plain
    (programmed / drifted) weights, or the modified ones with ``enable_during_test``; the output
    is multiplied by the drift-compensation factor ``alpha``. Remapping's mapping scales multiply
    the output in both modes.

    Gradients: w.r.t. ``x``, the exact backward MVM on the weights used in the forward
    (``IOParameters(is_perfect=True)``, with aihwkit's out-bound mask of the tile MVM); w.r.t. ``state.weights``, the dense gradient through the
    modified weights (straight-through), divided row-wise by ``mapping_scales²`` when remapping is
    on, which reproduces aihwkit's ``(g/s)ᵀx`` convention. Any optax optimizer can apply it.

    Args:
      state: an inference tile.
      x: ``(..., in_size)`` inputs.
      key: a ``jax.random`` key.
      is_test: eval mode.

    Returns:
      ``(y, new_state)`` with ``y`` of shape ``(..., out_size)``.
    """
    _config(state, "forward")
    return _forward_jit(init_inference_aux(state), x, key, is_test=bool(is_test))


@jax.jit(static_argnames=("is_test",))
def _forward_jit(state: TileState, x: Array, key: Array, *, is_test: bool) -> tuple[Array, TileState]:
    cfg = state.rpu_config
    w = state.weights
    scale = _output_scale(state, cfg, is_test)
    if "mapping_scales" in state.aux:
        w = _scale_row_grad(w, jax.lax.stop_gradient(1.0 / state.aux["mapping_scales"] ** 2))
    mod = cfg.modifier
    torch_mod = _is_torch(cfg) and not is_test and mod.active
    if torch_mod:
        k_mod, key = jax.random.split(key)
    if torch_mod and mod.per_batch_sample:
        x = jnp.asarray(x)
        lead = x.shape[:-1]
        xb = x.reshape((-1, x.shape[-1]))
        n = xb.shape[0]
        w_b = modify_weights_torch(mod, jax.lax.stop_gradient(w), k_mod, batch_size=n)
        w_b = _straight_through(jnp.broadcast_to(w, w_b.shape), w_b)
        keys = jax.random.split(key, n)

        def one(wi: Array, xi: Array, ki: Array) -> Array:
            return mvm.forward(state.replace(weights=wi), xi[None], ki, is_test=is_test)[0]

        y = jax.vmap(one)(w_b, xb, keys).reshape(lead + (state.out_size,))
        new_state = state
    else:
        if torch_mod:
            w_used = _straight_through(w, modify_weights_torch(mod, jax.lax.stop_gradient(w), k_mod))
        else:
            w_sel = _eval_weights(state, cfg, is_test)
            w_used = w if w_sel is state.weights else _straight_through(w, jax.lax.stop_gradient(w_sel))
        y, out_state = mvm.forward_with_state(state.replace(weights=w_used), x, key, is_test=is_test)
        new_state = state.replace(nm_value=out_state.nm_value)
    if scale is not None:
        y = y * scale.astype(y.dtype)
    return y, new_state


def forward(state: TileState, x: Array, key: Array, *, is_test: bool = False) -> Array:
    """Forward pass of an inference tile (see :func:`forward_with_state`)."""
    y, _ = forward_with_state(state, x, key, is_test=is_test)
    return y


# ---------------------------------------------------------------------------------------------
# Training: once per optimizer step
# ---------------------------------------------------------------------------------------------


def post_update_step(state: TileState, key: Array) -> TileState:
    """Once-per-optimizer-step operators of an inference tile (aihwkit ``post_update_step``).

    In order: clip (``rpu_config.clip``), remap (``rpu_config.remap``, which moves a factor into
    ``aux['mapping_scales']``), and — ``InferenceRPUConfig`` only — draw the modified weights used by
    the next training forward/backward passes (``rpu_config.modifier``). Call it after every
    optimizer update of ``state.weights``.

    Args:
      state: an inference tile.
      key: a ``jax.random`` key (modifier noise).

    Returns:
      The new state.
    """
    _config(state, "post_update_step")
    return _post_update_step_jit(init_inference_aux(state), key)


@jax.jit
def _post_update_step_jit(state: TileState, key: Array) -> TileState:
    cfg = state.rpu_config
    torch = _is_torch(cfg)
    w = state.weights
    aux = dict(state.aux)
    if cfg.clip.type.name != "NONE":
        w = (clip_weights_torch if torch else clip_weights)(cfg.clip, w)
    if cfg.remap.type is not WeightRemapType.NONE:
        w, aux["mapping_scales"] = (remap_weights_torch if torch else remap_weights)(cfg.remap, w, aux["mapping_scales"])
    if not torch and cfg.modifier.active:
        aux["fb_weights"] = modify_weights(cfg.modifier, w, key)
        aux["fb_valid"] = jnp.asarray(True)
    return state.replace(weights=w.astype(state.weights.dtype), aux=aux)


# ---------------------------------------------------------------------------------------------
# Inference: programming, drift, compensation
# ---------------------------------------------------------------------------------------------


def drift_compensation_readout(state: TileState, key: Array) -> Array:
    """The drift-compensation read-out value of the tile's current weights.

    Runs the tile's eval-mode analog forward (IO noise included, no ``alpha`` and no mapping
    scales) on the one-hot read vectors ``I_X`` (analog-bias column included) and reduces
    ``max(mean|R|, 1e-4)`` over all entries (global, shape ``()``) or over the read vectors
    (per column, shape ``(D,)``).
    """
    cfg = _config(state, "drift_compensation_readout")
    return _readout_jit(state, key)


@jax.jit
def _readout_jit(state: TileState, key: Array) -> Array:
    cfg = state.rpu_config
    raw = state.replace(weights=_eval_weights(state, cfg, True), bias=False)
    eye = jnp.eye(state.x_size, dtype=state.weights.dtype)
    r = mvm.forward(raw, eye, key, is_test=True)
    return _reduce_readout(cfg, r)


def _reduce_readout(cfg: InferenceRPUConfig, r: Array) -> Array:
    if isinstance(cfg.drift_compensation, PerColumnDriftCompensation):
        return jnp.maximum(jnp.mean(jnp.abs(r), axis=0), 1e-4)
    return jnp.maximum(jnp.mean(jnp.abs(r)), 1e-4)


def program_weights(
    state: TileState, key: Array, *, from_reference: bool = True, noise_model: Any = None
) -> TileState:
    """Program the tile: programming noise on the targets, drift parameters, compensation baseline.

    The targets are the stored ``reference_weights`` of an earlier programming if
    ``from_reference`` (so re-programming does not program already-drifted weights), else — and on
    the first call — the current tile weights. The programmed weights replace ``state.weights``;
    the drift parameters (e.g. PCM drift exponents ν) are drawn here once from the targets; the
    drift-compensation baseline is read right after programming (spec §4.5). ``alpha`` is left as
    it is, as in aihwkit.

    Args:
      state: an inference tile.
      key: a ``jax.random`` key (programming noise, drift parameters, baseline read-out noise).
      from_reference: program from the stored targets of a previous programming if there are any.
      noise_model: replaces ``rpu_config.noise_model`` (as aihwkit's argument does) before
        programming.

    Returns:
      The programmed state.
    """
    cfg = _config(state, "program_weights")
    if noise_model is not None:
        cfg = dataclasses.replace(cfg, noise_model=noise_model)
        state = state.replace(rpu_config=cfg)
    return _program_jit(init_inference_aux(state), key, from_reference=bool(from_reference))


@jax.jit(static_argnames=("from_reference",))
def _program_jit(state: TileState, key: Array, *, from_reference: bool) -> TileState:
    cfg = state.rpu_config
    k_prog, k_read = jax.random.split(key)
    aux = dict(state.aux)
    reference = aux["reference_weights"] if from_reference and "reference_weights" in aux else state.weights
    programmed, drift_params = apply_programming_noise(cfg.noise_model, reference, k_prog)
    aux.update(reference_weights=reference, programmed_weights=programmed, drift_params=drift_params)
    state = state.replace(weights=programmed, aux=aux)
    if cfg.drift_compensation is not None:
        if isinstance(cfg.drift_compensation, GlobalDriftCompensationWithExactReference):
            baseline = _reduce_readout(cfg, reference.T)
        else:
            baseline = _readout_jit(state, k_read)
        aux["drift_baseline"] = baseline
        state = state.replace(aux=aux)
    return state


def drift_weights(state: TileState, t_inference: Any, key: Array) -> TileState:
    """Drift the programmed weights to ``t_inference`` s after programming and update ``alpha``.

    Always starts from the weights stored at programming (drift is not cumulative; repeated calls
    at the same time differ by their fresh read noise). With drift compensation, ``alpha`` becomes
    ``baseline / readout(drifted tile)`` (applied to outputs in eval mode only).

    Args:
      state: a programmed inference tile.
      t_inference: seconds since the end of programming (``>= 0``; a Python number or a scalar).
      key: a ``jax.random`` key (read noise, read-out noise).

    Raises:
      ValueError: if the tile has not been programmed (call :func:`program_weights` first; aihwkit
        programs implicitly here, rpujax keeps programming an explicit step with its own key), or
        for a negative / non-finite concrete ``t_inference``.
    """
    cfg = _config(state, "drift_weights")
    if not is_programmed(state):
        raise ValueError(
            "drift_weights: the tile has not been programmed, so there is nothing to drift from; call "
            "rpujax.inference.program_weights(state, key) first (t_inference counts from the end of "
            "programming)"
        )
    t_inf = check_inference_time(t_inference)
    state = init_inference_aux(state)
    if isinstance(cfg.noise_model, ReRamWan2022NoiseModel):
        # its coefficients are looked up by time, so the time must be static
        if not isinstance(t_inf, float):
            raise ValueError("drift_weights: ReRamWan2022NoiseModel needs a concrete t_inference (one of its times)")
        return _drift_static_t(state, key, t_inf)
    return _drift_jit(state, jnp.asarray(t_inf, state.weights.dtype), key)


def _drift(state: TileState, t_inf: Any, key: Array) -> TileState:
    cfg = state.rpu_config
    k_drift, k_read = jax.random.split(key)
    aux = dict(state.aux)
    drifted = apply_drift_noise(cfg.noise_model, aux["programmed_weights"], aux["drift_params"], t_inf, k_drift)
    state = state.replace(weights=drifted)
    if cfg.drift_compensation is not None:
        current = _readout_jit(state, k_read)
        aux["alpha"] = (aux["drift_baseline"] / current).astype(state.weights.dtype)
        state = state.replace(aux=aux)
    return state


_drift_jit = jax.jit(_drift)


@jax.jit(static_argnums=(2,))
def _drift_static_t(state: TileState, key: Array, t_inf: float) -> TileState:
    return _drift(state, t_inf, key)
