"""``value_and_grad`` for models with analog layers: digital gradients plus each tile's (x, d).

The analog weight "gradient" of a pulsed tile is never a dense matrix (spec cells-inference-api
§5): it is the pair of the tile's input ``x`` and update error ``d`` for every sample, consumed by
the pulsed update. :func:`value_and_grad` returns both kinds in one :class:`AnalogGrads`:

* ``grads.params``: the gradients of the digital parameters (``nnx.Param``: biases, learned out
  scales, any non-analog layer), as ``nnx.grad`` would return them;
* ``grads.tiles``: per analog tile (keyed by :func:`rpujax.nn.tile_key`), a :class:`TileGrad` with
  ``x`` (the original layer input), ``d = g / (s_map·λ)`` (``g``: gradient of the loss w.r.t. the
  tile's output after the mapping scales; unmasked by the out-bound mask) and ``λ``, spec §1.6.
  Several calls of one tile in a step are concatenated (one update, as aihwkit's optimizer does).

How: see :mod:`rpujax.nn.capture` (an abstract shape pass, then one differentiated pass in which
every tile output carries a zero perturbation whose gradient is ``d``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from rpujax.nn.capture import Capture, capturing
from rpujax.nn.convert import analog_layers

Array = jax.Array

__all__ = ["AnalogGrads", "TileGrad", "grad", "value_and_grad"]


@struct.dataclass
class TileGrad:
    """What the optimizer needs to update one tile.

    Attributes:
      x: ``(N, in_size)`` tile inputs of the step (all calls concatenated).
      d: ``(N, out_size)`` update errors ``g / (s_map·λ)``, same rows.
      lr_scale: ``λ`` (``mapping_lr_scale``, spec §1.9), or None for 1 (no lr compensation); the
        tile learning rate is ``lr·λ``.
    """

    x: Array
    d: Array
    lr_scale: Array | None = None


@struct.dataclass
class AnalogGrads:
    """Gradients of a model with analog layers.

    Attributes:
      params: gradients of the digital parameters (an ``nnx.State`` like ``nnx.grad``'s).
      tiles: ``{tile name: TileGrad}`` for every analog tile the loss used.
    """

    params: Any
    tiles: dict[str, TileGrad]


def _group(
    inputs: dict[str, Array], errors: dict[str, Array], lr_scales: dict[str, Array | None]
) -> dict[str, TileGrad]:
    calls: dict[str, list[tuple[int, str]]] = {}
    for key in inputs:
        base, n = key.rsplit("#", 1)
        calls.setdefault(base, []).append((int(n), key))
    out = {}
    for base, items in calls.items():
        keys = [k for _, k in sorted(items)]
        x = inputs[keys[0]] if len(keys) == 1 else jnp.concatenate([inputs[k] for k in keys], axis=0)
        d = errors[keys[0]] if len(keys) == 1 else jnp.concatenate([errors[k] for k in keys], axis=0)
        out[base] = TileGrad(x=x, d=d, lr_scale=lr_scales[keys[0]])
    return out


def value_and_grad(
    fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    wrt: Any = nnx.Param,
) -> Callable[..., tuple[Any, AnalogGrads]]:
    """Like ``nnx.value_and_grad`` for ``fn(model, *args, **kwargs)``, with the analog tiles' (x, d).

    The returned function evaluates ``fn`` once (plus an abstract shape pass, no computation),
    writes the model's state changes back (RNG counters, running noise-management values, batch
    statistics, parameters the forward pass set such as a data-initialised input range), and returns ``(value, grads)``: ``value`` is ``fn``'s output (``(loss, aux)`` with
    ``has_aux``), ``grads`` an :class:`AnalogGrads`. Works inside ``nnx.jit`` / ``jax.jit``,
    ``lax.scan`` and ``vmap``.

    Args:
      fn: the loss; its first argument is the nnx model, which must contain every analog layer
        the loss calls. It must call the same layers in the same order each time it is traced.
      has_aux: ``fn`` returns ``(loss, aux)``.
      wrt: the filter of the digital parameters to differentiate (default ``nnx.Param``).

    Returns:
      ``f(model, *args, **kwargs) -> (value, AnalogGrads)``.
    """

    @functools.wraps(fn)
    def wrapped(model: Any, *args: Any, **kwargs: Any) -> tuple[Any, AnalogGrads]:
        graphdef, params, rest = nnx.split(model, wrt, ...)

        # nnx only lets a trace mutate variables (RNG counters, tile states) created at its own
        # trace level, so `rest` is passed in and rebuilt (tree_map makes new Variables) here.
        def run(params: Any, rest: Any, perturbations: dict[str, Array] | None):
            m = nnx.merge(graphdef, params, jax.tree.map(lambda a: a, rest))
            paths = {id(layer): path + ("tiles",) for path, layer in analog_layers(m)}
            capture = Capture(paths, perturbations)
            with capturing(capture):
                out = fn(m, *args, **kwargs)
            loss, aux = out if has_aux else (out, None)
            _, new_params, new_rest = nnx.split(m, wrt, ...)
            return loss, (aux, (new_params, new_rest), capture)

        def discover(params: Any, rest: Any) -> dict[str, Array]:
            _, (_, _, capture) = run(params, rest, None)
            return {k: jnp.zeros(s.shape, s.dtype) for k, s in capture.shapes.items()}

        shapes = jax.eval_shape(discover, params, rest)
        perturbations = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}

        def differentiated(params: Any, perturbations: dict[str, Array], rest: Any):
            loss, (aux, new_state, capture) = run(params, rest, perturbations)
            return loss, (aux, new_state, capture.inputs, capture.lr_scales)

        (loss, (aux, (new_params, new_rest), inputs, lr_scales)), (g_params, g_pert) = jax.value_and_grad(
            differentiated, argnums=(0, 1), has_aux=True
        )(params, perturbations, rest)
        # Parameters the forward pass wrote (the data initialisation of a learned input range,
        # spec §2.4) are written back too; the gradient applies to the written value.
        nnx.update(model, new_params)
        nnx.update(model, new_rest)
        grads = AnalogGrads(params=g_params, tiles=_group(inputs, g_pert, lr_scales))
        return ((loss, aux) if has_aux else loss), grads

    return wrapped


def grad(fn: Callable[..., Any], *, has_aux: bool = False, wrt: Any = nnx.Param) -> Callable[..., Any]:
    """Like :func:`value_and_grad` but returns only the gradients (and ``aux`` with ``has_aux``)."""
    vg = value_and_grad(fn, has_aux=has_aux, wrt=wrt)

    @functools.wraps(fn)
    def wrapped(model: Any, *args: Any, **kwargs: Any) -> Any:
        value, grads = vg(model, *args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    return wrapped
