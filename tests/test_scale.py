"""Scaling out (DESIGN §7, :mod:`rpujax.parallel`): sharded runs reproduce unsharded ones.

pytest runs every test in one process where JAX is already initialised with one CPU device, so
the checks run in a child interpreter started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (this file with ``--child``); it prints one
JSON line of measured differences, which the tests below assert on. One child runs all cases, so
JAX starts and compiles once.

What is compared (pure-JAX backend unless stated):

- update of one tile, whole vs rows split over 4 devices: bit-identical (ConstantStep with
  cycle-to-cycle noise: summed form; ConstantStep near its bounds: per-pulse fallback in
  compacted buffers sized per shard; SoftBounds with write noise: persistent weights; ExpStep) —
  every draw is indexed by global row and column;
- a batch of 8 seeds (init, update, forward), vmap on 1 device vs ``map_tiles`` over 4:
  bit-identical;
- forward of a row-sharded tile: bit-identical (no reduction crosses devices); backward: to
  rounding (the sum over rows becomes a cross-device sum), bound 1e-5 relative to max |dx|;
- data-parallel training of the demo MLP for 20 steps on 1, 2, 4 devices: pulsed weights
  bit-identical (the digital loss differs to rounding, the tiles' x and d do not);
- with the FFI kernel (where it is built): a batch of 8 seeds through ``map_tiles`` over 4
  devices is one kernel call per shard and bit-identical to the unsharded vmap; the row-sharded
  update with the kernel (its ``row_offset`` operand) is bit-identical to the kernel's update of
  the whole tile, for the same four devices as above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
TIMEOUT_S = 300


def _child() -> dict:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    import rpujax.configs as C  # noqa: PLC0415
    from rpujax import nn as rnn  # noqa: PLC0415
    from rpujax import optim, parallel, tile  # noqa: PLC0415
    from rpujax.demo import MLP, cross_entropy, load_data  # noqa: PLC0415

    assert len(jax.devices()) == 4, jax.devices()
    res: dict = {}

    def same(a, b) -> bool:
        return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(np.array_equal(np.asarray(u), np.asarray(v))), a, b)))

    kx, kd, kw = jax.random.split(jax.random.key(1), 3)
    x = jax.random.uniform(kx, (8, 24), minval=-1, maxval=1)
    d = jax.random.uniform(kd, (8, 32), minval=-1, maxval=1) * jnp.linspace(0.1, 1.0, 32)
    mesh4 = parallel.make_mesh(4, "rows")

    # 1. update of one tile: whole vs rows over 4 devices
    devices = {
        "constant_step": C.ConstantStepDevice(dw_min_std=0.3),
        "soft_bounds_write_noise": C.SoftBoundsDevice(write_noise_std=0.5),
        "exp_step": C.ExpStepDevice(),
    }
    for name, dev in devices.items():
        cfg = C.SingleRPUConfig(device=dev, update=C.UpdateParameters(backend="jax"))
        st = tile.init(jax.random.key(0), 32, 24, cfg)
        ref = tile.update(st, x, d, 0.2, kw)
        step = jax.jit(lambda s, x, d, k: parallel.row_sharded_update(s, x, d, 0.2, k, mesh4))
        out = step(parallel.shard_rows(st, mesh4), x, d, kw)
        res[f"rows_update_{name}_identical"] = same(ref, out)
        res[f"rows_update_{name}_changed"] = float(jnp.max(jnp.abs(ref.weights - st.weights)))
        res[f"rows_update_{name}_sharded"] = len(out.weights.sharding.device_set) == 4

    # ConstantStep with the weights spread between the bounds: elements near a bound fail the
    # summed form's guard and take the per-pulse path, gathered into compacted buffers whose size
    # is chosen per shard (64x96 tile: 1536 elements per shard, so the compacted branches exist)
    cfg = C.SingleRPUConfig(device=C.ConstantStepDevice(dw_min_std=0.3), update=C.UpdateParameters(backend="jax"))
    st = tile.init(jax.random.key(4), 64, 96, cfg)
    lo, hi = st.device["min_bound"], st.device["max_bound"]
    st = st.replace(weights=lo + (hi - lo) * jax.random.uniform(jax.random.key(5), (64, 96)))
    xb = jax.random.uniform(kx, (8, 96), minval=-1, maxval=1)
    db = jax.random.uniform(kd, (8, 64), minval=-1, maxval=1)
    ref = tile.update(st, xb, db, 0.2, kw)
    step = jax.jit(lambda s, x, d, k: parallel.row_sharded_update(s, x, d, 0.2, k, mesh4))
    out = step(parallel.shard_rows(st, mesh4), xb, db, kw)
    res["rows_update_near_bounds_identical"] = same(ref, out)
    res["rows_update_near_bounds_changed"] = float(jnp.max(jnp.abs(ref.weights - st.weights)))
    res["rows_update_near_bounds_sharded"] = len(out.weights.sharding.device_set) == 4

    # 2. forward / backward of a row-sharded tile (noisy default IO)
    cfg = C.SingleRPUConfig(device=C.ConstantStepDevice(), update=C.UpdateParameters(backend="jax"))
    st = tile.init(jax.random.key(3), 32, 24, cfg)
    fwd = jax.jit(lambda s, x, k: tile.forward(s, x, k))
    bwd = jax.jit(lambda s, d, k: tile.backward(s, d, k))
    sh = parallel.shard_rows(st, mesh4)
    y1, y4 = fwd(st, x, kw), fwd(sh, x, kw)
    res["rows_forward_identical"] = same(y1, y4)
    dx1, dx4 = bwd(st, d, kw), bwd(sh, d, kw)
    res["rows_backward_identical"] = same(dx1, dx4)
    res["rows_backward_rel_diff"] = float(jnp.max(jnp.abs(dx1 - dx4)) / jnp.max(jnp.abs(dx1)))

    # 3. a batch of 8 seeds: vmap on 1 device vs map_tiles over 4
    mesh_t = parallel.make_mesh(4, "tiles")
    seeds = jax.random.split(jax.random.key(7), 8)
    ukeys = jax.random.split(jax.random.key(8), 8)

    def life(seed, ukey):
        s = tile.init(seed, 32, 24, cfg)
        s = tile.update(s, x, d, 0.2, ukey)
        return s, tile.forward(s, x, ukey)

    s1, y_1 = jax.jit(jax.vmap(life))(seeds, ukeys)
    s4, y_4 = jax.jit(parallel.map_tiles(life, mesh_t))(seeds, ukeys)
    res["seeds_identical"] = same((s1, y_1), (s4, y_4))
    res["seeds_sharded"] = len(s4.weights.sharding.device_set) == 4
    res["seeds_differ"] = not bool(jnp.all(s1.weights[0] == s1.weights[1]))

    # 4. data-parallel training, 20 steps, 1 / 2 / 4 devices
    x_tr, y_tr, _, _ = (jnp.asarray(a) for a in load_data())
    batch = 16
    xs = x_tr[: 20 * batch].reshape(20, batch, -1)
    ys = y_tr[: 20 * batch].reshape(20, batch)
    step_keys = jax.random.split(jax.random.key(11), 20)

    def build(mesh=None, cfg=None):
        model = MLP(cfg or C.SingleRPUConfig(), rngs=nnx.Rngs(jax.random.key(5)))
        return nnx.split((model, optim.AnalogOptimizer(model, optim.analog_sgd(0.1), data_parallel=mesh)))

    def train(n_dev: int, as_option: bool = False, cfg=None):
        mesh = parallel.make_mesh(n_dev, "data") if n_dev > 1 else None
        # as_option: the optimizer's data_parallel= option gathers x and d itself.
        graphdef, state = build(mesh if as_option else None, cfg)

        def step(state, x, y, key):
            model, opt = nnx.merge(graphdef, state)
            loss, grads = optim.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
            if mesh is not None and not as_option:
                grads = parallel.replicate_tile_grads(grads, mesh)
            opt.update(model, grads, key)
            return nnx.state((model, opt)), loss

        step = jax.jit(step)
        if mesh is not None:
            state = parallel.replicate(state, mesh)
        losses = []
        for t in range(20):
            xb, yb = xs[t], ys[t]
            if mesh is not None:
                xb, yb = parallel.shard_batch((xb, yb), mesh)
            state, loss = step(state, xb, yb, step_keys[t])
            losses.append(float(loss))
        model, _ = nnx.merge(graphdef, state)
        weights = {k: np.asarray(v.weights) for k, v in sorted(rnn.get_tiles(model).items())}
        if cfg is not None:
            weights["input_ranges"] = np.stack([np.asarray(model.hidden.input_range[...]),
                                                np.asarray(model.out.input_range[...])])
        return weights, losses

    w1, l1 = train(1)
    for n in (2, 4):
        wn, ln = train(n)
        res[f"dp{n}_identical"] = all(np.array_equal(w1[k], wn[k]) for k in w1)
        res[f"dp{n}_max_weight_diff"] = max(float(np.max(np.abs(w1[k] - wn[k]))) for k in w1)
        res[f"dp{n}_max_loss_diff"] = max(abs(a - b) for a, b in zip(l1, ln))
    w_opt, _ = train(4, as_option=True)
    res["dp4_option_identical"] = all(np.array_equal(w1[k], w_opt[k]) for k in w1)
    res["dp_weights_moved"] = float(l1[0] - l1[-1])

    # 5. the same with a learned input range per tile (data-initialised from the first 10 batches):
    # its std(x) and its gradient are reductions over the sharded batch, so they agree to rounding
    ir_cfg = C.SingleRPUConfig(pre_post=C.PrePostProcessingParameter(
        input_range=C.InputRangeParameter(enable=True, init_from_data=10)))
    w1_ir, l1_ir = train(1, cfg=ir_cfg)
    w4_ir, l4_ir = train(4, as_option=True, cfg=ir_cfg)
    r1, r4 = w1_ir.pop("input_ranges"), w4_ir.pop("input_ranges")
    res["ir_range_rel_diff"] = float(np.max(np.abs(r1 - r4) / np.abs(r1)))
    res["ir_range_moved"] = float(np.max(np.abs(r1 - 3.0)))
    res["ir_max_weight_diff"] = max(float(np.max(np.abs(w1_ir[k] - w4_ir[k]))) for k in w1_ir)
    res["ir_max_loss_diff"] = max(abs(a - b) for a, b in zip(l1_ir, l4_ir))
    res["ir_dw_min"] = C.ConstantStepDevice().dw_min
    return res


def _run_child(mode: str) -> dict:
    """Run this file as ``python test_scale.py <mode>`` with 4 forced host devices; its JSON."""
    import rpujax  # noqa: PLC0415 - the child imports the same rpujax (installed or source tree)

    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(rpujax.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run(
        [sys.executable, str(HERE), mode], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=str(HERE.parent),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    out = json.loads(line)
    print(out)
    return out


@pytest.fixture(scope="module")
def results() -> dict:
    return _run_child("--child")


@pytest.mark.parametrize("name", ["constant_step", "near_bounds", "soft_bounds_write_noise", "exp_step"])
def test_row_sharded_update_is_bit_identical(results, name):
    assert results[f"rows_update_{name}_identical"]
    assert results[f"rows_update_{name}_sharded"]
    assert results[f"rows_update_{name}_changed"] > 0  # the update did something


def test_row_sharded_forward_identical_backward_to_rounding(results):
    assert results["rows_forward_identical"]
    # float32 sum of 32 terms in another order: a few ulp of max |dx| (eps = 1.2e-7)
    assert results["rows_backward_rel_diff"] < 1e-5


def test_batch_of_seeds_sharded_is_bit_identical(results):
    assert results["seeds_identical"]
    assert results["seeds_sharded"]
    assert results["seeds_differ"]


@pytest.mark.parametrize("n", [2, 4])
def test_data_parallel_training_matches_single_device(results, n):
    assert results["dp_weights_moved"] > 0
    assert results[f"dp{n}_identical"], results


def test_data_parallel_option_of_the_optimizer(results):
    """``AnalogOptimizer(..., data_parallel=mesh)`` gives the single-device weights on 4 devices."""
    assert results["dp4_option_identical"], results


def test_data_parallel_with_a_learned_input_range(results):
    """Replicas agree with one device when each tile learns an input range (spec §2.4).

    The data initialisation (``std`` of the global batch) and the range gradient are reductions
    over the sharded batch, so they agree to float rounding, not bit for bit; a rounding change in
    ``r`` can flip a pulse decision, which moves a weight by about one step ``dw_min``. A replica
    using only its own quarter of the batch would give ranges that differ by percents.
    """
    res = results
    assert res["ir_range_moved"] > 0.1, res  # the data init and the gradient moved r
    assert res["ir_range_rel_diff"] < 1e-4, res
    # measured: r to 1e-6, weights 0.9·dw_min (one flipped pulse), losses 4e-4 (pure JAX backend)
    assert res["ir_max_weight_diff"] <= 5 * res["ir_dw_min"], res
    assert res["ir_max_loss_diff"] < 5e-3, res


@pytest.fixture(scope="module")
def ffi_results(ffi) -> dict:
    return _run_child("--child-ffi")


def test_ffi_kernel_inside_shard_map_one_call_per_shard(ffi_results):
    res = ffi_results
    assert res["kernel_calls_in_program"] == 1  # one call in the shard_map body: one per shard
    assert res["ffi_seeds_identical"]
    assert res["ffi_seeds_sharded"]
    assert res["ffi_seeds_differ"]


@pytest.mark.parametrize("name", ["constant_step", "near_bounds", "soft_bounds_write_noise", "exp_step"])
def test_ffi_row_sharded_update_is_bit_identical(ffi_results, name):
    res = ffi_results
    assert res[f"ffi_rows_{name}_identical"], res
    assert res[f"ffi_rows_{name}_sharded"]
    assert res[f"ffi_rows_{name}_kernel_calls"] == 1  # the kernel, once in the shard_map body
    assert res[f"ffi_rows_{name}_changed"] > 0
    if name == "near_bounds":
        # the summed form never reaches a bound: weights clipped there came from per-pulse pulses
        assert res["ffi_rows_near_bounds_at_bounds"] > 0


def _child_ffi() -> dict:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import rpujax.configs as C  # noqa: PLC0415
    from rpujax import _ffi, parallel, tile  # noqa: PLC0415

    assert len(jax.devices()) == 4 and _ffi.available("cpu")
    dev = C.ConstantStepDevice(dw_min_std=0.3)
    cfg = C.SingleRPUConfig(device=dev, update=C.UpdateParameters(backend="ffi"))
    x = jax.random.uniform(jax.random.key(1), (8, 24), minval=-1, maxval=1)
    d = jax.random.uniform(jax.random.key(2), (8, 32), minval=-1, maxval=1)
    seeds = jax.random.split(jax.random.key(7), 8)
    ukeys = jax.random.split(jax.random.key(8), 8)
    states = jax.vmap(lambda k: tile.init(k, 32, 24, cfg))(seeds)
    mesh = parallel.make_mesh(4, "tiles")

    def upd(s, k):
        return tile.update(s, x, d, 0.2, k)

    f1 = jax.jit(jax.vmap(upd))
    f4 = jax.jit(parallel.map_tiles(upd, mesh))
    a = f1(states, ukeys)
    b = f4(parallel.shard_tiles(states, mesh), ukeys)
    res = {
        "kernel_calls_in_program": f4.lower(states, ukeys).as_text().count("rpujax_pulsed_update"),
        "ffi_seeds_identical": bool(np.array_equal(a.weights, b.weights)),
        "ffi_seeds_sharded": len(b.weights.sharding.device_set) == 4,
        "ffi_seeds_differ": not bool(jnp.all(a.weights[0] == a.weights[1])),
    }

    # row-sharded update with the kernel vs the kernel's update of the whole tile
    mesh_r = parallel.make_mesh(4, "rows")
    kw = jax.random.key(9)
    rng = np.random.default_rng(0)
    cases = {}
    for name, dev in (
        ("constant_step", C.ConstantStepDevice(dw_min_std=0.3)),
        ("soft_bounds_write_noise", C.SoftBoundsDevice(write_noise_std=0.5)),
        ("exp_step", C.ExpStepDevice()),
    ):
        cfg = C.SingleRPUConfig(device=dev, update=C.UpdateParameters(backend="ffi"))
        cases[name] = (tile.init(jax.random.key(0), 32, 24, cfg), x, d)
    # ConstantStep with weights spread between the bounds and long pulse trains: many elements
    # fail the summed form's guard and take the kernel's per-pulse path
    cfg = C.SingleRPUConfig(device=C.ConstantStepDevice(dw_min_std=0.3), update=C.UpdateParameters(backend="ffi"))
    st = tile.init(jax.random.key(4), 64, 96, cfg)
    lo, hi = st.device["min_bound"], st.device["max_bound"]
    st = st.replace(weights=lo + (hi - lo) * jnp.asarray(rng.uniform(0, 1, (64, 96)), jnp.float32))
    xb = jnp.asarray(rng.uniform(-1, 1, (8, 96)), jnp.float32)
    db = jnp.asarray(rng.uniform(-1, 1, (8, 64)), jnp.float32)
    cases["near_bounds"] = (st, xb, db)
    for name, (st, xs, ds) in cases.items():
        ref = tile.update(st, xs, ds, 0.2, kw)
        step = jax.jit(lambda s, x, d, k: parallel.row_sharded_update(s, x, d, 0.2, k, mesh_r))
        sh = parallel.shard_rows(st, mesh_r)
        out = step(sh, xs, ds, kw)
        pairs = zip(jax.tree.leaves(ref), jax.tree.leaves(out))
        res[f"ffi_rows_{name}_identical"] = all(bool(np.array_equal(np.asarray(u), np.asarray(v))) for u, v in pairs)
        res[f"ffi_rows_{name}_sharded"] = len(out.weights.sharding.device_set) == 4
        res[f"ffi_rows_{name}_kernel_calls"] = step.lower(sh, xs, ds, kw).as_text().count("@rpujax_pulsed_update")
        res[f"ffi_rows_{name}_changed"] = float(jnp.max(jnp.abs(ref.weights - st.weights)))
        if name == "near_bounds":
            w = np.asarray(out.weights)
            at = (w == np.asarray(st.device["max_bound"])) | (w == np.asarray(st.device["min_bound"]))
            res["ffi_rows_near_bounds_at_bounds"] = int(at.sum())
    return res


if __name__ == "__main__" and "--child" in sys.argv:
    print(json.dumps(_child()))
elif __name__ == "__main__" and "--child-ffi" in sys.argv:
    print(json.dumps(_child_ffi()))
