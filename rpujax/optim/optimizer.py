"""The analog optimizer (aihwkit ``AnalogSGD`` / ``AnalogOptimizer``, spec cells-inference-api §5).

One optimizer step, in aihwkit's order:

1. the wrapped optax transformation updates the digital parameters and the weights of inference
   tiles (their dense gradient ``dᵀ x̂``, ``x̂`` with the analog-bias 1 appended; spec §1.14);
2. every pulsed / floating-point tile with a captured ``(x, d)`` gets **one**
   ``tile.update(state, x, d, lr·λ, key)`` — the pulsed update, never a dense gradient; ``lr`` is
   the analog learning rate of this step (a number or an optax schedule of the step count);
3. every analog tile gets its ``post_update_step`` (diffusion / decay; inference tiles: clip,
   remap, weight modifier).

Momentum, weight decay or Adam moments of the optax transformation act on digital parameters and
inference tiles only, as in aihwkit. The functional core is the optax-style pair
``analog_optimizer(tx, learning_rate) -> AnalogGradientTransformation(init, update)``;
:class:`AnalogOptimizer` wraps it like ``nnx.Optimizer``.

Keys: tile ``n`` (in sorted name order) uses ``fold_in(key, n)``, split into an update key and a
post-update key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from rpujax import tile
from rpujax.nn import get_tiles, is_inference_config, set_tiles
from rpujax.optim.grad import AnalogGrads, TileGrad
from rpujax.tile.lifecycle import post_update_step
from rpujax.tile.state import TileState

Array = jax.Array
Schedule = Callable[[Array], Array]

__all__ = [
    "AnalogGradientTransformation",
    "AnalogOptState",
    "AnalogOptimizer",
    "analog_optimizer",
    "analog_sgd",
    "dense_gradient",
]

_HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class AnalogOptState:
    """State of the analog optimizer: the step count and the optax state."""

    count: Array
    tx_state: Any


class AnalogGradientTransformation(NamedTuple):
    """An optax-style pair of pure functions for models with analog tiles.

    ``init(params, tiles) -> AnalogOptState``;
    ``update(grads, state, params, tiles, key) -> (new_params, new_tiles, new_state)``, where
    ``params`` is the pytree of digital parameters (e.g. ``nnx.as_pure(nnx.state(model,
    nnx.Param))``), ``tiles`` the ``{name: TileState}`` dict of :func:`rpujax.nn.get_tiles` and
    ``grads`` an :class:`~rpujax.optim.AnalogGrads`. Unlike optax, the update returns new
    parameters rather than additive updates: a pulsed tile's step is not a difference.
    """

    init: Callable[[Any, dict[str, TileState]], AnalogOptState]
    update: Callable[..., tuple[Any, dict[str, TileState], AnalogOptState]]


def dense_gradient(state: TileState, grad: TileGrad | None) -> Array:
    """The dense weight gradient ``dᵀ x̂`` of a tile (``(D, X)``; zeros without a captured grad).

    ``x̂`` is ``x`` with a 1 appended when the tile has an analog bias column. This is the
    gradient aihwkit gives an inference tile's shared weights (spec §1.14).
    """
    if grad is None:
        return jnp.zeros_like(state.weights)
    x = grad.x
    if state.bias:
        x = jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)
    if x.shape[-1] != state.x_size or grad.d.shape[-1] != state.out_size:
        raise ValueError(
            f"dense_gradient: x has shape {tuple(grad.x.shape)} and d {tuple(grad.d.shape)}, which do not fit "
            f"weights of shape {tuple(state.weights.shape)}"
        )
    dw = jax.lax.dot_general(grad.d, x, (((0,), (0,)), ((), ())), precision=_HIGHEST)
    return dw.astype(state.weights.dtype)


def _is_inference(state: TileState) -> bool:
    return is_inference_config(state.rpu_config)


def _tx_params(params: Any, tiles: dict[str, TileState]) -> dict[str, Any]:
    return {"params": params, "inference": {k: t.weights for k, t in sorted(tiles.items()) if _is_inference(t)}}


def analog_optimizer(tx: optax.GradientTransformation, learning_rate: float | Schedule) -> AnalogGradientTransformation:
    """The analog optimizer as an optax-style pair of pure functions.

    Args:
      tx: optax transformation for the digital parameters and inference tiles.
      learning_rate: learning rate of the pulsed / floating-point tiles, a number or an optax
        schedule ``step -> lr`` (evaluated at the count of completed steps, as optax does).
        aihwkit's ``AnalogSGD(lr)`` uses the same number for both; see :func:`analog_sgd`.

    Returns:
      An :class:`AnalogGradientTransformation`.
    """
    if not callable(learning_rate):
        lr_value = float(learning_rate)
        if not math.isfinite(lr_value) or lr_value < 0:
            raise ValueError(f"analog_optimizer: learning_rate = {learning_rate!r}: expected a finite number >= 0")

    def init(params: Any, tiles: dict[str, TileState]) -> AnalogOptState:
        return AnalogOptState(count=jnp.zeros((), jnp.int32), tx_state=tx.init(_tx_params(params, tiles)))

    def update(
        grads: AnalogGrads,
        state: AnalogOptState,
        params: Any,
        tiles: dict[str, TileState],
        key: Array,
    ) -> tuple[Any, dict[str, TileState], AnalogOptState]:
        unknown = sorted(set(grads.tiles) - set(tiles))
        if unknown:
            raise KeyError(f"analog optimizer: gradients for tiles {unknown} that are not in the model's tiles")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        tx_params = _tx_params(params, tiles)
        tx_grads = {
            "params": grads.params,
            "inference": {k: dense_gradient(tiles[k], grads.tiles.get(k)) for k in tx_params["inference"]},
        }
        updates, tx_state = tx.update(tx_grads, state.tx_state, tx_params)
        new = optax.apply_updates(tx_params, updates)

        new_tiles = {}
        for n, name in enumerate(sorted(tiles)):
            k_update, k_post = jax.random.split(jax.random.fold_in(key, n))
            st = tiles[name]
            if _is_inference(st):
                from rpujax import inference  # noqa: PLC0415

                st = inference.post_update_step(st.replace(weights=new["inference"][name]), k_post)
            else:
                g = grads.tiles.get(name)
                if g is not None:
                    tile_lr = lr if g.lr_scale is None else lr * g.lr_scale
                    st = tile.update(st, g.x, g.d, tile_lr, k_update)
                st = post_update_step(st, k_post)
            new_tiles[name] = st
        return new["params"], new_tiles, AnalogOptState(count=state.count + 1, tx_state=tx_state)

    return AnalogGradientTransformation(init, update)


def analog_sgd(
    learning_rate: float | Schedule,
    momentum: float | None = None,
    nesterov: bool = False,
) -> AnalogGradientTransformation:
    """aihwkit's ``AnalogSGD``: one learning rate (or schedule) for analog tiles and digital SGD.

    ``momentum`` / ``nesterov`` apply to digital parameters and inference tiles only (optax
    ``sgd``), as torch SGD's do in aihwkit.
    """
    return analog_optimizer(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov), learning_rate)


class AnalogOptimizer(nnx.Pytree):
    """``nnx.Optimizer`` for models with analog layers.

    Example::

        optimizer = AnalogOptimizer(model, analog_sgd(0.1))

        @nnx.jit
        def train_step(model, optimizer, x, y, key):
            def loss_fn(model):
                return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
            loss, grads = rpujax.optim.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads, key)
            return loss

    Args:
      model: the nnx model.
      tx: an :class:`AnalogGradientTransformation` (:func:`analog_sgd`, :func:`analog_optimizer`)
        or a plain optax transformation together with ``learning_rate``.
      learning_rate: the analog learning rate (number or schedule) when ``tx`` is plain optax.
      wrt: filter of the digital parameters (default ``nnx.Param``).
      data_parallel: a ``jax.sharding.Mesh`` whose devices hold data-parallel replicas (batch
        sharded with :func:`rpujax.parallel.shard_batch`, model replicated with
        :func:`rpujax.parallel.replicate`). Every update then gathers each tile's ``x`` and ``d``
        over the replicas first (:func:`rpujax.parallel.replicate_tile_grads`), so all replicas
        apply the same pulsed update with the same key and stay identical without a weight
        all-reduce. ``None`` (default): no gathering.

    Attributes:
      step: number of updates done.
      opt_state: the :class:`AnalogOptState`.
    """

    def __init__(
        self,
        model: Any,
        tx: AnalogGradientTransformation | optax.GradientTransformation,
        *,
        learning_rate: float | Schedule | None = None,
        wrt: Any = nnx.Param,
        data_parallel: Any = None,
    ):
        if data_parallel is not None and not isinstance(data_parallel, jax.sharding.Mesh):
            raise TypeError(
                f"AnalogOptimizer: data_parallel is a {type(data_parallel).__name__}; expected a "
                "jax.sharding.Mesh (e.g. rpujax.parallel.make_mesh(axis='data')) or None"
            )
        if not isinstance(tx, AnalogGradientTransformation):
            if learning_rate is None:
                raise ValueError(
                    "AnalogOptimizer: tx is a plain optax transformation; pass learning_rate= for the analog "
                    "tiles (or use rpujax.optim.analog_sgd / analog_optimizer)"
                )
            tx = analog_optimizer(tx, learning_rate)
        elif learning_rate is not None:
            raise ValueError("AnalogOptimizer: learning_rate is given twice (tx already has one)")
        self.tx = tx
        self.wrt = wrt
        self.data_parallel = data_parallel
        self.step = nnx.OptState(jnp.zeros((), jnp.uint32))
        params = nnx.as_pure(nnx.state(model, wrt))
        self.opt_state = nnx.OptState(tx.init(params, get_tiles(model)))

    def update(self, model: Any, grads: AnalogGrads, key: Array) -> None:
        """One optimizer step on ``model`` in place (digital, pulsed, post-update; see the module doc)."""
        if not isinstance(grads, AnalogGrads):
            raise TypeError(
                f"AnalogOptimizer.update: grads is a {type(grads).__name__}; compute it with "
                "rpujax.optim.value_and_grad (nnx.grad does not capture the analog tiles' x and d)"
            )
        if self.data_parallel is not None:
            from rpujax.parallel import replicate_tile_grads  # noqa: PLC0415

            grads = replicate_tile_grads(grads, self.data_parallel)
        params = nnx.as_pure(nnx.state(model, self.wrt))
        g_params = nnx.as_pure(nnx.state(grads.params, self.wrt))
        new_params, new_tiles, new_state = self.tx.update(
            AnalogGrads(params=g_params, tiles=grads.tiles), self.opt_state.get_value(), params,
            get_tiles(model), key,
        )
        nnx.update(model, new_params)
        set_tiles(model, new_tiles)
        self.opt_state.set_value(new_state)
        self.step[...] += 1
