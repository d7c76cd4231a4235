"""Data-parallel pulsed training on several processes (``jax.distributed``), CPU collectives (gloo).

Every process holds a replica of the analog MLP and a slice of each batch. The tiles' layer
inputs ``x`` and update errors ``d`` are gathered across processes
(``rpujax.parallel.replicate_tile_grads``), and every process applies the same pulsed update with
the same key, so the replicas stay identical without exchanging weights. The result is the
single-process run's, bit for bit (``tests/test_scale.py`` checks it).

    # start 2 processes on this machine (one CPU device each) and compare with a 1-process run:
    python examples/multiprocess_train.py --launch 2 --steps 5 --compare

    # or start each process yourself (same command on every host, its own --process-id):
    python examples/multiprocess_train.py --coordinator 10.0.0.1:12345 --num-processes 2 --process-id 0

The training is the demo MLP (64-32-10, aihwkit's default ``SingleRPUConfig``) on the digits data,
batch 16, lr 0.1. ``--out FILE.npz`` (process 0) saves the final tile weights and the losses.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import numpy as np


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global(tree, sharding):
    """Process-local arrays -> global jax.Arrays with ``sharding`` (PRNG key leaves included)."""
    import jax  # noqa: PLC0415

    def one(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(a)
            data = jax.make_array_from_process_local_data(sharding, np.asarray(jax.random.key_data(a)))
            return jax.random.wrap_key_data(data, impl=impl)
        return jax.make_array_from_process_local_data(sharding, np.asarray(a))

    return jax.tree.map(one, tree)


def train(steps: int, batch: int, seed: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """Run ``steps`` data-parallel steps over all devices of all processes; return the tile
    weights (identical on every process) and the losses."""
    import jax  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: PLC0415

    import rpujax  # noqa: PLC0415
    from rpujax import optim, parallel  # noqa: PLC0415
    from rpujax.configs import SingleRPUConfig  # noqa: PLC0415
    from rpujax.demo import MLP, cross_entropy, load_data  # noqa: PLC0415

    mesh = parallel.make_mesh(axis="data")  # all devices of all processes
    n_dev = mesh.size
    if batch % n_dev:
        raise ValueError(f"batch {batch} is not divisible by the {n_dev} devices")
    x_tr, y_tr, _, _ = load_data()
    model = MLP(SingleRPUConfig(), rngs=nnx.Rngs(jax.random.key(seed)))
    graphdef, state = nnx.split((model, optim.AnalogOptimizer(model, optim.analog_sgd(0.1))))
    keys = jax.random.split(jax.random.key(seed + 1), steps)

    def step(state, x, y, key):
        model, opt = nnx.merge(graphdef, state)
        loss, grads = optim.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        grads = parallel.replicate_tile_grads(grads, mesh)
        opt.update(model, grads, key)
        return nnx.state((model, opt)), loss

    replicated = NamedSharding(mesh, P())
    by_batch = NamedSharding(mesh, P("data"))
    step = jax.jit(step, out_shardings=(replicated, replicated))
    state = _global(state, replicated)
    # each process feeds its own contiguous slice of every batch, in process order
    n_proc, pid = jax.process_count(), jax.process_index()
    local = batch // n_proc
    losses = []
    for t in range(steps):
        xb = x_tr[t * batch: (t + 1) * batch][pid * local: (pid + 1) * local]
        yb = y_tr[t * batch: (t + 1) * batch][pid * local: (pid + 1) * local]
        x_g = jax.make_array_from_process_local_data(by_batch, xb)
        y_g = jax.make_array_from_process_local_data(by_batch, yb)
        key_g = _global(keys[t], replicated)
        state, loss = step(state, x_g, y_g, key_g)
        losses.append(float(np.asarray(loss.addressable_data(0))))
    model, _ = nnx.merge(graphdef, state)
    weights = {k: np.asarray(v.weights.addressable_data(0)) for k, v in sorted(rpujax.nn.get_tiles(model).items())}
    return weights, losses


def _worker(args: argparse.Namespace) -> None:
    import jax  # noqa: PLC0415

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
            initialization_timeout=args.timeout,
        )
    t0 = time.perf_counter()
    weights, losses = train(args.steps, args.batch, args.seed)
    if jax.process_index() == 0:
        print(f"{jax.process_count()} process(es), {len(jax.devices())} device(s): {args.steps} steps in "
              f"{time.perf_counter() - t0:.1f} s, losses {[round(v, 4) for v in losses]}", flush=True)
        if args.out:
            np.savez(args.out, losses=np.asarray(losses), **weights)
    if args.num_processes > 1:
        jax.distributed.shutdown()


def launch(n: int, args: argparse.Namespace, out: str | None) -> None:
    """Start ``n`` processes of this script on 127.0.0.1 and wait for them (bounded by
    ``args.timeout``); raises ``RuntimeError`` if one fails."""
    coordinator = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = []
    for pid in range(n):
        cmd = [sys.executable, os.path.abspath(__file__), "--coordinator", coordinator, "--num-processes", str(n),
               "--process-id", str(pid), "--steps", str(args.steps), "--batch", str(args.batch), "--seed",
               str(args.seed), "--timeout", str(args.timeout)]
        if out and pid == 0:
            cmd += ["--out", out]
        procs.append(subprocess.Popen(cmd, env=env))
    deadline = time.monotonic() + args.timeout
    try:
        for p in procs:
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            if rc != 0:
                raise RuntimeError(f"process {procs.index(p)} exited with {rc}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launch", type=int, default=0, help="start this many processes on 127.0.0.1")
    ap.add_argument("--compare", action="store_true", help="with --launch: also run 1 process and compare")
    ap.add_argument("--coordinator", default="127.0.0.1:12345")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=240, help="seconds for start-up and for the whole launch")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not args.launch:
        _worker(args)
        return
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        multi = args.out or os.path.join(tmp, "multi.npz")
        launch(args.launch, args, multi)
        if args.compare:
            single = os.path.join(tmp, "single.npz")
            launch(1, args, single)
            a, b = np.load(multi), np.load(single)
            same = all(np.array_equal(a[k], b[k]) for k in a.files if k != "losses")
            print(f"{args.launch} processes vs 1: tile weights bit-identical: {same}; max |loss diff| "
                  f"{float(np.max(np.abs(a['losses'] - b['losses']))):.3g}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
