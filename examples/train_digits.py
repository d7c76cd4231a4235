"""Train an analog MLP on the digits dataset with an ordinary Flax training step.

The step is the usual ``value_and_grad`` + ``optimizer.update`` under ``nnx.jit``; the only
differences from a digital Flax loop are ``rpujax.optim.value_and_grad`` (it also captures each
analog tile's input and output error) and ``AnalogOptimizer.update(model, grads, key)`` (pulsed
tiles are updated by the stochastic pulsed update, with that key). A learning-rate schedule
applies to analog and digital parameters alike.

    python examples/train_digits.py [--epochs 10] [--device soft-bounds]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rpujax import optim
from rpujax.demo import DEVICES, load_data
from rpujax.nn import AnalogLinear


class MLP(nnx.Module):
    def __init__(self, rpu_config, rngs: nnx.Rngs):
        self.hidden = AnalogLinear(64, 32, rpu_config, rngs=rngs)
        self.out = AnalogLinear(32, 10, rpu_config, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", choices=sorted(DEVICES), default="constant-step")
    args = parser.parse_args()

    x_tr, y_tr, x_te, y_te = load_data()
    steps_per_epoch = len(x_tr) // 16
    model = MLP(DEVICES[args.device](), rngs=nnx.Rngs(0))
    schedule = optax.cosine_decay_schedule(0.1, decay_steps=args.epochs * steps_per_epoch, alpha=0.1)
    optimizer = optim.AnalogOptimizer(model, optim.analog_sgd(schedule))

    @nnx.jit
    def train_step(model, optimizer, x, y, key):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = optim.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, key)
        return loss

    @nnx.jit
    def accuracy(model, x, y):
        return jnp.mean(jnp.argmax(model(x), axis=-1) == y)

    key = jax.random.key(1)
    for epoch in range(args.epochs):
        key, k_perm = jax.random.split(key)
        order = jax.random.permutation(k_perm, len(x_tr))
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * 16 : (b + 1) * 16]
            key, k_step = jax.random.split(key)
            losses.append(train_step(model, optimizer, x_tr[idx], y_tr[idx], k_step))
        model.eval()
        acc = accuracy(model, x_te, y_te)
        model.train()
        print(f"epoch {epoch + 1:2d}  loss {jnp.mean(jnp.stack(losses)):.4f}  test accuracy {100 * acc:.1f} %")


if __name__ == "__main__":
    main()
