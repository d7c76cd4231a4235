"""Evaluate a trained model at several inference times over many noise seeds in one program."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from rpujax.configs.inference import InferenceRPUConfig, ReRamWan2022NoiseModel
from rpujax.inference.noise import check_inference_time
from rpujax.inference.tile import drift_weights, program_weights
from rpujax.tile.state import TileState

Array = jax.Array

__all__ = ["INFERENCE_TIMES", "evaluate_over_time", "program_and_drift"]

#: 1 second, 1 minute, 1 hour, 1 day, 1 month (30 days), 1 year (365 days), in seconds.
INFERENCE_TIMES = (1.0, 60.0, 3600.0, 86400.0, 2592000.0, 31536000.0)


def _is_tile(x: Any) -> bool:
    return isinstance(x, TileState)


def _map_inference_tiles(fn: Callable[[TileState, Array], TileState], tree: Any, key: Array) -> Any:
    """Apply ``fn(tile, key_i)`` to every inference tile of ``tree``, tile ``i`` getting ``fold_in(key, i)``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_tile)
    out = []
    for i, leaf in enumerate(leaves):
        if _is_tile(leaf) and isinstance(leaf.rpu_config, InferenceRPUConfig):
            leaf = fn(leaf, jax.random.fold_in(key, i))
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def program_and_drift(model: Any, t_inference: Any, key: Array) -> Any:
    """Program every inference tile of the pytree ``model`` and drift it to ``t_inference`` s.

    Non-inference tiles and other leaves are returned unchanged. Tile ``i`` (in pytree order) uses
    keys derived from ``fold_in(key, i)``.
    """
    k_prog, k_drift = jax.random.split(key)
    model = _map_inference_tiles(lambda s, k: program_weights(s, k), model, k_prog)
    return _map_inference_tiles(lambda s, k: drift_weights(s, t_inference, k), model, k_drift)


def evaluate_over_time(
    model: Any,
    metric_fn: Callable[[Any, Array], Any],
    t_inference: Sequence[float] = INFERENCE_TIMES,
    key: Array | None = None,
    n_seeds: int = 10,
    *,
    seed_batch_size: int | None = None,
    return_values: bool = False,
) -> tuple[Any, Any] | tuple[Any, Any, Any]:
    """Evaluate ``metric_fn`` on a model after programming and drift, per time, over noise seeds.

    For every seed (all seeds in one ``jax.vmap``): program every inference tile of ``model`` once
    (programming noise and drift parameters of that seed), then for every time in
    ``t_inference`` drift the programmed tiles to that time (fresh read noise, drift-compensation
    factor) and evaluate ``metric_fn(drifted_model, key)``. This is aihwkit's
    ``program_analog_weights(); drift_analog_weights(t)`` loop, vectorised over seeds.

    Args:
      model: any pytree containing :class:`~rpujax.tile.state.TileState` leaves; inference tiles
        (``InferenceRPUConfig`` / ``TorchInferenceRPUConfig``) are programmed and drifted, all other
        leaves (digital parameters, other tiles) are passed through.
      metric_fn: ``metric_fn(model, key) -> pytree of arrays``, e.g. the accuracy of the model on a
        test set using :func:`rpujax.inference.forward` with ``is_test=True``. It is traced once.
      t_inference: inference times in seconds (static; each must be ``>= 0``).
      key: a ``jax.random`` key (default ``jax.random.key(0)``).
      n_seeds: number of independent noise seeds.
      seed_batch_size: ``None`` (default) vmaps all seeds at once (best on accelerators); an int
        vmaps chunks of that many seeds inside one compiled loop (``jax.lax.map``), which keeps
        the working set in cache on CPUs (same results either way).
      return_values: also return the per-seed values.

    Returns:
      ``(mean, std)`` — pytrees like ``metric_fn``'s output with a leading axis of
      ``len(t_inference)``; ``std`` is the population std (``ddof=0``) over seeds — and, with
      ``return_values``, the per-seed values with leading axes ``(n_seeds, len(t_inference))``.
    """
    times = tuple(float(check_inference_time(t)) for t in t_inference)
    if not times:
        raise ValueError("evaluate_over_time: t_inference is empty")
    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise ValueError(f"evaluate_over_time: n_seeds = {n_seeds!r}, expected an int >= 1")
    if seed_batch_size is not None and (
        not isinstance(seed_batch_size, int) or isinstance(seed_batch_size, bool) or seed_batch_size < 1
    ):
        raise ValueError(f"evaluate_over_time: seed_batch_size = {seed_batch_size!r}, expected None or an int >= 1")
    if key is None:
        key = jax.random.key(0)

    values = _evaluate(model, jax.random.split(key, n_seeds), metric_fn, times, seed_batch_size)
    mean = jax.tree.map(lambda v: jnp.mean(v, axis=0), values)
    std = jax.tree.map(lambda v: jnp.std(v, axis=0), values)
    if return_values:
        return mean, std, values
    return mean, std


@jax.jit(static_argnums=(2, 3, 4))
def _evaluate(
    model: Any,
    seed_keys: Array,
    metric_fn: Callable[[Any, Array], Any],
    times: tuple[float, ...],
    seed_batch_size: int | None,
) -> Any:
    """Per-seed, per-time metric values ``(n_seeds, n_times, ...)``; jitted once per model
    structure, metric function and time list."""

    # Models whose coefficients are looked up by time need static times (unrolled loop); the others
    # scan over the times, so the program (and its compile time) does not grow with their number.
    static_times = any(
        isinstance(leaf.rpu_config.noise_model, ReRamWan2022NoiseModel)
        for leaf in jax.tree_util.tree_leaves(model, is_leaf=_is_tile)
        if _is_tile(leaf) and isinstance(leaf.rpu_config, InferenceRPUConfig)
    )

    def at_time(programmed: Any, k_times: Array, i: Any, t: Any) -> Any:
        k_drift, k_eval = jax.random.split(jax.random.fold_in(k_times, i))
        drifted = _map_inference_tiles(lambda s, k: drift_weights(s, t, k), programmed, k_drift)
        return metric_fn(drifted, k_eval)

    def one_seed(seed_key: Array) -> Any:
        k_prog, k_times = jax.random.split(seed_key)
        programmed = _map_inference_tiles(lambda s, k: program_weights(s, k), model, k_prog)
        if static_times:
            results = [at_time(programmed, k_times, i, t) for i, t in enumerate(times)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *results)
        steps = (jnp.arange(len(times)), jnp.asarray(times, jnp.float32))
        _, out = jax.lax.scan(lambda c, it: (c, at_time(programmed, k_times, it[0], it[1])), None, steps)
        return out

    if seed_batch_size is None or seed_batch_size >= seed_keys.shape[0]:
        return jax.vmap(one_seed)(seed_keys)
    return jax.lax.map(one_seed, seed_keys, batch_size=seed_batch_size)
