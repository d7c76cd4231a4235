"""Time programming + drift + drift-compensated forward over many noise seeds: vmap vs Python loop.

A 512×512 inference tile (default ``InferenceRPUConfig``: PCM-like noise model, global drift
compensation, default forward IO) is programmed once per seed, then drifted to five inference
times (1 s, 1 h, 1 day, 1 month, 1 year); at each time a batch of inputs goes through the eval-mode
forward (with the compensation factor alpha) and the relative output error is reduced to one number.

* ``vmapped``: the whole experiment for ``--seeds`` seeds is one jitted, vmapped call (what
  :func:`rpujax.inference.evaluate_over_time` runs by default);
* ``vmapped_chunks``: the same single jitted call, vmapping ``--chunk`` seeds at a time inside a
  compiled loop (``evaluate_over_time(..., seed_batch_size=chunk)``), which keeps the working set
  in cache on CPUs;
* ``loop``: the same work as a Python loop over seeds and times calling the (internally jitted)
  functions ``program_weights``, ``drift_weights`` and ``forward`` one at a time.

All three use the same keys and give the same numbers.

Both are warmed up (compiled) first, then timed ``--repeats`` times (median).

    python benchmarks/inference.py [--out benchmarks/results/inference.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from _timing import machine, wall_and_cpu

from rpujax import inference, tile
from rpujax.configs.inference import InferenceRPUConfig

TIMES = (1.0, 3600.0, 86400.0, 2592000.0, 31536000.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=4)
    args = parser.parse_args()

    n = args.size
    k_init, k_w, k_x, k_run = jax.random.split(jax.random.key(0), 4)
    state = tile.init(k_init, n, n, InferenceRPUConfig())
    state = tile.set_weights(state, jax.random.uniform(k_w, (n, n), jnp.float32, -0.5, 0.5))
    state = inference.init_inference_aux(state)
    x = jax.random.normal(k_x, (args.batch, n), jnp.float32)
    y_exact = x @ state.weights.T
    seed_keys = jax.random.split(k_run, args.seeds)

    def rel_err(y: jax.Array) -> jax.Array:
        return jnp.linalg.norm(y - y_exact) / jnp.linalg.norm(y_exact)

    def one_seed(st: Any, k: jax.Array) -> jax.Array:
        k_prog, k_times = jax.random.split(k)
        programmed = inference.program_weights(st, k_prog)
        out = []
        for i, t in enumerate(TIMES):
            k_drift, k_fwd = jax.random.split(jax.random.fold_in(k_times, i))
            drifted = inference.drift_weights(programmed, t, k_drift)
            out.append(rel_err(inference.forward(drifted, x, k_fwd, is_test=True)))
        return jnp.stack(out)

    # The tile is an argument (not a closed-over constant), as in evaluate_over_time.
    vmapped = jax.jit(jax.vmap(one_seed, in_axes=(None, 0)))
    chunked = jax.jit(lambda st, ks: jax.lax.map(lambda k: one_seed(st, k), ks, batch_size=args.chunk))
    err_jit = jax.jit(rel_err)

    def loop() -> jax.Array:
        results = []
        for k in seed_keys:
            k_prog, k_times = jax.random.split(k)
            programmed = inference.program_weights(state, k_prog)
            row = []
            for i, t in enumerate(TIMES):
                k_drift, k_fwd = jax.random.split(jax.random.fold_in(k_times, i))
                drifted = inference.drift_weights(programmed, t, k_drift)
                row.append(err_jit(inference.forward(drifted, x, k_fwd, is_test=True)))
            results.append(jnp.stack(row))
        return jnp.stack(results)

    (t_vmap, c_vmap) = wall_and_cpu(lambda: vmapped(state, seed_keys), args.repeats)
    (t_chunk, c_chunk) = wall_and_cpu(lambda: chunked(state, seed_keys), args.repeats)
    (t_loop, c_loop) = wall_and_cpu(loop, args.repeats)
    errs_v = vmapped(state, seed_keys)
    errs_c = chunked(state, seed_keys)
    errs_l = loop()
    result = {
        "backend": jax.default_backend(),
        "devices": [str(dev) for dev in jax.devices()],
        "machine": machine(),
        "shape": [n, n],
        "seeds": args.seeds,
        "times_s": list(TIMES),
        "batch": args.batch,
        "repeats": args.repeats,
        "chunk": args.chunk,
        "median_s": {"vmapped": t_vmap, "vmapped_chunks": t_chunk, "loop": t_loop},
        "median_cpu_s": {"vmapped": c_vmap, "vmapped_chunks": c_chunk, "loop": c_loop},
        "ratio": {"loop_over_vmapped": t_loop / t_vmap, "loop_over_vmapped_chunks": t_loop / t_chunk},
        "ratio_cpu": {"loop_over_vmapped": c_loop / c_vmap, "loop_over_vmapped_chunks": c_loop / c_chunk},
        "relative_output_error_mean_per_time": [float(v) for v in jnp.mean(errs_v, axis=0)],
        "max_abs_difference_vs_loop": {
            "vmapped": float(jnp.max(jnp.abs(errs_v - errs_l))),
            "vmapped_chunks": float(jnp.max(jnp.abs(errs_c - errs_l))),
        },
    }
    print(f"backend={result['backend']} devices={result['devices']} tile={n}x{n} seeds={args.seeds} times={len(TIMES)}")
    print(f"  (load average {os.getloadavg()[0]:.1f}; wall | process CPU time, median of {args.repeats})")
    for name, t, c in (("vmapped", t_vmap, c_vmap), (f"vmapped, chunks of {args.chunk}", t_chunk, c_chunk), ("Python loop", t_loop, c_loop)):
        print(f"  {name:24s} {t * 1e3:10.1f} ms | {c * 1e3:10.1f} ms   loop/this {t_loop / t:5.2f} x | {c_loop / c:5.2f} x")
    print("  mean relative output error per time:", ", ".join(f"{v:.4f}" for v in result["relative_output_error_mean_per_time"]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
