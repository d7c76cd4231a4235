"""Time the pulsed update: FFI kernel vs pure JAX vs the dense floor ``W - lr * d^T x``.

Cases (aihwkit defaults: update-BL and update management, desired_bl 31, dw_min 0.001; x and d
uniform in [-1, 1]): ConstantStep and SoftBounds on a 512x512 tile with a batch of 64 at lr 0.1
and 0.01, and on a 1024x1024 tile with a batch of 32 at lr 0.1; plus ConstantStep 512x512 lr 0.1
with the weights spread over the whole range between the bounds ("near bounds"), where the
summed form's guard sends more elements to the per-pulse path. Each update call is the full
``rpujax.pulsed.pulsed_update`` (pulse probabilities + kernel), jitted, with the weights
donated, timed after a warm-up; the minimum over repeats is reported. Both the wall time and the
process CPU time are recorded: on a shared machine the wall time of a one-thread run is inflated
by other processes, its CPU time much less (the load average is recorded with the results).

Threads: every configuration runs in a subprocess whose CPU affinity is set before JAX starts;
XLA sizes its intra-op thread pool (which the FFI kernel uses, ``ffi::ThreadPool``) from the
affinity, so ``--threads 1 2`` compares one and two threads (XLA's own ops follow the same pool).

Reference point (ffi task brief; shared notes cpu-pulsed-update-floor.md): aihwkit 1.2.0 on CPU
takes 1900-2200 ms (113-131 ns per element-sample) for ConstantStep 512x512, batch 64, lr 0.1,
one thread; the goal is >= 50x faster (<= ~2.5 ns per element-sample).

    python benchmarks/update.py [--out benchmarks/results/update.json] [--threads 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from _timing import machine

AIHWKIT_MS = (1900.0, 2200.0)  # ConstantStep 512x512 B64 lr 0.1, one thread
AIHWKIT_CASE = "constant_step-512-b64-lr0.1"

# name, device, size, batch, lr, weights ("fresh": U(-0.1, 0.1) like a new tile; "spread": uniform
# between each element's bounds)
CASES = [
    ("constant_step-512-b64-lr0.1", "ConstantStep", 512, 64, 0.1, "fresh"),
    ("constant_step-512-b64-lr0.01", "ConstantStep", 512, 64, 0.01, "fresh"),
    ("constant_step-512-b64-lr0.1-near-bounds", "ConstantStep", 512, 64, 0.1, "spread"),
    ("soft_bounds-512-b64-lr0.1", "SoftBounds", 512, 64, 0.1, "fresh"),
    ("soft_bounds-512-b64-lr0.01", "SoftBounds", 512, 64, 0.01, "fresh"),
    ("constant_step-1024-b32-lr0.1", "ConstantStep", 1024, 32, 0.1, "fresh"),
    ("soft_bounds-1024-b32-lr0.1", "SoftBounds", 1024, 32, 0.1, "fresh"),
]


def _timed(fn, make_args, min_repeats: int, min_seconds: float) -> tuple[float, float]:
    """(wall, cpu) seconds of one call fn(*make_args()): the minimum over >= min_repeats calls and
    >= min_seconds in total. cpu is the process CPU time (all threads), which a busy machine
    inflates less than the wall time."""
    import jax

    jax.block_until_ready(fn(*make_args()))  # compile + warm up
    walls: list[float] = []
    cpus: list[float] = []
    t_start = time.perf_counter()
    while len(walls) < min_repeats or time.perf_counter() - t_start < min_seconds:
        args = make_args()
        jax.block_until_ready(args)
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if len(walls) >= 50:
            break
    return min(walls), min(cpus)


def worker(cases: list[tuple], min_repeats: int, jax_max_elems: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rpujax import configs as C
    from rpujax import devices
    from rpujax.pulsed import pulsed_update, probabilities

    update_cfg = C.UpdateParameters()
    out = []
    for name, dev_name, n, batch, lr, wstate in cases:
        device = getattr(C, f"{dev_name}Device")()
        params = devices.sample_device_parameters(device, jax.random.key(0), n, n)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.uniform(-1, 1, (batch, n)), jnp.float32)
        d = jnp.asarray(rng.uniform(-1, 1, (batch, n)), jnp.float32)
        if wstate == "fresh":
            w0 = rng.uniform(-0.1, 0.1, (n, n))
        else:
            lo, hi = np.asarray(params["min_bound"]), np.asarray(params["max_bound"])
            w0 = lo + rng.uniform(0, 1, (n, n)) * (hi - lo)
        w0 = np.asarray(w0, np.float32)
        key = jax.random.key(1)
        g = devices.weight_granularity(device)
        bl, px, pd = probabilities.pulse_inputs(update_cfg, x, d, lr, jax.random.key_data(key), g)
        a_x = np.minimum(np.abs(np.asarray(px)), 1.0)
        a_d = np.minimum(np.abs(np.asarray(pd)), 1.0)
        mean_n = float(np.sum(np.asarray(bl) * a_x.sum(1) * a_d.sum(1)) / (batch * n * n))
        el_samples = batch * n * n
        rec_base = dict(case=name, device=dev_name, size=n, batch=batch, lr=lr, weights=wstate,
                        mean_pulses_per_element_sample=mean_n, threads=len(os.sched_getaffinity(0)))

        def make_args():
            return (jnp.asarray(w0), x, d, key)

        for backend in ("ffi", "jax"):
            if backend == "jax" and el_samples > jax_max_elems:
                continue

            def upd(w, x, d, key, backend=backend):
                return pulsed_update(w, None, params, device, update_cfg, x, d, lr, key, backend=backend)[0]

            fn = jax.jit(upd, donate_argnums=0)
            slow = backend == "jax" and dev_name != "ConstantStep"
            wall, cpu = _timed(fn, make_args, 1 if slow else min_repeats, 0.5 if slow else 2.0)
            out.append(dict(rec_base, backend=backend, ms=wall * 1e3, cpu_ms=cpu * 1e3,
                            ns_per_element_sample=wall / el_samples * 1e9,
                            cpu_ns_per_element_sample=cpu / el_samples * 1e9))

        dense = jax.jit(lambda w, x, d, key: w - lr * d.T @ x, donate_argnums=0)
        wall, cpu = _timed(dense, make_args, min_repeats, 1.0)
        out.append(dict(rec_base, backend="dense", ms=wall * 1e3, cpu_ms=cpu * 1e3,
                        ns_per_element_sample=wall / el_samples * 1e9,
                        cpu_ns_per_element_sample=cpu / el_samples * 1e9))
        print(f"  [{len(os.sched_getaffinity(0))}T] {name} done", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/update.json")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="only the aihwkit reference case")
    parser.add_argument("--jax-max-elements", type=int, default=64 * 1024 * 1024,
                        help="skip the pure-JAX backend above this many element-samples")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:  # subprocess: CPU affinity first, then JAX
        spec = json.loads(args.worker)
        os.sched_setaffinity(0, spec["cpus"])
        cases = [c for c in CASES if c[0] in spec["cases"]]
        print(json.dumps(worker(cases, spec["repeats"], spec["jax_max"])))
        return

    cases = [c for c in CASES if not args.quick or c[0] == AIHWKIT_CASE]
    cpus = sorted(os.sched_getaffinity(0))
    machine_info = machine()
    results: list[dict[str, Any]] = []
    for nt in args.threads:
        if nt > len(cpus):
            print(f"skipping {nt} threads: only {len(cpus)} CPUs available", file=sys.stderr)
            continue
        spec = dict(cpus=cpus[:nt], cases=[c[0] for c in cases], repeats=args.repeats, jax_max=args.jax_max_elements)
        res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                             check=False)
        sys.stderr.write(res.stderr[-4000:] if res.returncode else "")
        if res.returncode != 0:
            raise SystemExit(f"worker with {nt} thread(s) failed (exit {res.returncode})")
        results.extend(json.loads(res.stdout.strip().splitlines()[-1]))

    try:
        from rpujax import _ffi_cpu

        machine_info["ffi_build"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in _ffi_cpu.build_info().items()}
    except Exception as err:  # noqa: BLE001 - informational only
        machine_info["ffi_build"] = f"unavailable: {err}"
    try:
        machine_info["load_average_at_end"] = os.getloadavg()
    except OSError:
        pass

    # ratios per case and thread count
    ratios = []
    by_key = {(r["case"], r["threads"], r["backend"]): r for r in results}
    for name, *_ in cases:
        for nt in args.threads:
            ffi = by_key.get((name, nt, "ffi"))
            if ffi is None:
                continue
            entry = dict(case=name, threads=nt, ffi_ns_per_element_sample=ffi["ns_per_element_sample"],
                         ffi_cpu_ns_per_element_sample=ffi["cpu_ns_per_element_sample"])
            jx = by_key.get((name, nt, "jax"))
            dense = by_key.get((name, nt, "dense"))
            if jx:
                entry["jax_over_ffi"] = jx["ms"] / ffi["ms"]
            if dense:
                entry["ffi_over_dense"] = ffi["ms"] / dense["ms"]
            if name == AIHWKIT_CASE:
                entry["aihwkit_1T_over_ffi"] = [a / ffi["ms"] for a in AIHWKIT_MS]
                # one thread: the process CPU time is the wall time of an otherwise idle machine
                if nt == 1:
                    entry["aihwkit_1T_over_ffi_cpu_time"] = [a / ffi["cpu_ms"] for a in AIHWKIT_MS]
            ratios.append(entry)

    report = dict(
        machine=machine_info,
        reference=dict(case=AIHWKIT_CASE, aihwkit_1_2_0_cpu_one_thread_ms=list(AIHWKIT_MS),
                       aihwkit_ns_per_element_sample=[a * 1e-3 / (64 * 512 * 512) * 1e9 for a in AIHWKIT_MS]),
        results=results,
        ratios=ratios,
    )
    print(f"{'case':42s} {'thr':>3s} {'backend':>7s} {'ms':>10s} {'cpu ms':>10s} {'ns/el-sample':>13s} {'cpu ns':>8s}")
    for r in results:
        print(f"{r['case']:42s} {r['threads']:3d} {r['backend']:>7s} {r['ms']:10.2f} {r['cpu_ms']:10.2f} "
              f"{r['ns_per_element_sample']:13.3f} {r['cpu_ns_per_element_sample']:8.3f}")
    for e in ratios:
        extra = ""
        if "aihwkit_1T_over_ffi" in e:
            lo, hi = e["aihwkit_1T_over_ffi"]
            extra = f"  aihwkit(1T)/ffi = {lo:.0f}-{hi:.0f}x"
        if "aihwkit_1T_over_ffi_cpu_time" in e:
            lo, hi = e["aihwkit_1T_over_ffi_cpu_time"]
            extra += f" (by CPU time {lo:.0f}-{hi:.0f}x)"
        jx = f"jax/ffi = {e['jax_over_ffi']:.1f}x" if "jax_over_ffi" in e else "jax/ffi = n/a"
        print(f"{e['case']:42s} {e['threads']:3d}T  {jx}  ffi/dense = {e.get('ffi_over_dense', float('nan')):.1f}x{extra}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
