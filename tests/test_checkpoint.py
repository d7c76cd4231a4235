"""Checkpoints: dump_extra / load_extra, save / load files, and loading aihwkit-named hidden parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rpujax
from rpujax import tile
from rpujax.configs import (
    ConstantStepDevice,
    DriftParameter,
    IOParameters,
    NoiseManagementType,
    SingleRPUConfig,
    SoftBoundsDevice,
    UpdateParameters,
)
from rpujax.tile import checkpoint, lifecycle, parameters
from rpujax.tile.checkpoint import CheckpointError

D, X = 6, 10

TRAIN_CFG = SingleRPUConfig(
    device=SoftBoundsDevice(
        dw_min=0.01,
        write_noise_std=0.5,
        lifetime=50.0,
        diffusion=0.002,
        drift=DriftParameter(nu=0.05, nu_std=0.1),
    ),
    forward=IOParameters(noise_management=NoiseManagementType.AVERAGE_ABS_MAX, out_noise_std=0.1, v_offset_std=0.01),
    update=UpdateParameters(backend="jax"),
)


def fresh(cfg=TRAIN_CFG, seed: int = 0, d: int = D, x: int = X):
    return tile.init(jax.random.key(seed), d, x, cfg)


@jax.jit
def train_step(state, key):
    """A training step that touches every kind of state: NM value, weights, drift clock, write noise."""
    k_x, k_f, k_u, k_p, k_d = jax.random.split(key, 5)
    x = jax.random.uniform(k_x, (4, state.in_size), jnp.float32, -1.0, 1.0)
    y, state = tile.forward_with_state(state, x, k_f)
    state = tile.update(state, x, 0.1 * y, 0.05, k_u)
    state = lifecycle.post_update_step(state, k_p)
    return lifecycle.drift_weights(state, 1.0, k_d)


def run(state, keys):
    for k in keys:
        state = train_step(state, k)
    return state


def assert_states_identical(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    assert a.rpu_config == b.rpu_config and a.bias == b.bias
    for u, v in zip(la, lb):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.fixture(scope="module")
def mid_training():
    keys = jax.random.split(jax.random.key(42), 8)
    state = run(fresh(), keys[:4])
    return state, keys[4:]


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------


def test_round_trip_mid_training_continues_bit_identically(tmp_path: Path, mid_training) -> None:
    state, later = mid_training
    assert float(state.nm_value) > 0 and bool(state.drift["initialized"])
    expected = run(state, later)
    path = tmp_path / "tile.ckpt"
    rpujax_save = getattr(rpujax, "save", checkpoint.save)
    rpujax_load = getattr(rpujax, "load", checkpoint.load)
    rpujax_save(path, state)
    for reloaded in (rpujax_load(path), rpujax_load(path, like=fresh(seed=5))):
        assert_states_identical(reloaded, state)
        assert_states_identical(run(reloaded, later), expected)


def test_dump_extra_is_json_and_round_trips(mid_training) -> None:
    state, later = mid_training
    text = json.dumps(checkpoint.dump_extra(state), allow_nan=False)  # strict JSON
    other = fresh(seed=9)
    loaded = checkpoint.load_extra(other, json.loads(text), strict=True)
    loaded = loaded.replace(weights=state.weights)  # the weights are not part of the extra state
    assert_states_identical(loaded, state)
    assert_states_identical(run(loaded, later), run(state, later))


def test_delta_mode_and_batched_states_round_trip(tmp_path: Path) -> None:
    states = jax.jit(jax.vmap(lambda k: parameters.set_delta_weights(tile.init(k, D, X, TRAIN_CFG))))(
        jax.random.split(jax.random.key(1), 3)
    )
    checkpoint.save(tmp_path / "b.ckpt", states)
    assert_states_identical(checkpoint.load(tmp_path / "b.ckpt"), states)


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "t.ckpt"
    a, b = fresh(seed=1), fresh(seed=2)
    checkpoint.save(path, a)
    checkpoint.save(path, b)
    assert_states_identical(checkpoint.load(path), b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.ckpt"]  # no temporary files left


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_corrupted_files(tmp_path: Path) -> None:
    path = tmp_path / "t.ckpt"
    checkpoint.save(path, fresh())
    blob = path.read_bytes()
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    cases = {
        "flipped": bytes(flipped),
        "truncated": blob[: len(blob) // 2],
        "garbage": os.urandom(256),
        "empty": b"",
    }
    for name, data in cases.items():
        bad = tmp_path / f"{name}.ckpt"
        bad.write_bytes(data)
        with pytest.raises(CheckpointError, match=name + "|corrupted|not an rpujax|not a readable"):
            checkpoint.load(bad)


def test_wrong_shape_names_both(tmp_path: Path) -> None:
    path = tmp_path / "t.ckpt"
    checkpoint.save(path, fresh())
    with pytest.raises(CheckpointError, match=r"\[6, 10\].*\[7, 10\]"):
        checkpoint.load(path, like=fresh(d=7))


def test_wrong_config_names_both(tmp_path: Path) -> None:
    path = tmp_path / "t.ckpt"
    checkpoint.save(path, fresh())
    other_cfg = SingleRPUConfig(device=ConstantStepDevice(dw_min=0.002))
    with pytest.raises(CheckpointError, match=r"SoftBoundsDevice.*ConstantStepDevice\(.*dw_min=0.002"):
        checkpoint.load(path, like=fresh(cfg=other_cfg))
    extra = checkpoint.dump_extra(fresh())
    with pytest.raises(CheckpointError, match=r"SoftBoundsDevice.*ConstantStepDevice"):
        checkpoint.load_extra(fresh(cfg=other_cfg), extra, strict=True)


def test_non_strict_config_mismatch_loads_what_fits() -> None:
    source = fresh(cfg=SingleRPUConfig(device=ConstantStepDevice(lifetime=5.0)), seed=3)
    target = fresh(cfg=SingleRPUConfig(device=ConstantStepDevice(lifetime=7.0)), seed=4)
    with pytest.warns(UserWarning, match="rpu config mismatch"):
        loaded = checkpoint.load_extra(target, checkpoint.dump_extra(source), strict=False)
    # Same names and shapes: the device arrays of the source are taken over.
    np.testing.assert_array_equal(np.asarray(loaded.device["decay_scales"]), np.asarray(source.device["decay_scales"]))
    assert loaded.rpu_config == target.rpu_config


def test_strict_missing_and_unexpected_keys() -> None:
    state = fresh()
    extra = checkpoint.dump_extra(state)
    missing = json.loads(json.dumps(extra))
    del missing["device"]["max_bound"]
    with pytest.raises(CheckpointError, match=r"missing key device\.max_bound"):
        checkpoint.load_extra(state, missing, strict=True)
    with pytest.warns(UserWarning, match=r"missing key device\.max_bound"):
        kept = checkpoint.load_extra(state, missing, strict=False)
    np.testing.assert_array_equal(np.asarray(kept.device["max_bound"]), np.asarray(state.device["max_bound"]))

    unexpected = json.loads(json.dumps(extra))
    unexpected["device"]["hs_scale_up"] = unexpected["device"]["max_bound"]
    unexpected["something"] = 1
    with pytest.raises(CheckpointError, match=r"unexpected key device\.hs_scale_up"):
        checkpoint.load_extra(state, unexpected, strict=True)
    with pytest.warns(UserWarning, match=r"unexpected key device\.hs_scale_up.*unexpected key 'something'"):
        checkpoint.load_extra(state, unexpected, strict=False)

    reshaped = json.loads(json.dumps(checkpoint.dump_extra(fresh(d=7))))
    with pytest.raises(CheckpointError, match=r"\[7, 10\].*\[6, 10\]"):
        checkpoint.load_extra(state, reshaped, strict=True)
    one_entry = json.loads(json.dumps(extra))
    one_entry["fwd"]["v_offset"] = json.loads(json.dumps(checkpoint.dump_extra(fresh(d=7))))["fwd"]["v_offset"]
    with pytest.raises(CheckpointError, match=r"fwd\.v_offset: stored array has shape \(7,\).*shape \(6,\)"):
        checkpoint.load_extra(state, one_entry, strict=True)
    with pytest.warns(UserWarning, match=r"fwd\.v_offset"):
        kept = checkpoint.load_extra(state, one_entry, strict=False)
    np.testing.assert_array_equal(np.asarray(kept.fwd["v_offset"]), np.asarray(state.fwd["v_offset"]))
    with pytest.raises(CheckpointError, match="format"):
        checkpoint.load_extra(state, {"nm_value": 1.0})


def test_interrupted_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "t.ckpt"
    old = fresh(seed=1)
    checkpoint.save(path, old)

    real_fdopen = os.fdopen

    class Crashing:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()
            return False

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError("disk full (simulated)")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: Crashing(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(path, fresh(seed=2))
    monkeypatch.undo()
    assert_states_identical(checkpoint.load(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.ckpt"]


def test_killed_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    """A process killed (SIGKILL) in the middle of ``save`` leaves the old checkpoint readable."""
    path = tmp_path / "t.ckpt"
    old = fresh(seed=1)
    checkpoint.save(path, old)
    flag = tmp_path / "written"
    child = textwrap.dedent(
        f"""
        import os, time, pathlib, jax
        from rpujax import tile
        from rpujax.tile import checkpoint
        from rpujax.configs import SingleRPUConfig
        state = tile.init(jax.random.key(7), 64, 64, SingleRPUConfig())
        def stalled_replace(src, dst):
            pathlib.Path({str(flag)!r}).write_text(src)  # the new file is written and synced
            time.sleep(60)                                 # killed here, before the rename
        checkpoint.os.replace = stalled_replace
        checkpoint.save({str(path)!r}, state)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(rpujax.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "child exited before reaching the rename"
            assert time.monotonic() < deadline, "child did not reach the rename"
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    assert_states_identical(checkpoint.load(path), old)
    # The orphaned temporary file is a complete, valid checkpoint of the new state, never the target.
    orphan = Path(flag.read_text())
    assert orphan.parent == tmp_path and orphan.name.startswith(".rpujax-")
    assert checkpoint.load(orphan).weights.shape == (64, 64)


# ---------------------------------------------------------------------------------------------
# aihwkit-named hidden parameters drive the pulse response
# ---------------------------------------------------------------------------------------------


def _probability_one_update(bl: int) -> UpdateParameters:
    """With x = d = ±1 and lr = dw_min·BL, A = B = sqrt(lr/(dw_min·BL)) = 1: all BL pulses fire."""
    return UpdateParameters(desired_bl=bl, update_bl_management=False, update_management=False, backend="jax")


def test_loaded_hidden_parameters_constant_step_response() -> None:
    dw_min, bl = 0.01, 7
    cfg = SingleRPUConfig(device=ConstantStepDevice(dw_min=dw_min, dw_min_std=0.0), update=_probability_one_update(bl))
    state = tile.init(jax.random.key(0), D, X, cfg)
    rng = np.random.default_rng(0)
    # What an aihwkit dump looks like: every name, (D, X) float arrays, in aihwkit's order.
    hidden = {name: np.asarray(v) for name, v in parameters.get_hidden_parameters(state).items()}
    assert list(hidden) == ["max_bound", "min_bound", "dwmin_up", "dwmin_down", "decay_scales",
                            "diffusion_rates", "reset_bias", "drift_nu"]
    hidden["max_bound"] = rng.uniform(0.3, 0.5, (D, X)).astype(np.float32)
    hidden["min_bound"] = -rng.uniform(0.3, 0.5, (D, X)).astype(np.float32)
    hidden["dwmin_up"] = rng.uniform(0.5, 1.5, (D, X)).astype(np.float32) * dw_min
    hidden["dwmin_down"] = rng.uniform(0.5, 1.5, (D, X)).astype(np.float32) * dw_min
    state = parameters.set_hidden_parameters(state, hidden)
    state = tile.set_weights(state, jnp.zeros((D, X)))
    ones_x, ones_d = jnp.ones((1, X)), jnp.ones((1, D))
    up = tile.update(state, -ones_x, ones_d, dw_min * bl, jax.random.key(1))  # x·d < 0: up pulses
    down = tile.update(state, ones_x, ones_d, dw_min * bl, jax.random.key(2))
    np.testing.assert_allclose(np.asarray(up.weights), bl * hidden["dwmin_up"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(down.weights), -bl * hidden["dwmin_down"], rtol=1e-5)
    # Many pulses: each device stops at its own loaded bound.
    n_samples = 20  # 140 pulses: more than the widest range over the smallest step
    sat = tile.update(state, -jnp.ones((n_samples, X)), jnp.ones((n_samples, D)), dw_min * bl, jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(sat.weights), hidden["max_bound"])


def test_loaded_hidden_parameters_soft_bounds_response() -> None:
    dw_min, bl = 0.01, 5
    cfg = SingleRPUConfig(device=SoftBoundsDevice(dw_min=dw_min, dw_min_std=0.0), update=_probability_one_update(bl))
    state = tile.init(jax.random.key(0), D, X, cfg)
    names = list(parameters.get_hidden_parameters(state))
    assert names[-2:] == ["slope_up", "slope_down"]
    rng = np.random.default_rng(1)
    b_max = rng.uniform(0.4, 0.8, (D, X)).astype(np.float32)
    b_min = -rng.uniform(0.4, 0.8, (D, X)).astype(np.float32)
    s_up = (rng.uniform(0.7, 1.3, (D, X)) * dw_min).astype(np.float32)
    s_down = (rng.uniform(0.7, 1.3, (D, X)) * dw_min).astype(np.float32)
    hidden = {k: np.asarray(v) for k, v in parameters.get_hidden_parameters(state).items()}
    hidden.update(max_bound=b_max, min_bound=b_min, dwmin_up=s_up, dwmin_down=s_down,
                  slope_up=-s_up / b_max, slope_down=-s_down / b_min)
    state = parameters.set_hidden_parameters(state, hidden)
    w0 = np.float32(0.1)
    state = tile.set_weights(state, jnp.full((D, X), w0))
    out = tile.update(state, -jnp.ones((1, X)), jnp.ones((1, D)), dw_min * bl, jax.random.key(3))
    # n up pulses of w += s_up·(1 − w/b_max): w_n = b_max − (b_max − w0)·(1 − s_up/b_max)^n.
    expected = b_max - (b_max - w0) * (1.0 - s_up / b_max) ** bl
    np.testing.assert_allclose(np.asarray(out.weights), expected, rtol=1e-5)
    out = tile.update(state, jnp.ones((1, X)), jnp.ones((1, D)), dw_min * bl, jax.random.key(4))
    expected = b_min - (b_min - w0) * (1.0 - s_down / np.abs(b_min)) ** bl
    np.testing.assert_allclose(np.asarray(out.weights), expected, rtol=1e-5)
