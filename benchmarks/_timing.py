"""Timing and machine description shared by the benchmark scripts.

The scripts run as ``python benchmarks/<name>.py``, so this module is imported as ``_timing``
(the script's folder is first on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

Fns = dict[str, tuple[Callable[..., Any], tuple]]


def interleaved(fns: Fns, rounds: int, warmup: int = 5) -> dict[str, list[float]]:
    """Wall seconds of every ``fn(*args)`` once per round, the functions one after the other.

    Timing round-robin makes a load change on a shared machine hit an operation and its floor
    alike, so per-round ratios (:func:`round_ratios`) are robust where absolute times are not.
    Each round starts with an untimed call: the first call of a round otherwise pays for waking
    the thread pool.
    """
    import jax

    for fn, args in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    first_fn, first_args = next(iter(fns.values()))
    for _ in range(rounds):
        jax.block_until_ready(first_fn(*first_args))
        for name, (fn, args) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """Median of each function's samples."""
    return {name: statistics.median(v) for name, v in times.items()}


def round_ratios(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num] / times[den]`` (both from one :func:`interleaved` run)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def wall_and_cpu(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) of ``fn()`` after a warm-up.

    CPU time is reported too because on a shared machine the wall time mostly measures the load.
    """
    import jax

    jax.block_until_ready(fn())  # compile / warm up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: platform, CPU model and count, load, and (when the
    script has imported JAX) the JAX version, backend and devices."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cpus_available"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average"] = os.getloadavg()
    jax = sys.modules.get("jax")
    if jax is not None:
        info["jax"] = jax.__version__
        info["backend"] = jax.default_backend()
        info["devices"] = [str(d) for d in jax.devices()]
    return info
