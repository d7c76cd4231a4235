"""Check the CUDA pulsed-update kernel against the CPU kernel, then time it (needs a CUDA GPU).

Run through ``benchmarks/gpu_check.sh``, which builds both FFI modules from this checkout first.

1. Agreement, for every device kind (with and without write noise where supported) and every
   mode, same inputs and keys on both platforms:
   - coincidence counts identical (a ConstantStep device with unit steps, no noise and far bounds
     turns each sample's signed count into an exact weight change);
   - weights and persistent weights within ``4 ulp(1) (1 + N)`` per element (N: the element's
     pulses in the call). Both kernels run the same rules (ffi/device_rules.h) on the same random
     numbers (ffi/rng.h); they differ only where gcc and nvcc fuse different multiply-adds, about
     an ulp per operation (tests/test_pulsed_backends.py explains the bound). The number of
     bit-identical elements is reported too.
2. Timing of the CUDA kernel (``apply_pulses``, jitted, weights donated) for ConstantStep and
   SoftBounds at 512x512 and 4096x4096 with batches of 64 and 256 (aihwkit's update-management
   defaults, lr 0.1, x and d uniform in [-1, 1]), next to the dense floor ``W - lr d^T x`` on the
   same GPU.

Prints a table and writes JSON (``--out``). Exit status 1 if any agreement check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax import _ffi, devices
from rpujax import configs as C
from rpujax.pulsed import ffi_backend, probabilities

EPS = float(np.finfo(np.float32).eps)

CASES = [
    ("constant_step", C.ConstantStepDevice()),
    ("soft_bounds_wn", C.SoftBoundsDevice(write_noise_std=0.5)),
    ("linear_step_additive", C.LinearStepDevice(gamma_up=0.3, gamma_down=0.2, mult_noise=False)),
    ("exp_step_wn", C.ExpStepDevice(write_noise_std=0.5)),
    ("exp_step_complex", C.ExpStepDevice(dw_min_std_add=0.001, dw_min_std_slope=0.2)),
    ("pow_step", C.PowStepDevice()),
    ("pow_step_wn", C.PowStepDevice(pow_gamma=1.7, write_noise_std=0.4)),
    ("pow_step_reference", C.PowStepReferenceDevice(reference_std=0.05)),
    ("soft_bounds_reference_wn", C.SoftBoundsReferenceDevice(reference_std=0.05, write_noise_std=0.3)),
    ("soft_bounds_reference_mult", C.SoftBoundsReferenceDevice(reference_std=0.05, mult_noise=True)),
    ("piecewise_wn", C.PiecewiseStepDevice(piecewise_up=[1.5, 1.0, 0.5, 0.3], piecewise_down=[0.3, 0.5, 1.0, 1.4],
                                           write_noise_std=0.2)),
]
D, X, B, BL_MAX = 61, 83, 6, 31


def _inputs(mode: int, seed: int):
    rng = np.random.default_rng(seed)
    bl = np.full(B, BL_MAX if mode != 1 else 20, np.int32)
    bl[1] = 0
    bl[2] = 10
    if mode == 0:
        px, pd = rng.uniform(-1.2, 1.2, (B, X)), rng.uniform(-1, 1, (B, D))
    elif mode == 1:
        px, pd = np.rint(rng.uniform(-1, 1, (B, X)) * bl[:, None]), np.rint(rng.uniform(-1, 1, (B, D)) * bl[:, None])
    else:
        px, pd = np.round(rng.uniform(-1, 1, (B, X)) * 16) / 16, np.round(rng.uniform(-1, 1, (B, D)) * 16) / 16
    px[:, ::7] = 0.0
    pd[:, ::5] = 0.0
    return px.astype(np.float32), pd.astype(np.float32), bl


def _run(dev, fn, *arrays):
    """fn(*arrays) with the arrays on `dev` (the computation follows its inputs)."""
    args = [None if a is None else jax.device_put(a, dev) for a in arrays]
    return jax.tree_util.tree_map(np.asarray, fn(*args))


def _unit_step_counts(mode: int):
    """A jitted (w, params, px, pd, bl, key) -> signed counts of the samples with bl > 0."""
    return jax.jit(lambda w, p, x, d, l, k: -ffi_backend.apply_pulses(
        w, None, p, x, d, l, k, kind=0, scalars=(0.0,), mode=mode, bl_max=BL_MAX)[0])


def _counts(dev, fn, px, pd, bl, kd) -> np.ndarray:
    params = np.stack([np.full((D, X), 1e6), np.full((D, X), -1e6), np.ones((D, X)), np.ones((D, X))]).astype(np.float32)
    out = np.zeros((B, D, X), np.int64)
    for b in range(B):
        only_b = np.where(np.arange(B) == b, bl, 0).astype(np.int32)
        out[b] = _run(dev, fn, np.zeros((D, X), np.float32), params, px, pd, only_b, kd).astype(np.int64)
    return out


def check_agreement(cpu, gpu) -> tuple[list[dict[str, Any]], bool]:
    rows, ok_all = [], True
    unit = {mode: _unit_step_counts(mode) for mode in (0, 1, 2)}
    for ci, (name, device) in enumerate(CASES):
        kind, _, scalars = devices.kernel_layout(device)
        params = np.asarray(devices.pack_params(device, devices.sample_device_parameters(device, jax.random.key(ci), D, X)))
        rng = np.random.default_rng(ci)
        w = (params[1] + rng.uniform(0, 1, (D, X)) * (params[0] - params[1])).astype(np.float32)
        pers = (w - 0.01 * np.sign(w)).astype(np.float32) if devices.uses_persistent_weights(device) else None
        for mode in (0, 1, 2):
            px, pd, bl = _inputs(mode, 100 * ci + mode)
            kd = np.asarray(jax.random.key_data(jax.random.key(1000 + ci)))
            c_cpu = _counts(cpu, unit[mode], px, pd, bl, kd)
            c_gpu = _counts(gpu, unit[mode], px, pd, bl, kd)
            counts_equal = bool(np.array_equal(c_cpu, c_gpu))

            f = jax.jit(lambda w, p, prm, x, d, l, k: ffi_backend.apply_pulses(
                w, p, prm, x, d, l, k, kind=kind, scalars=scalars, mode=mode, bl_max=BL_MAX))

            w_c, p_c = _run(cpu, f, w, pers, params, px, pd, bl, kd)
            w_g, p_g = _run(gpu, f, w, pers, params, px, pd, bl, kd)
            tol = 4 * EPS * (1 + np.abs(c_cpu).sum(0))
            err = np.abs(w_c.astype(np.float64) - w_g)
            ok = counts_equal and bool(np.all(err <= tol))
            if pers is not None:
                err_p = np.abs(p_c.astype(np.float64) - p_g)
                ok = ok and bool(np.all(err_p <= tol))
            ok_all &= ok
            rows.append(dict(case=name, kind=kind, mode=mode, counts_equal=counts_equal, max_abs_diff=float(err.max()),
                             identical_fraction=float(np.mean(w_c == w_g)), ok=ok))
            print(f"{name:28s} mode {mode}: counts {'==' if counts_equal else '!='}  max|dw| {err.max():.2e}  "
                  f"identical {np.mean(w_c == w_g):6.1%}  {'ok' if ok else 'FAIL'}", flush=True)
    return rows, ok_all


def _time(fn, make_args, repeats: int) -> float:
    jax.block_until_ready(fn(*make_args()))
    best = float("inf")
    for _ in range(repeats):
        args = make_args()
        jax.block_until_ready(args)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def timings(gpu, repeats: int, sizes: list[int], batches: list[int]) -> list[dict[str, Any]]:
    rows = []
    update = C.UpdateParameters()
    for dev_name in ("ConstantStep", "SoftBounds"):
        device = getattr(C, f"{dev_name}Device")()
        kind, _, scalars = devices.kernel_layout(device)
        for n in sizes:
            with jax.default_device(gpu):
                params = devices.pack_params(device, devices.sample_device_parameters(device, jax.random.key(0), n, n))
            for batch in batches:
                rng = np.random.default_rng(0)
                x = jax.device_put(rng.uniform(-1, 1, (batch, n)).astype(np.float32), gpu)
                d = jax.device_put(rng.uniform(-1, 1, (batch, n)).astype(np.float32), gpu)
                kd = jax.device_put(np.asarray(jax.random.key_data(jax.random.key(1))), gpu)
                bl, px, pd = probabilities.pulse_inputs(update, x, d, 0.1, kd, devices.weight_granularity(device))
                w0 = rng.uniform(-0.1, 0.1, (n, n)).astype(np.float32)

                def make_args():
                    return (jax.device_put(w0, gpu),)

                kern = jax.jit(lambda w: ffi_backend.apply_pulses(w, None, params, px, pd, bl, kd, kind=kind,
                                                                  scalars=scalars, mode=0, bl_max=31)[0],
                               donate_argnums=0)
                dense = jax.jit(lambda w: w - 0.1 * d.T @ x, donate_argnums=0)
                t_k = _time(kern, make_args, repeats)
                t_d = _time(dense, make_args, repeats)
                el = batch * n * n
                rows.append(dict(device=dev_name, size=n, batch=batch, kernel_ms=t_k * 1e3,
                                 ns_per_element_sample=t_k / el * 1e9, dense_ms=t_d * 1e3, kernel_over_dense=t_k / t_d))
                print(f"{dev_name:13s} {n:5d}^2 B{batch:4d}: kernel {t_k * 1e3:9.3f} ms "
                      f"({t_k / el * 1e9:.4f} ns/el-sample)  dense {t_d * 1e3:8.3f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--platform", default="gpu", help="platform checked against the CPU kernel ('cpu': dry run)")
    args = parser.parse_args()

    platform = "cuda" if args.platform == "gpu" else args.platform
    if not _ffi.available(platform):
        raise SystemExit(f"the {platform} FFI kernels are not available: {_ffi.unavailable_reason()}")
    cpu, gpu = jax.devices("cpu")[0], jax.devices(args.platform)[0]
    print(f"device: {gpu.device_kind}   jax {jax.__version__}", flush=True)
    agreement, ok = check_agreement(cpu, gpu)
    timing = [] if args.skip_timing else timings(gpu, args.repeats, args.sizes, args.batches)
    report = dict(gpu=gpu.device_kind, jax=jax.__version__, agreement_ok=ok, agreement=agreement, timing=timing)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")
    print("AGREEMENT OK" if ok else "AGREEMENT FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
