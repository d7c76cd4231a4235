"""rpujax demo: train an analog MLP on the digits dataset, then watch a deployed copy drift.

``python -m rpujax.demo [--device constant-step] [--epochs 10] [--out rpujax_demo.png]``

1. Trains a 64-32-10 ReLU MLP of :class:`rpujax.nn.AnalogLinear` layers on scikit-learn's bundled
   digits dataset (8×8 images, 1797 samples, no download) with the chosen device model: the
   pulsed devices learn through the stochastic pulsed update (``rpujax.optim``), one compiled
   ``lax.scan`` per epoch, with a progress bar showing loss and test accuracy.
2. Deploys the trained weights on PCM-like inference tiles (``InferenceRPUConfig``: programming
   noise, conductance drift, read noise, global drift compensation) and evaluates the test
   accuracy 1 s, 1 h, 1 day and 1 year after programming, over several noise seeds.
3. Writes a PNG (training curves, accuracy vs. time) and prints a summary table.

Inputs are the pixel values scaled to [0, 1]; 80 % of the samples (a fixed shuffle) train, 20 %
test. Accuracy is measured with the analog forward pass in eval mode (IO noise and quantisation
included).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rpujax import optim
from rpujax.configs import (
    ConstantStepDevice,
    ExpStepDevice,
    FloatingPointRPUConfig,
    IdealDevice,
    LinearStepDevice,
    PowStepDevice,
    SingleRPUConfig,
    SoftBoundsDevice,
    TransferCompound,
    UnitCellRPUConfig,
)
from rpujax.nn import AnalogLinear, convert_to_analog

Array = jax.Array

#: Device choices of ``--device``: name -> rpu-config factory. Add an entry to offer another.
DEVICES: dict[str, Callable[[], Any]] = {
    "floating-point": FloatingPointRPUConfig,
    "ideal": lambda: SingleRPUConfig(device=IdealDevice()),
    "constant-step": lambda: SingleRPUConfig(device=ConstantStepDevice()),
    "soft-bounds": lambda: SingleRPUConfig(device=SoftBoundsDevice()),
    "exp-step": lambda: SingleRPUConfig(device=ExpStepDevice()),
    "pow-step": lambda: SingleRPUConfig(device=PowStepDevice()),
    "linear-step": lambda: SingleRPUConfig(device=LinearStepDevice()),
    "tiki-taka": lambda: UnitCellRPUConfig(
        device=TransferCompound(unit_cell_devices=(SoftBoundsDevice(), SoftBoundsDevice()))
    ),
}

#: Inference times of the drift evaluation, in seconds after programming, with their labels.
DRIFT_TIMES: tuple[tuple[str, float], ...] = (("1 s", 1.0), ("1 h", 3600.0), ("1 d", 86400.0), ("1 y", 31536000.0))


# ---------------------------------------------------------------------------------------------
# data and model


def load_data(test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits, pixels scaled to [0, 1], split by a fixed shuffle: ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - optional heavy import

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class MLP(nnx.Module):
    """``in -> hidden (ReLU) -> out`` with analog layers of one rpu config."""

    def __init__(self, rpu_config: Any, *, rngs: nnx.Rngs, sizes: Sequence[int] = (64, 32, 10)):
        self.hidden = AnalogLinear(sizes[0], sizes[1], rpu_config, rngs=rngs)
        self.out = AnalogLinear(sizes[1], sizes[2], rpu_config, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.out(jax.nn.relu(self.hidden(x)))


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy with integer labels.

    Written with ``log_softmax`` and a one-hot mask: XLA:CPU compiles this form to the same
    rounding batched (``vmap`` over seeds) and unbatched, so vmapped runs reproduce single runs
    bit for bit; optax's ``take_along_axis`` form does not always.
    """
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * one_hot, axis=-1))


# ---------------------------------------------------------------------------------------------
# training


def make_epoch_fn(graphdef: Any, batch_size: int) -> Callable[[Any, Array, Array, Array], tuple[Any, Array]]:
    """``epoch(state, x, y, key) -> (state, losses)``: one shuffled epoch as one ``lax.scan``.

    ``state`` is ``nnx.state((model, optimizer))`` of a model/``AnalogOptimizer`` pair with
    ``graphdef``; the last incomplete batch is dropped. The function is pure (jit / vmap it).
    """

    def step(state: Any, batch: tuple[Array, Array, Array]) -> tuple[Any, Array]:
        x, y, key = batch
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = optim.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        optimizer.update(model, grads, key)
        return nnx.state((model, optimizer)), loss

    def epoch(state: Any, x: Array, y: Array, key: Array) -> tuple[Any, Array]:
        n_batches = x.shape[0] // batch_size
        k_perm, k_steps = jax.random.split(key)
        idx = jax.random.permutation(k_perm, x.shape[0])[: n_batches * batch_size].reshape(n_batches, batch_size)
        keys = jax.random.split(k_steps, n_batches)
        return jax.lax.scan(step, state, (x[idx], y[idx], keys))

    return epoch


def make_accuracy_fn(graphdef: Any) -> Callable[[Any, Array, Array, Array], Array]:
    """``accuracy(state, x, y, key)``: eval-mode accuracy of the model in ``state`` (pure)."""

    def accuracy(state: Any, x: Array, y: Array, key: Array) -> Array:
        model = nnx.merge(graphdef, state)
        if isinstance(model, tuple):
            model = model[0]
        model.eval()
        nnx.reseed(model, analog=key)
        return jnp.mean(jnp.argmax(model(x), axis=-1) == y)

    return accuracy


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: MLP
    losses: list[float]
    test_accuracy: list[float]
    compile_seconds: float
    seconds_per_epoch: float


def train(
    rpu_config: Any,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    hidden: int = 32,
    progress: bool = True,
) -> TrainResult:
    """Train the MLP with analog SGD; one compiled scan per epoch, test accuracy after each."""
    from tqdm import tqdm  # noqa: PLC0415

    x_tr, y_tr, x_te, y_te = (jnp.asarray(a) for a in data)
    key = jax.random.key(seed)
    k_model, k_train, k_eval = jax.random.split(key, 3)
    model = MLP(rpu_config, rngs=nnx.Rngs(k_model), sizes=(x_tr.shape[1], hidden, 10))
    optimizer = optim.AnalogOptimizer(model, optim.analog_sgd(lr))
    graphdef, state = nnx.split((model, optimizer))
    epoch_fn = jax.jit(make_epoch_fn(graphdef, batch_size), donate_argnums=0)
    accuracy_fn = jax.jit(make_accuracy_fn(graphdef))

    t0 = time.perf_counter()
    epoch_c = epoch_fn.lower(state, x_tr, y_tr, k_train).compile()
    accuracy_c = accuracy_fn.lower(state, x_te, y_te, k_eval).compile()
    compile_seconds = time.perf_counter() - t0

    losses, accs, times = [], [], []
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress)
    for e in bar:
        t = time.perf_counter()
        state, batch_losses = epoch_c(state, x_tr, y_tr, jax.random.fold_in(k_train, e))
        loss = float(jnp.mean(batch_losses))
        times.append(time.perf_counter() - t)
        acc = float(accuracy_c(state, x_te, y_te, jax.random.fold_in(k_eval, e)))
        losses.append(loss)
        accs.append(acc)
        bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{acc:.3f}")
    bar.close()
    model, optimizer = nnx.merge(graphdef, state)
    per_epoch = float(np.median(times)) if times else math.nan
    return TrainResult(model, losses, accs, compile_seconds, per_epoch)


# ---------------------------------------------------------------------------------------------
# inference with drift


def inference_config() -> Any:
    """The deployment config: aihwkit's ``InferenceRPUConfig()`` defaults (PCM-like noise model,
    global drift compensation), weights scaled to ``max|W| = 1`` per tile."""
    from rpujax.configs import MappingParameter  # noqa: PLC0415
    from rpujax.configs.inference import InferenceRPUConfig  # noqa: PLC0415

    return InferenceRPUConfig(mapping=MappingParameter(weight_scaling_omega=1.0))


def evaluate_drift(
    model: nnx.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    times: Sequence[float],
    n_seeds: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Deploy ``model``'s weights on inference tiles and evaluate accuracy after programming + drift.

    Uses :func:`rpujax.inference.evaluate_over_time`: per seed, every tile is programmed once and
    drifted to each time; the eval-mode forward (drift-compensated) gives the accuracy.

    Returns:
      ``(mean, std)`` accuracy per time (std over seeds).
    """
    from rpujax import inference  # noqa: PLC0415

    deployed = convert_to_analog(model, inference_config(), rngs=nnx.Rngs(seed + 1))
    graphdef, state = nnx.split(deployed)
    accuracy = make_accuracy_fn(graphdef)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def metric(state: Any, key: Array) -> Array:
        return accuracy(state, xj, yj, key)

    mean, std = inference.evaluate_over_time(
        state, metric, t_inference=tuple(times), key=jax.random.key(seed + 2), n_seeds=n_seeds
    )
    return np.asarray(mean), np.asarray(std)


# ---------------------------------------------------------------------------------------------
# report


def plot(result: TrainResult, labels: Sequence[str], times: Sequence[float], mean: np.ndarray,
         std: np.ndarray, device: str, path: Path) -> None:
    """Training loss, test accuracy per epoch, and deployed accuracy vs. time, as one PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = np.arange(1, len(result.losses) + 1)
    axes[0].plot(epochs, result.losses, "o-")
    axes[0].set(xlabel="epoch", ylabel="training loss", title=f"training ({device})")
    axes[1].plot(epochs, 100 * np.asarray(result.test_accuracy), "o-", color="C1")
    axes[1].set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (analog, eval mode)")
    axes[2].errorbar(times, 100 * mean, yerr=100 * std, fmt="o-", color="C2", capsize=4, label="PCM inference tiles")
    if result.test_accuracy:
        axes[2].axhline(100 * result.test_accuracy[-1], color="C1", ls="--", label=f"trained ({device})")
    axes[2].set_xscale("log")
    axes[2].set_xticks(list(times), list(labels))
    axes[2].set(xlabel="time after programming", ylabel="test accuracy (%)", title="accuracy under drift")
    axes[2].legend(loc="lower left", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the demo; returns the numbers it printed (for tests and scripts)."""
    parser = argparse.ArgumentParser(
        prog="python -m rpujax.demo",
        description="Train an analog MLP (64-32-10) on the digits dataset with a chosen device model, then "
        "evaluate a PCM inference copy of it under drift (1 s .. 1 y) and write a PNG.",
    )
    parser.add_argument("--device", choices=sorted(DEVICES), default="constant-step", help="device model of the training tiles (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 10, --quick 3)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="mini-batch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate of analog SGD (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of device draws, initial weights and noise")
    parser.add_argument("--n-seeds", type=int, default=None, help="noise seeds of the drift evaluation (default 10, --quick 2)")
    parser.add_argument("--out", type=Path, default=Path("rpujax_demo.png"), help="PNG path (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="reduced run for CI: 3 epochs, 2 noise seeds, drift "
                        "at 1 s and 1 y only (compilation dominates either way)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 10)
    n_seeds = args.n_seeds if args.n_seeds is not None else (2 if args.quick else 10)
    if epochs < 0 or n_seeds < 1 or args.batch_size < 1 or args.hidden < 1:
        parser.error("--epochs must be >= 0, --n-seeds, --batch-size and --hidden >= 1")
    hidden = args.hidden
    drift = (DRIFT_TIMES[0], DRIFT_TIMES[-1]) if args.quick else DRIFT_TIMES
    data = load_data()
    if len(data[0]) < args.batch_size:
        parser.error(f"--batch-size {args.batch_size} is larger than the training set ({len(data[0])})")

    t_start = time.perf_counter()
    print(f"rpujax demo: digits {len(data[0])} train / {len(data[2])} test, MLP {data[0].shape[1]}-{hidden}-10, "
          f"device {args.device}, {epochs} epochs, batch {args.batch_size}, lr {args.lr}, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    result = train(DEVICES[args.device](), data, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, hidden=hidden, progress=not args.no_progress)

    labels = [label for label, _ in drift]
    times = [t for _, t in drift]
    print(f"drift evaluation on PCM inference tiles ({n_seeds} seeds) ...", flush=True)
    t0 = time.perf_counter()
    mean, std = evaluate_drift(result.model, data[2], data[3], times=times, n_seeds=n_seeds, seed=args.seed)
    drift_seconds = time.perf_counter() - t0
    plot(result, labels, times, mean, std, args.device, args.out)

    final_acc = result.test_accuracy[-1] if result.test_accuracy else math.nan
    final_loss = result.losses[-1] if result.losses else math.nan
    rows = [
        ("device", args.device),
        ("final training loss", f"{final_loss:.4f}"),
        ("test accuracy (trained tiles)", f"{100 * final_acc:.1f} %"),
        ("seconds per epoch (compiled)", f"{result.seconds_per_epoch:.4f}"),
        ("compile time (s)", f"{result.compile_seconds:.1f}"),
    ]
    rows += [(f"PCM accuracy at {label}", f"{100 * m:.1f} ± {100 * s:.1f} %") for label, m, s in zip(labels, mean, std)]
    rows += [("drift evaluation (s)", f"{drift_seconds:.1f}"), ("total (s)", f"{time.perf_counter() - t_start:.1f}"),
             ("plot", str(args.out))]
    width = max(len(k) for k, _ in rows)
    print("\n" + "-" * (width + 24))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 24))
    return {
        "losses": result.losses,
        "test_accuracy": result.test_accuracy,
        "seconds_per_epoch": result.seconds_per_epoch,
        "drift_times": times,
        "drift_mean": mean.tolist(),
        "drift_std": std.tolist(),
        "out": str(args.out),
    }


if __name__ == "__main__":
    main()
