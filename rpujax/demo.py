"""The rpujax demo: build an analog tile and show what its forward pass does to a matrix product.

Run with ``python -m rpujax.demo``. It builds a 256×512 tile with aihwkit's default
``SingleRPUConfig`` (7-bit DAC, 9-bit ADC, output noise 0.06, ABS_MAX noise management, iterative
bound management), writes known weights, and prints error statistics of the analog forward and
backward passes against the exact products, then runs a few pulsed updates.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rpujax import tile
from rpujax.configs import SingleRPUConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rpujax.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-size", type=int, default=256)
    parser.add_argument("--in-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    key = jax.random.key(args.seed)
    k_init, k_w, k_x, k_d, k_fwd, k_bwd, k_upd = jax.random.split(key, 7)
    cfg = SingleRPUConfig()
    state = tile.init(k_init, args.out_size, args.in_size, cfg)
    w = jax.random.uniform(k_w, (args.out_size, args.in_size), minval=-0.3, maxval=0.3)
    state = tile.set_weights(state, w)
    x = jax.random.normal(k_x, (args.batch, args.in_size))
    d = jax.random.normal(k_d, (args.batch, args.out_size))

    forward = jax.jit(tile.forward)
    backward = jax.jit(tile.backward)
    y = forward(state, x, k_fwd)
    dx = backward(state, d, k_bwd)
    y_ideal = x @ state.weights.T
    dx_ideal = d @ state.weights

    def report(name: str, approx: jax.Array, exact: jax.Array) -> None:
        err = np.asarray(approx - exact)
        rel = np.sqrt(np.mean(err**2) / np.mean(np.asarray(exact) ** 2))
        print(f"{name:9s} mean err {err.mean():+.4f}  std err {err.std():.4f}  relative RMSE {rel:.4f}")

    print(f"tile {args.out_size}x{args.in_size}, batch {args.batch}, {type(cfg.device).__name__}")
    report("forward", y, y_ideal)
    report("backward", dx, dx_ideal)

    update = jax.jit(tile.update)
    lr = 0.01
    new = update(state, x[:16] / jnp.abs(x[:16]).max(), d[:16] / jnp.abs(d[:16]).max(), lr, k_upd)
    jax.block_until_ready(new.weights)
    t0 = time.perf_counter()
    new = update(state, x[:16] / jnp.abs(x[:16]).max(), d[:16] / jnp.abs(d[:16]).max(), lr, k_upd)
    jax.block_until_ready(new.weights)
    dt = time.perf_counter() - t0
    dw = np.asarray(new.weights - state.weights)
    ideal = -lr * np.asarray((d[:16] / jnp.abs(d[:16]).max()).T @ (x[:16] / jnp.abs(x[:16]).max()))
    corr = np.corrcoef(dw.ravel(), ideal.ravel())[0, 1]
    print(f"pulsed update (16 samples): {dt * 1e3:.1f} ms, corr(dW, -lr d x^T) = {corr:.3f}")


if __name__ == "__main__":
    main()
