"""Capturing each analog tile's input ``x`` and output error ``d`` inside an ordinary gradient step.

A pulsed tile is trained with ``tile.update(state, x, d, lr, key)`` from the layer's own input and
the gradient of the loss with respect to the tile's output, per sample (spec cells-inference-api
§1.5–§1.6, §5). Inside a normal ``value_and_grad`` step both are obtained without a second
backward pass:

* ``x`` is recorded as the layer runs (like Flax's ``sow``);
* ``d`` is the gradient of the loss with respect to a zero *perturbation* ``p`` added to the
  tile's scaled output (like Flax's ``perturb``): the layer computes ``y + p·c`` with ``p = 0``,
  so the value is unchanged and ``∂L/∂p = c·∂L/∂y``. With ``c = 1/(s_map·λ)`` this is exactly the
  update error of spec §1.6, ``d_u = g / (s_map·λ)``, unmasked by the out-bound mask.

The perturbations must exist before the function is differentiated, with the shapes of the tile
outputs; :func:`rpujax.optim.value_and_grad` finds them with an abstract evaluation
(``jax.eval_shape``) of the same function first. Both passes run the same Python code, so the
``n``-th call of a tile has the same key in both. A tile called several times in one step (a
shared layer, time steps of a recurrent model) gets one entry per call; the optimizer
concatenates them into one update, as aihwkit's optimizer does.

The capture is a trace-time context (a ``contextvars.ContextVar``), entered only inside
:func:`rpujax.optim.value_and_grad`; layers called outside it behave as plain functions.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax

Array = jax.Array

__all__ = ["Capture", "active_capture", "capturing", "tile_key"]

_ACTIVE: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("rpujax_capture", default=None)


def tile_key(path: tuple[Any, ...], i: int, j: int) -> str:
    """The name of tile ``(i, j)`` (input piece i, output piece j) of the tile variable at ``path``.

    ``path`` is the path of the layer's ``tiles`` variable in the model (e.g.
    ``('layers', 0, 'tiles')``); the name is ``"layers/0/tiles[i,j]"``.
    """
    return "/".join(str(p) for p in path) + f"[{i},{j}]"


class Capture:
    """Per-step record of tile inputs and perturbations, keyed by ``tile_key#call``.

    Attributes:
      paths: ``id(layer) -> path of its tiles variable`` for the model being differentiated.
      perturbations: the zero perturbations (capture pass), or None (shape-discovery pass).
      shapes: per call, the shape/dtype of the perturbed output (filled in the discovery pass).
      inputs: per call, the tile input ``x`` (2-D, without the analog-bias column).
      lr_scales: per call, the tile's learning-rate scale ``λ`` (spec §1.9), None for 1.
    """

    def __init__(self, paths: dict[int, tuple[Any, ...]], perturbations: dict[str, Array] | None):
        self.paths = paths
        self.perturbations = perturbations
        self.shapes: dict[str, jax.ShapeDtypeStruct] = {}
        self.inputs: dict[str, Array] = {}
        self.lr_scales: dict[str, Array | None] = {}
        self._calls: dict[str, int] = {}

    def tap(self, layer: Any, i: int, j: int, x: Array, y: Array, d_scale: Array, lr_scale: Array | None) -> Array:
        """Record ``x`` for tile ``(i, j)`` of ``layer`` and return ``y`` plus its zero perturbation.

        Args:
          layer: the analog layer (must belong to the model being differentiated).
          i, j: the tile's input and output piece.
          x: ``(N, in_i)`` tile input.
          y: ``(N, out_j)`` tile output after the mapping scales (before learned out scales).
          d_scale: ``1 / (s_map·λ)``, broadcastable to ``y`` (no gradient flows through it).
          lr_scale: scalar ``λ``, or None for 1.
        """
        path = self.paths.get(id(layer))
        if path is None:
            raise ValueError(
                f"{type(layer).__name__} was called inside rpujax.optim.value_and_grad but is not part of "
                "the model passed to it (pass the model containing every analog layer the loss uses)"
            )
        base = tile_key(path, i, j)
        n = self._calls.get(base, 0)
        self._calls[base] = n + 1
        key = f"{base}#{n}"
        self.inputs[key] = x
        self.lr_scales[key] = lr_scale
        if self.perturbations is None:
            self.shapes[key] = jax.ShapeDtypeStruct(y.shape, y.dtype)
            return y
        if key not in self.perturbations:
            raise RuntimeError(
                f"tile {key} ran in the differentiated pass but not in the shape-discovery pass: the loss "
                "function must call the same analog layers in the same order every time it is traced"
            )
        return y + self.perturbations[key] * jax.lax.stop_gradient(d_scale)


def active_capture() -> Capture | None:
    """The capture of the enclosing :func:`rpujax.optim.value_and_grad`, or None."""
    return _ACTIVE.get()


@contextlib.contextmanager
def capturing(capture: Capture) -> Iterator[Capture]:
    """Make ``capture`` the active capture for the analog layers called inside the block."""
    token = _ACTIVE.set(capture)
    try:
        yield capture
    finally:
        _ACTIVE.reset(token)
