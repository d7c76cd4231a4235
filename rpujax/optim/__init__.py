"""The analog optimizer and training-step helpers.

A training step looks like any Flax step::

    import optax
    from flax import nnx
    from rpujax import optim

    optimizer = optim.AnalogOptimizer(model, optim.analog_sgd(0.1))

    @nnx.jit
    def train_step(model, optimizer, x, y, key):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        loss, grads = optim.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, key)
        return loss

Pulsed tiles are updated with ``tile.update`` from each layer's own input and update error (per
sample), then ``post_update_step``; inference tiles and digital parameters go through optax.
"""

from rpujax.optim.grad import AnalogGrads, TileGrad, grad, value_and_grad
from rpujax.optim.optimizer import (
    AnalogGradientTransformation,
    AnalogOptimizer,
    AnalogOptState,
    analog_optimizer,
    analog_sgd,
    dense_gradient,
)

__all__ = [
    "AnalogGradientTransformation",
    "AnalogGrads",
    "AnalogOptState",
    "AnalogOptimizer",
    "TileGrad",
    "analog_optimizer",
    "analog_sgd",
    "dense_gradient",
    "grad",
    "value_and_grad",
]
