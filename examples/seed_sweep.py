"""Train N analog MLPs with N device-to-device draws in one compiled program (vmap over seeds).

Every seed builds its own model: its own device-to-device variation of every tile (bounds, step
sizes), its own initial weights and its own noise streams. ``jax.vmap`` over the seed keys turns
initialisation and the whole training run (epochs × batches, pulsed updates included) into one
batched XLA program. Each member is bit for bit the run of that seed alone
(``tests/test_optim_training.py`` checks it).

    python examples/seed_sweep.py [--seeds 16] [--epochs 10] [--device constant-step]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rpujax import optim
from rpujax.demo import DEVICES, MLP, load_data, make_accuracy_fn, make_epoch_fn


def build(rpu_config, key: jax.Array, lr: float):
    """Model and optimizer of one seed (device draws, initial weights, noise streams from ``key``)."""
    model = MLP(rpu_config, rngs=nnx.Rngs(key))
    return model, optim.AnalogOptimizer(model, optim.analog_sgd(lr))


def sweep(rpu_config, seeds: int, epochs: int, batch_size: int = 16, lr: float = 0.1, key: int = 0):
    """Train ``seeds`` independent models in one vmapped program; returns test accuracies ``(seeds,)``."""
    x_tr, y_tr, x_te, y_te = (jnp.asarray(a) for a in load_data())
    keys = jax.random.split(jax.random.key(key), seeds)
    graphdef, _ = nnx.split(build(rpu_config, keys[0], lr))
    epoch = make_epoch_fn(graphdef, batch_size)
    accuracy = make_accuracy_fn(graphdef)

    def run(seed_key: jax.Array) -> jax.Array:
        k_model, k_train, k_eval = jax.random.split(seed_key, 3)
        state = nnx.state(build(rpu_config, k_model, lr))

        def one_epoch(state, e):
            state, losses = epoch(state, x_tr, y_tr, jax.random.fold_in(k_train, e))
            return state, jnp.mean(losses)

        state, losses = jax.lax.scan(one_epoch, state, jnp.arange(epochs))
        return accuracy(state, x_te, y_te, k_eval), losses

    return jax.jit(jax.vmap(run))(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", choices=sorted(DEVICES), default="constant-step")
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    acc, losses = jax.block_until_ready(sweep(DEVICES[args.device](), args.seeds, args.epochs, lr=args.lr))
    dt = time.perf_counter() - t0
    acc = 100 * np.asarray(acc)
    print(f"{args.device}: {args.seeds} seeds × {args.epochs} epochs in {dt:.1f} s (compilation included)")
    print(f"test accuracy {acc.mean():.2f} ± {acc.std(ddof=1):.2f} % (mean ± std over seeds), "
          f"min {acc.min():.2f} %, max {acc.max():.2f} %")
    print(f"final training loss {np.asarray(losses)[:, -1].mean():.4f}")


if __name__ == "__main__":
    main()
