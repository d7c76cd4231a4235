"""Seconds per training epoch of the digits MLP (64-32-10, batch 16, lr 0.1), one compiled scan each.

The model and data are the demo's (``rpujax.demo``: 1438 training samples, 89 mini-batches per
epoch, the last incomplete batch dropped); every epoch — shuffling, the analog forward and
backward passes, the pulsed updates, the digital SGD step — is one jitted ``lax.scan``. Each
config is compiled (time reported separately), warmed up for one epoch, then timed for
``--epochs`` epochs; the median is reported with its ratio to aihwkit 1.2.0 on the same machine
type (CPU build, same model, batch and lr: 0.04 s/epoch floating point, 0.07 s/epoch
ConstantStep).

    python benchmarks/train.py [--epochs 10] [--out benchmarks/results/train.json]

``TransferCompound`` (Tiki-Taka) is timed when rpujax has it; otherwise the reason is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from _timing import machine

from rpujax import optim
from rpujax.configs import ConstantStepDevice, FloatingPointRPUConfig, SingleRPUConfig, SoftBoundsDevice
from rpujax.demo import MLP, load_data, make_epoch_fn

#: aihwkit 1.2.0 (CPU), seconds per epoch of this benchmark on the developers' machine type.
AIHWKIT_SECONDS_PER_EPOCH = {"FloatingPoint": 0.04, "ConstantStep": 0.07}


def configs() -> dict[str, Any]:
    """The configs to time: name -> rpu config, or a string saying why it is unavailable."""
    out: dict[str, Any] = {
        "FloatingPoint": FloatingPointRPUConfig(),
        "ConstantStep": SingleRPUConfig(device=ConstantStepDevice()),
        "SoftBounds": SingleRPUConfig(device=SoftBoundsDevice()),
    }
    try:
        from rpujax.configs import TransferCompound, UnitCellRPUConfig  # noqa: PLC0415

        cfg = UnitCellRPUConfig(device=TransferCompound(unit_cell_devices=[SoftBoundsDevice(), SoftBoundsDevice()]))
        MLP(cfg, rngs=nnx.Rngs(0))  # can tiles of it be built?
        out["TransferCompound"] = cfg
    except Exception as err:  # noqa: BLE001 - any failure means "not available yet", recorded
        out["TransferCompound"] = f"unavailable: {type(err).__name__}: {err}"
    return out


def time_config(rpu_config: Any, epochs: int, batch_size: int, lr: float) -> dict[str, float]:
    """Compile time and median seconds per epoch of one config."""
    x, y, _, _ = (jnp.asarray(a) for a in load_data())
    model = MLP(rpu_config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((model, optim.AnalogOptimizer(model, optim.analog_sgd(lr))))
    epoch = jax.jit(make_epoch_fn(graphdef, batch_size), donate_argnums=0)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = epoch.lower(state, x, y, key).compile()
    compile_s = time.perf_counter() - t0
    state, losses = compiled(state, x, y, key)
    jax.block_until_ready(losses)
    times, cpu = [], []
    for e in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        state, losses = compiled(state, x, y, jax.random.fold_in(key, e + 1))
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "seconds_per_epoch": statistics.median(times),
        "min_seconds_per_epoch": min(times),
        # CPU time of the process (all threads): close to the wall time of an idle machine when
        # the epoch runs on one thread; a guide when the machine is shared.
        "cpu_seconds_per_epoch": statistics.median(cpu),
        "compile_seconds": compile_s,
        "final_loss": float(jnp.mean(losses)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per config (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--only", nargs="*", default=None, help="config names to time (default: all)")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args()

    from rpujax.pulsed import resolve_backend  # noqa: PLC0415
    from rpujax.configs import UpdateParameters  # noqa: PLC0415

    backend = resolve_backend(None, UpdateParameters())
    results: dict[str, Any] = {}
    print(f"digits MLP 64-32-10, batch {args.batch_size}, lr {args.lr}; pulsed backend: {backend}; "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    print(f"{'config':<18}{'s/epoch':>10}{'cpu s':>9}{'compile s':>11}{'aihwkit s':>11}{'speed-up':>10}")
    for name, cfg in configs().items():
        if args.only is not None and name not in args.only:
            continue
        if isinstance(cfg, str):
            results[name] = {"skipped": cfg}
            print(f"{name:<18}{cfg}")
            continue
        r = time_config(cfg, args.epochs, args.batch_size, args.lr)
        ref = AIHWKIT_SECONDS_PER_EPOCH.get(name)
        if ref is not None:
            r["aihwkit_seconds_per_epoch"] = ref
            r["speedup_vs_aihwkit"] = ref / r["seconds_per_epoch"]
        results[name] = r
        speed = f"{r['speedup_vs_aihwkit']:.1f}x" if ref is not None else "-"
        print(f"{name:<18}{r['seconds_per_epoch']:>10.4f}{r['cpu_seconds_per_epoch']:>9.4f}{r['compile_seconds']:>11.1f}"
              f"{(f'{ref:.2f}' if ref is not None else '-'):>11}{speed:>10}")

    record = {
        "benchmark": "digits MLP training epoch (one compiled lax.scan)",
        "batch_size": args.batch_size,
        "lr": args.lr,
        "timed_epochs": args.epochs,
        "pulsed_backend": backend,
        "machine": machine(),
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
