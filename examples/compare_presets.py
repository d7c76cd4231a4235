"""Train the demo's digits MLP with several aihwkit presets and compare test accuracy and speed.

Each preset is used exactly as aihwkit defines it (device, IO, update and compound settings;
``rpujax.presets``), for every tile of the 64-32-10 MLP, with analog SGD at one learning rate.
Presets of one family share the algorithm; what differs is the device physics, so this is a quick
way to see which devices a network of this size can be trained on.

    python examples/compare_presets.py [--epochs 10] [--lr 0.1] [--presets IdealizedPreset ...]

The first epoch of every preset includes compilation (reported separately).
"""

from __future__ import annotations

import argparse

from rpujax import presets
from rpujax.demo import load_data, train

DEFAULT = (
    "IdealizedPreset",
    "EcRamPreset",
    "ReRamSBPreset",
    "ReRamSB2Preset",
    "TikiTakaEcRamPreset",
    "TTv2EcRamPreset",
    "ChoppedTTv2EcRamPreset",
    "AGADEcRamPreset",
    "MixedPrecisionEcRamPreset",
    "PCMPreset",
    "StandardHWATrainingPreset",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT), metavar="NAME",
                        help="rpu-config preset class names from rpujax.presets")
    args = parser.parse_args()
    unknown = [p for p in args.presets if not hasattr(presets, p)]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; see rpujax.presets.__all__")

    data = load_data()
    print(f"digits MLP 64-32-10, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, seed {args.seed}")
    print(f"{'preset':30s} {'test acc %':>10s} {'final loss':>10s} {'s/epoch':>8s} {'compile s':>9s}")
    for name in args.presets:
        result = train(getattr(presets, name)(), data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, progress=False)
        print(f"{name:30s} {100 * result.test_accuracy[-1]:10.2f} {result.losses[-1]:10.4f} "
              f"{result.seconds_per_epoch:8.3f} {result.compile_seconds:9.1f}", flush=True)


if __name__ == "__main__":
    main()
