"""Time decay / diffuse / drift / reset on a 512×512 tile against plain elementwise floors.

Each operator runs jitted on a SoftBounds tile with lifetime, diffusion, reset variation and drift
(no write noise, the common case), warmed up, then timed in ``--repeats`` rounds; every round calls
each operator and each floor once, and a ratio is the median over rounds of the per-round ratio
(robust on a shared, loaded machine). Floors, also jitted, are what any implementation must at
least do:

* ``scale``:  ``w * s`` — one read and one write of the weights (the floor of decay);
* ``affine``: ``clip((w − b)·s + b, lo, hi)`` with per-element arrays — decay's own arithmetic;
* ``normal``: ``w + r·normal(key)`` — one Gaussian per element with rpujax's generator (the floor
  of diffusion, reset and drift with read noise); ``normal_jax_random`` the same with
  ``jax.random.normal``, for comparison.

    python benchmarks/lifecycle.py [--out benchmarks/results/lifecycle.json] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

from _timing import interleaved, machine, medians, round_ratios

from rpujax import tile
from rpujax.configs import DriftParameter, SingleRPUConfig, SoftBoundsDevice
from rpujax.tile import lifecycle
from rpujax.tile.lifecycle import _normal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/lifecycle.json")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    n = args.size
    dev = SoftBoundsDevice(
        lifetime=100.0, lifetime_dtod=0.1, diffusion=0.001, diffusion_dtod=0.2, reset=0.01, reset_dtod=0.01,
        drift=DriftParameter(nu=0.05, nu_std=0.1, w_noise_std=0.001),
    )
    cfg = SingleRPUConfig(device=dev)
    k_init, k_w, k_run = jax.random.split(jax.random.key(0), 3)
    state = jax.jit(lambda k: tile.init(k, n, n, cfg))(k_init)
    state = tile.set_weights(state, jax.random.uniform(k_w, (n, n), jnp.float32, -0.3, 0.3))
    # Drift after its first call (the steady state: clocks and memory initialised).
    state = jax.jit(lifecycle.drift_weights)(state, 1.0, k_run)
    w = state.weights
    p = state.device
    s, b, lo, hi, r = p["decay_scales"], p["reset_bias"], p["min_bound"], p["max_bound"], p["diffusion_rates"]

    floors = {
        "scale": (jax.jit(lambda w, s: w * s), (w, s)),
        "affine": (jax.jit(lambda w, s, b, lo, hi: jnp.clip((w - b) * s + b, lo, hi)), (w, s, b, lo, hi)),
        # rpujax's generator (the MVM's), which the operators use; jax.random.normal for comparison
        "normal": (jax.jit(lambda w, r, k: w + r * _normal(k, w.shape, w.dtype)), (w, r, k_run)),
        "normal_jax_random": (jax.jit(lambda w, r, k: w + r * jax.random.normal(k, w.shape, w.dtype)), (w, r, k_run)),
    }
    # Each jitted call returns what the operator changes (the weights; drift also its memory), as it
    # would inside a jitted training step, where unchanged state leaves are passed through for free.
    ops = {
        "decay_weights": (jax.jit(lambda st: lifecycle.decay_weights(st, 1.0).weights), (state,), "affine"),
        "diffuse_weights": (jax.jit(lambda st, k: lifecycle.diffuse_weights(st, k).weights), (state, k_run), "normal"),
        "drift_weights": (
            jax.jit(lambda st, k: (lambda o: (o.weights, o.drift))(lifecycle.drift_weights(st, 1.0, k))),
            (state, k_run),
            "normal",
        ),
        "reset": (jax.jit(lambda st, k: lifecycle.reset(st, k).weights), (state, k_run), "normal"),
        "reset_prob_0.3": (jax.jit(lambda st, k: lifecycle.reset(st, k, 0.3).weights), (state, k_run), "normal"),
        "post_update_step": (jax.jit(lambda st, k: lifecycle.post_update_step(st, k).weights), (state, k_run), "normal"),
    }

    fns = {f"floor_{name}": fa for name, fa in floors.items()}
    fns.update({name: (fn, a) for name, (fn, a, _) in ops.items()})
    times = interleaved(fns, args.repeats)
    median = medians(times)
    ratio: dict[str, float] = {}
    for name, (_, _, floor) in ops.items():
        # median over rounds of the per-round ratio (robust to load changes between rounds)
        for ref in (floor, "scale"):
            ratio[f"{name}_over_{ref}"] = round_ratios(times, name, f"floor_{ref}")

    result = {
        "backend": jax.default_backend(),
        "devices": [str(dev) for dev in jax.devices()],
        "machine": machine(),
        "shape": [n, n],
        "repeats": args.repeats,
        "median_s": median,
        "ratio": ratio,
    }
    print(f"backend={result['backend']} devices={result['devices']} tile={n}x{n}")
    for name, t in median.items():
        print(f"  {name:28s} {t * 1e6:10.1f} us")
    for name, value in ratio.items():
        print(f"  {name:36s} {value:8.2f} x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
