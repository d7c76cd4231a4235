"""Hardware-aware training for analog inference, and accuracy from 1 second to 1 year after programming.

A small MLP (64 → 64 → 10) classifies scikit-learn's bundled 8×8 digits (no download). Its two
layers are analog inference tiles used through the functional API (``rpujax.tile`` and
``rpujax.inference``); the biases are digital. It is trained twice with optax (Adam):

* **plain**: exact (floating-point) forward passes, as ordinary digital training;
* **hardware-aware**: the analog forward pass (7-bit DAC, 9-bit ADC, output noise) with additive
  Gaussian weight noise injected by the weight modifier (``ADD_NORMAL``, redrawn after every step,
  aihwkit's InferenceTile timing) and weights clipped to 2.5 standard deviations after every step.

Both trained networks are then deployed on the same analog inference tiles (aihwkit's default
``InferenceRPUConfig``: PCM programming noise, conductance drift, 1/f read noise, global drift
compensation) and evaluated 1 s, 1 h, 1 day, 1 month and 1 year after programming, over several
programming seeds in one vmapped call (``rpujax.inference.evaluate_over_time``).

    python examples/hwa_inference.py [--epochs 30] [--seeds 16]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from rpujax import inference, tile
from rpujax.configs import IOParameters
from rpujax.configs.inference import (
    InferenceRPUConfig,
    WeightClipParameter,
    WeightModifierParameter,
)

SIZES = (64, 64, 10)
TIMES = (1.0, 3600.0, 86400.0, 2592000.0, 31536000.0)
TIME_NAMES = ("1 s", "1 h", "1 day", "1 month", "1 year")

PLAIN = InferenceRPUConfig(forward=IOParameters(is_perfect=True))
HWA = InferenceRPUConfig(
    modifier=WeightModifierParameter(type="ADD_NORMAL", std_dev=0.08),
    clip=WeightClipParameter(type="LAYER_GAUSSIAN", sigma=2.5),
)
DEPLOY = InferenceRPUConfig()


def make_tiles(cfg: InferenceRPUConfig, key: jax.Array, weights: list[jax.Array] | None = None) -> list:
    """One analog tile per layer (weights ``(out, in)``; Kaiming-uniform unless given)."""
    tiles = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        k_init, k_w = jax.random.split(jax.random.fold_in(key, i))
        state = tile.init(k_init, n_out, n_in, cfg)
        w = weights[i] if weights is not None else jax.random.uniform(k_w, (n_out, n_in), minval=-1, maxval=1) * jnp.sqrt(3.0 / n_in)
        tiles.append(inference.init_inference_aux(tile.set_weights(state, w)))
    return tiles


def apply(tiles: list, biases: list, x: jax.Array, key: jax.Array, is_test: bool) -> jax.Array:
    """The MLP: analog tile forward (+ digital bias) per layer, ReLU in between."""
    h = x
    for i, (state, b) in enumerate(zip(tiles, biases)):
        h = inference.forward(state, h, jax.random.fold_in(key, i), is_test=is_test) + b
        if i < len(tiles) - 1:
            h = jax.nn.relu(h)
    return h


def train(cfg: InferenceRPUConfig, data: tuple, epochs: int, key: jax.Array) -> tuple[list, list]:
    """Train with Adam; after every step the tiles' post-update step (clip, new modifier draw)."""
    x_train, y_train = data
    k_init, k_loop = jax.random.split(key)
    tiles = make_tiles(cfg, k_init)
    params = {"w": [s.weights for s in tiles], "b": [jnp.zeros(n) for n in SIZES[1:]]}
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss_fn(params, tiles, x, y, k):
        tiles = [s.replace(weights=w) for s, w in zip(tiles, params["w"])]
        logits = apply(tiles, params["b"], x, k, is_test=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, tiles, opt_state, x, y, k):
        k_fwd, k_post = jax.random.split(k)
        loss, grads = jax.value_and_grad(loss_fn)(params, tiles, x, y, k_fwd)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        tiles = [
            inference.post_update_step(s.replace(weights=w), jax.random.fold_in(k_post, i))
            for i, (s, w) in enumerate(zip(tiles, params["w"]))
        ]
        params = {"w": [s.weights for s in tiles], "b": params["b"]}  # clipping changes the weights
        return params, tiles, opt_state, loss

    batch = 32
    n = x_train.shape[0]
    for epoch in range(epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_loop, epoch), n))
        for j in range(0, n - batch + 1, batch):
            idx = perm[j : j + batch]
            k = jax.random.fold_in(k_loop, epoch * n + j)
            params, tiles, opt_state, loss = step(params, tiles, opt_state, x_train[idx], y_train[idx], k)
    return params["w"], params["b"]


def test_accuracy(model: dict, key: jax.Array) -> jax.Array:
    """Eval-mode accuracy of a deployed model (the test set travels inside the model pytree, so
    both networks share one compiled evaluation)."""
    logits = apply(model["tiles"], model["b"], model["x"], key, is_test=True)
    return jnp.mean(jnp.argmax(logits, axis=-1) == model["y"])


def accuracy_over_time(weights: list, biases: list, test: tuple, seeds: int, key: jax.Array):
    """Deploy on default inference tiles; mean/std accuracy over programming seeds per time."""
    model = {"tiles": make_tiles(DEPLOY, key, weights), "b": biases, "x": test[0], "y": test[1]}
    return inference.evaluate_over_time(
        model, test_accuracy, TIMES, jax.random.fold_in(key, 99), n_seeds=seeds, seed_batch_size=4
    )


def digital_accuracy(weights: list, biases: list, test: tuple) -> float:
    x, y = test
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = jax.nn.relu(h)
    return float(jnp.mean(jnp.argmax(h, axis=-1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    train_data, test_data = (jnp.asarray(x_tr), jnp.asarray(y_tr)), (jnp.asarray(x_te), jnp.asarray(y_te))
    key = jax.random.key(args.seed)

    results = {}
    for name, cfg in (("plain", PLAIN), ("hardware-aware", HWA)):
        t0 = time.perf_counter()
        w, b = train(cfg, train_data, args.epochs, jax.random.fold_in(key, 1))
        t1 = time.perf_counter()
        mean, std = jax.block_until_ready(accuracy_over_time(w, b, test_data, args.seeds, jax.random.fold_in(key, 2)))
        t2 = time.perf_counter()
        results[name] = (digital_accuracy(w, b, test_data), np.asarray(mean), np.asarray(std))
        print(f"{name}: trained in {t1 - t0:.1f} s, evaluated {len(TIMES)} times x {args.seeds} seeds in {t2 - t1:.1f} s")

    print(f"\ntest accuracy (%) on analog PCM tiles, mean ± std over {args.seeds} programming seeds")
    print(f"{'time after programming':24s}" + "".join(f"{name:>20s}" for name in results))
    print(f"{'digital (no noise)':24s}" + "".join(f"{100 * r[0]:19.1f} " for r in results.values()))
    for i, tname in enumerate(TIME_NAMES):
        row = "".join(f"{100 * r[1][i]:13.1f} ± {100 * r[2][i]:4.1f}" for r in results.values())
        print(f"{tname:24s}{row}")


if __name__ == "__main__":
    main()
