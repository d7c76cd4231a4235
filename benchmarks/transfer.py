"""Where the time of a transfer-compound update goes: per-vector scan vs one kernel call.

One jitted ``tile.update`` of ``--batch`` vectors on a ``--rows``×``--cols`` tile (lr 0.1), timed
round-robin (``_timing.interleaved``) so that the ratios come from one run:

- ``single_one_call``: the single device (EcRam preset) updated with the whole batch in one call;
- ``single_scan``: the same, one single-vector call per vector in a ``lax.scan`` (the floor of any
  per-vector schedule);
- ``tiki_taka``: ``TikiTakaEcRamPreset`` (transfers once per batch: two kernel calls per batch);
- ``chopped_no_transfer``: ``ChoppedTTv2EcRamPreset`` with transfers pushed out of the batch and
  the per-vector scan forced (the fast-device updates alone, with its BL 100 and auto-scaled lr);
- ``chopped``: ``ChoppedTTv2EcRamPreset`` as defined (a transfer read and write after every vector).

    python benchmarks/transfer.py [--rows 32] [--cols 64] [--batch 16] [--repeats 50]
        [--out benchmarks/results/transfer.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
from _timing import interleaved, machine, medians, round_ratios

from rpujax import presets, pulsed, tile
from rpujax.cells import transfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/transfer.json")
    args = parser.parse_args()

    x = jax.random.uniform(jax.random.key(1), (args.batch, args.cols), minval=-1, maxval=1)
    d = 0.1 * jax.random.uniform(jax.random.key(2), (args.batch, args.rows), minval=-1, maxval=1)
    key = jax.random.key(3)

    def state(cfg):
        return tile.init(jax.random.key(0), args.rows, args.cols, cfg)

    def one_call(s, k):
        return tile.update(s, x, d, 0.1, k).weights

    def scan(s, k):
        def body(s, inp):
            xv, dv, v = inp
            return tile.update(s, xv[None], dv[None], 0.1, jax.random.fold_in(k, v)), None
        return jax.lax.scan(body, s, (x, d, jnp.arange(args.batch)))[0].weights

    chopped = presets.ChoppedTTv2EcRamPreset()
    no_transfer = dataclasses.replace(chopped, device=dataclasses.replace(chopped.device, transfer_every=1e6))
    fns = {
        "single_one_call": (jax.jit(one_call), (state(presets.EcRamPreset()), key)),
        "single_scan": (jax.jit(scan), (state(presets.EcRamPreset()), key)),
        "tiki_taka": (jax.jit(one_call), (state(presets.TikiTakaEcRamPreset()), key)),
        "chopped": (jax.jit(one_call), (state(chopped), key)),
    }
    # the per-vector scan without transfers: trace with the two-chunk path switched off
    rule = transfer._chunk_rule  # noqa: SLF001 - benchmark of the private schedule on purpose
    transfer._chunk_rule = lambda *a: None  # noqa: SLF001
    try:
        f = jax.jit(one_call)
        f(state(no_transfer), key)  # trace now, while the scan is forced
    finally:
        transfer._chunk_rule = rule  # noqa: SLF001
    fns["chopped_no_transfer"] = (f, (state(no_transfer), key))

    times = interleaved(fns, args.repeats)
    med = medians(times)
    result = {
        "workload": f"tile.update of {args.batch} vectors, {args.rows}x{args.cols} tile, lr 0.1",
        "pulsed_backend": pulsed.resolve_backend(None, presets.EcRamPreset().update),
        "machine": machine(),
        "repeats": args.repeats,
        "median_s": med,
        "median_of_per_round_ratios": {
            "single_scan_over_one_call": round_ratios(times, "single_scan", "single_one_call"),
            "tiki_taka_over_single_one_call": round_ratios(times, "tiki_taka", "single_one_call"),
            "chopped_over_chopped_no_transfer": round_ratios(times, "chopped", "chopped_no_transfer"),
            "chopped_no_transfer_over_single_scan": round_ratios(times, "chopped_no_transfer", "single_scan"),
        },
    }
    print(f"{result['workload']}; pulsed backend {result['pulsed_backend']}")
    for name, t in med.items():
        print(f"  {name:22s} {t * 1e3:8.3f} ms   {t / args.batch * 1e6:8.1f} us per vector")
    for name, r in result["median_of_per_round_ratios"].items():
        print(f"  {name:40s} {r:6.2f}x")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
