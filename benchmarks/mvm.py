"""Time the analog forward/backward MVM against a plain jitted ``x @ W.T`` in the same run.

Default ``SingleRPUConfig`` IO (ABS_MAX noise management, ITERATIVE bound management, output
noise, 7-bit DAC / 9-bit ADC quantisation) on a 512×512 tile with a batch of 256 in float32.
Each function is jitted and warmed up; then all are timed round-robin ``--repeats`` times (so
that machine load affects them alike) and the medians, and the medians of per-round ratios, are
reported. The
floors are the plain products with the backend's default precision and with ``HIGHEST`` (which
the analog MVM uses).

    python benchmarks/mvm.py [--out benchmarks/results/mvm.json] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

from _timing import interleaved, machine, medians, round_ratios

from rpujax.configs import SingleRPUConfig
from rpujax.tile.mvm import backward, forward, sample_periphery_parameters
from rpujax.tile.state import TileState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/mvm.json")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    n, batch = args.size, args.batch
    cfg = SingleRPUConfig()
    k_w, k_x, k_d, k_f, k_b, k_run = jax.random.split(jax.random.key(0), 6)
    w = jax.random.uniform(k_w, (n, n), jnp.float32, -0.5, 0.5)
    x = jax.random.normal(k_x, (batch, n), jnp.float32)
    d = jax.random.normal(k_d, (batch, n), jnp.float32)
    state = TileState(
        weights=w,
        fwd=sample_periphery_parameters(cfg.forward, k_f, n, n),
        bwd=sample_periphery_parameters(cfg.backward, k_b, n, n),
        rpu_config=cfg,
    )

    floor_default = jax.jit(lambda x, w: x @ w.T)
    floor_highest = jax.jit(lambda x, w: jnp.matmul(x, w.T, precision=jax.lax.Precision.HIGHEST))
    floor_bwd = jax.jit(lambda d, w: d @ w)
    fwd = jax.jit(forward)
    bwd = jax.jit(backward)

    samples = interleaved(
        {
            "matmul_default_precision": (floor_default, (x, w)),
            "matmul_highest_precision": (floor_highest, (x, w)),
            "matmul_backward_default_precision": (floor_bwd, (d, w)),
            "forward": (fwd, (state, x, k_run)),
            "backward": (bwd, (state, d, k_run)),
        },
        args.repeats,
    )
    med = medians(samples)
    t_floor, t_floor_hi = med["matmul_default_precision"], med["matmul_highest_precision"]
    t_floor_bwd, t_fwd, t_bwd = med["matmul_backward_default_precision"], med["forward"], med["backward"]

    def round_ratio(num: str, den: str) -> float:
        return round_ratios(samples, num, den)

    result = {
        "backend": jax.default_backend(),
        "devices": [str(dev) for dev in jax.devices()],
        "machine": machine(),
        "shape": {"out": n, "in": n, "batch": batch},
        "repeats": args.repeats,
        "median_s": {
            "matmul_default_precision": t_floor,
            "matmul_highest_precision": t_floor_hi,
            "matmul_backward_default_precision": t_floor_bwd,
            "forward": t_fwd,
            "backward": t_bwd,
        },
        "ratio": {
            "forward_over_matmul": t_fwd / t_floor,
            "backward_over_matmul": t_bwd / t_floor_bwd,
            "forward_over_matmul_highest": t_fwd / t_floor_hi,
        },
        "median_of_per_round_ratios": {
            "forward_over_matmul": round_ratio("forward", "matmul_default_precision"),
            "backward_over_matmul": round_ratio("backward", "matmul_backward_default_precision"),
        },
    }
    print(f"backend={result['backend']} devices={result['devices']}")
    for name, t in result["median_s"].items():
        print(f"  {name:36s} {t * 1e3:9.3f} ms")
    for name, r in result["ratio"].items():
        print(f"  {name:36s} {r:9.2f} x")
    for name, r in result["median_of_per_round_ratios"].items():
        print(f"  {name + ' (per-round median)':36s} {r:9.2f} x")
    print(f"  load average (1 min): {result['machine'].get('load_average', ['?'])[0]}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
