"""``rpujax.compat.SimulatorTile``: every method of the seed page (aihwkit's
``RPUCudaSimulatorTileWrapper``), called with meaningful arguments, and its effect checked."""

from __future__ import annotations

import inspect
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpujax.compat import CudaError, SimulatorTile
from rpujax.configs import (
    ConstantStepDevice,
    DriftParameter,
    FloatingPointRPUConfig,
    IOParameters,
    MappingParameter,
    SingleRPUConfig,
    SoftBoundsDevice,
    UpdateParameters,
)
from rpujax.tile import lifecycle

Z = 5.0
OUT, IN = 6, 9

# Every method of the seed page (aihwkit 1.2.0 tiles/rpucuda.py, RPUCudaSimulatorTileWrapper) with
# its parameters and defaults (inspect.Parameter.empty = required, "**" = **kwargs).
SEED_METHODS: dict[str, list[tuple[str, object]]] = {
    "cuda": [("device", None)],
    "decay_weights": [("alpha", 1.0)],
    "diffuse_weights": [],
    "drift_weights": [("delta_t", 1.0)],
    "dump_extra": [],
    "ensure_shared_weights": [("shared_weights", None)],
    "get_backward_parameters": [],
    "get_forward_out_bound": [],
    "get_forward_parameters": [],
    "get_hidden_update_index": [],
    "load_extra": [("extra", inspect.Parameter.empty), ("strict", False)],
    "post_update_step": [],
    "reset": [("reset_prob", 1.0)],
    "reset_columns": [("start_column_idx", 0), ("num_columns", 1), ("reset_prob", 1.0)],
    "reset_delta_weights": [],
    "set_backward_parameters": [("dic", None), ("kwargs", "**")],
    "set_delta_weights": [("delta_weights", None)],
    "set_forward_parameters": [("dic", None), ("kwargs", "**")],
    "set_hidden_update_index": [("index", inspect.Parameter.empty)],
}
# The rest of the tile interface the task names (TileWithPeriphery / SimulatorTileWrapper methods).
OTHER_METHODS = [
    "forward", "backward", "update", "get_weights", "set_weights", "get_hidden_parameters",
    "set_hidden_parameters", "set_learning_rate", "get_learning_rate",
]
CONSTRUCTOR = ["out_size", "in_size", "rpu_config", "bias", "in_trans", "out_trans", "shared_weights"]


def test_every_seed_method_exists_with_its_signature() -> None:
    for name, params in SEED_METHODS.items():
        method = getattr(SimulatorTile, name, None)
        assert callable(method), f"SimulatorTile.{name} is missing"
        sig = inspect.signature(method)
        got = [(p.name, "**" if p.kind is p.VAR_KEYWORD else p.default) for p in list(sig.parameters.values())[1:]]
        assert got == params, f"SimulatorTile.{name}{sig}: expected parameters {params}"
        assert method.__doc__ and "wraps" in method.__doc__ or name in ("cuda", "ensure_shared_weights"), name
    for name in OTHER_METHODS:
        assert callable(getattr(SimulatorTile, name, None)), f"SimulatorTile.{name} is missing"
    ctor = list(inspect.signature(SimulatorTile.__init__).parameters)[1:]
    assert ctor[: len(CONSTRUCTOR)] == CONSTRUCTOR


def quiet_device(**kw):
    base = dict(dw_min_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0, up_down_dtod=0.0, dw_min_std=0.0)
    base.update(kw)
    return ConstantStepDevice(**base)


def make(device=None, *, seed: int = 0, weights=None, **kw) -> SimulatorTile:
    cfg = kw.pop("rpu_config", None) or SingleRPUConfig(device=device or quiet_device(), update=UpdateParameters(backend="jax"))
    t = SimulatorTile(OUT, kw.pop("in_size", IN), cfg, seed=seed, **kw)
    if weights is None:
        weights = jax.random.uniform(jax.random.key(seed + 100), (OUT, t.in_size), jnp.float32, -0.3, 0.3)
    t.set_weights(weights, jnp.zeros((OUT,)) if t.analog_bias else None)
    return t


def W(t: SimulatorTile) -> np.ndarray:
    return np.asarray(t.get_weights()[0], np.float64)


# ---------------------------------------------------------------------------------------------
# weight operators
# ---------------------------------------------------------------------------------------------


def test_decay_weights() -> None:
    t = make(quiet_device(lifetime=10.0))
    w0 = W(t)
    t.decay_weights()
    np.testing.assert_allclose(W(t), 0.9 * w0, rtol=3e-7)
    t.decay_weights(alpha=0.5)
    np.testing.assert_allclose(W(t), 0.95 * 0.9 * w0, rtol=5e-7)


def test_diffuse_weights() -> None:
    t = make(quiet_device(diffusion=0.01), in_size=400)
    w0 = W(t)
    t.diffuse_weights()
    ch = W(t) - w0
    assert abs(ch.std() - 0.01) <= Z * 0.01 / math.sqrt(2 * ch.size)
    w1 = W(t)
    t.diffuse_weights()  # a fresh key every call
    assert abs(np.corrcoef(ch.ravel(), (W(t) - w1).ravel())[0, 1]) <= Z / math.sqrt(ch.size)


def test_drift_weights() -> None:
    t = make(quiet_device(drift=DriftParameter(nu=0.1)))
    w0 = W(t)
    t.drift_weights(10.0)
    np.testing.assert_allclose(W(t), w0 * 10.0**-0.1, rtol=3e-7)
    t.drift_weights()  # default delta_t = 1: total 11
    np.testing.assert_allclose(W(t), w0 * 11.0**-0.1, rtol=5e-7)


def test_reset_and_reset_columns() -> None:
    t = make(quiet_device(reset=0.05, reset_std=0.0))
    w0 = W(t)
    t.reset_columns(IN - 1, 2)  # wraps: columns IN−1 and 0
    w = W(t)
    changed = np.flatnonzero((w != w0).any(axis=0)).tolist()
    assert changed == [0, IN - 1]
    np.testing.assert_allclose(w[:, changed], 0.05, rtol=1e-7)
    t.reset_columns()  # defaults: column 0 only
    t.reset(reset_prob=0.0)
    np.testing.assert_array_equal(W(t), w)
    t.reset()
    np.testing.assert_allclose(W(t), 0.05, rtol=1e-7)


def test_post_update_step() -> None:
    t = make(quiet_device(lifetime=10.0))
    w0 = W(t)
    t.post_update_step()
    np.testing.assert_allclose(W(t), 0.9 * w0, rtol=3e-7)
    t = make(quiet_device())
    w0 = W(t)
    t.post_update_step()  # no diffusion, no lifetime: nothing
    np.testing.assert_array_equal(W(t), w0)


# ---------------------------------------------------------------------------------------------
# periphery, hidden index, hidden parameters
# ---------------------------------------------------------------------------------------------

NOISY_IO = IOParameters(out_noise=0.05, out_noise_std=0.3)


def test_forward_parameters() -> None:
    cfg = SingleRPUConfig(device=quiet_device(), forward=NOISY_IO, update=UpdateParameters(backend="jax"))
    t = make(rpu_config=cfg)
    params = t.get_forward_parameters()
    assert list(params) == ["v_offset", "w_asymmetry", "out_nonlinearity", "out_nonlinearity_factor", "out_noise_values"]
    assert params["out_noise_values"].shape == (OUT,) and params["v_offset"].shape == (0,)
    x = jnp.full((3, IN), 0.5)
    y1, y2 = t.forward(x), t.forward(x)
    assert not np.array_equal(np.asarray(y1), np.asarray(y2))  # output noise
    t.set_forward_parameters({"out_noise_values": np.zeros(OUT, np.float32)})
    np.testing.assert_array_equal(np.asarray(t.get_forward_parameters()["out_noise_values"]), 0.0)
    np.testing.assert_array_equal(np.asarray(t.forward(x)), np.asarray(t.forward(x)))  # noise gone
    t.set_forward_parameters(out_noise_values=jnp.full((OUT,), 0.05))  # keyword form
    np.testing.assert_allclose(np.asarray(t.get_forward_parameters()["out_noise_values"]), 0.05)
    with pytest.raises(ValueError, match="out_noise_value.*expected names"):
        t.set_forward_parameters(out_noise_value=np.zeros(OUT))
    with pytest.raises(ValueError, match=r"out_noise_values.*shape \(5,\).*\(6,\)"):
        t.set_forward_parameters(out_noise_values=np.zeros(5))
    with pytest.raises(ValueError, match="not used"):
        t.set_forward_parameters(v_offset=np.zeros(OUT))


def test_backward_parameters() -> None:
    cfg = SingleRPUConfig(device=quiet_device(), backward=NOISY_IO, update=UpdateParameters(backend="jax"))
    t = make(rpu_config=cfg)
    assert t.get_backward_parameters()["out_noise_values"].shape == (IN,)
    d = jnp.full((3, OUT), 0.5)
    assert not np.array_equal(np.asarray(t.backward(d)), np.asarray(t.backward(d)))
    t.set_backward_parameters(None, out_noise_values=np.zeros(IN, np.float32))
    np.testing.assert_array_equal(np.asarray(t.backward(d)), np.asarray(t.backward(d)))
    t.set_backward_parameters({"out_noise_values": np.ones(IN)})
    np.testing.assert_array_equal(np.asarray(t.get_backward_parameters()["out_noise_values"]), 1.0)
    fp = SimulatorTile(OUT, IN, FloatingPointRPUConfig())
    assert fp.get_forward_parameters() == {} and fp.get_backward_parameters() == {}


def test_forward_out_bound() -> None:
    t = make(rpu_config=SingleRPUConfig(forward=IOParameters(out_bound=10.0, out_scale=2.0)))
    assert t.get_forward_out_bound() == pytest.approx(2.0 * 10.0 * 0.999)
    assert make(rpu_config=SingleRPUConfig(forward=IOParameters(out_bound=math.inf))).get_forward_out_bound() is None
    assert SimulatorTile(OUT, IN, FloatingPointRPUConfig()).get_forward_out_bound() is None


def test_hidden_update_index() -> None:
    t = make()
    assert t.get_hidden_update_index() == 0
    t.set_hidden_update_index(2)  # single device: ignored, as in aihwkit
    assert t.get_hidden_update_index() == 0


def test_hidden_parameters() -> None:
    t = make(SoftBoundsDevice())
    hidden = t.get_hidden_parameters()
    assert list(hidden)[:8] == ["max_bound", "min_bound", "dwmin_up", "dwmin_down", "decay_scales",
                                "diffusion_rates", "reset_bias", "drift_nu"]
    new = {k: np.asarray(v).copy() for k, v in hidden.items()}
    new["max_bound"][:] = 0.1
    t.set_hidden_parameters(new)
    assert np.all(W(t) <= 0.1 + 1e-7)  # weights re-clipped to the new bounds
    np.testing.assert_array_equal(np.asarray(t.get_hidden_parameters()["max_bound"]), np.float32(0.1))
    with pytest.raises(ValueError, match="missing.*max_bound"):
        t.set_hidden_parameters({k: v for k, v in new.items() if k != "max_bound"})


# ---------------------------------------------------------------------------------------------
# forward / backward / update, layouts, learning rate, weights
# ---------------------------------------------------------------------------------------------


def test_update_and_learning_rate() -> None:
    t = make(quiet_device(), rpu_config=FloatingPointRPUConfig())
    assert t.get_learning_rate() == 0.1
    w0 = W(t)
    x = np.linspace(-1, 1, IN, dtype=np.float32)[None]
    d = np.linspace(-1, 1, OUT, dtype=np.float32)[None]
    t.update(x, d)
    np.testing.assert_allclose(W(t), w0 - 0.1 * d.T @ x, rtol=1e-6, atol=1e-7)
    t.set_learning_rate(None)
    assert t.get_learning_rate() == 0.1
    t.set_learning_rate(0.0)
    w1 = W(t)
    t.update(x, d)  # lr = 0: no-op
    np.testing.assert_array_equal(W(t), w1)


def test_transposed_layouts_match() -> None:
    cfg = SingleRPUConfig(update=UpdateParameters(backend="jax"))
    plain = make(rpu_config=cfg, seed=3, bias=False)
    trans = make(rpu_config=cfg, seed=3, bias=False, in_trans=True, out_trans=True)
    x = np.asarray(jax.random.uniform(jax.random.key(0), (4, IN), jnp.float32, -1, 1))
    d = np.asarray(jax.random.uniform(jax.random.key(1), (4, OUT), jnp.float32, -1, 1))
    np.testing.assert_array_equal(np.asarray(trans.forward(x.T)), np.asarray(plain.forward(x)).T)
    np.testing.assert_array_equal(np.asarray(trans.backward(d.T)), np.asarray(plain.backward(d)).T)
    trans.update(x.T, d.T)
    plain.update(x, d)
    np.testing.assert_array_equal(W(trans), W(plain))
    assert not np.array_equal(W(plain), W(make(rpu_config=cfg, seed=3, bias=False)))


def test_weights_and_bias() -> None:
    t = make(quiet_device(w_max=0.2, w_min=-0.2))  # digital bias (default mapping)
    assert t.digital_bias and not t.analog_bias
    w = np.full((OUT, IN), 0.5, np.float32)
    t.set_weights(w, np.arange(OUT, dtype=np.float32))
    got_w, got_b = t.get_weights()
    np.testing.assert_array_equal(np.asarray(got_w), np.float32(0.2))  # clipped to the device bounds
    np.testing.assert_array_equal(np.asarray(got_b), np.arange(OUT))
    y = t.forward(np.zeros((1, IN), np.float32))
    np.testing.assert_allclose(np.asarray(y)[0], np.arange(OUT), atol=1e-6)  # the digital bias
    analog = make(rpu_config=SingleRPUConfig(device=quiet_device(), mapping=MappingParameter(digital_bias=False)))
    assert analog.analog_bias and analog.state.x_size == IN + 1
    analog.set_weights(np.zeros((OUT, IN), np.float32), np.full(OUT, 0.25, np.float32))
    np.testing.assert_allclose(np.asarray(analog.get_weights()[1]), 0.25)


# ---------------------------------------------------------------------------------------------
# shared weights and delta weights
# ---------------------------------------------------------------------------------------------


def test_ensure_shared_weights() -> None:
    shared = np.full((OUT, IN), 0.125, np.float32)
    t = make(shared_weights=True)
    t.ensure_shared_weights(shared)
    np.testing.assert_array_equal(np.asarray(t.shared_weights), shared)
    np.testing.assert_array_equal(W(t), shared)
    t.ensure_shared_weights()  # no argument: nothing changes
    np.testing.assert_array_equal(W(t), shared)
    with pytest.raises(ValueError, match="shape"):
        t.ensure_shared_weights(np.zeros((2, 2)))
    plain = make()
    assert plain.shared_weights is None
    with pytest.raises(ValueError, match="does not use shared weights"):
        plain.ensure_shared_weights(shared)
    built = SimulatorTile(OUT, IN, SingleRPUConfig(), shared_weights=shared)
    np.testing.assert_array_equal(np.asarray(built.shared_weights), shared)


def test_set_and_reset_delta_weights() -> None:
    x = np.full((2, IN), 0.8, np.float32)
    d = np.full((2, OUT), 0.5, np.float32)
    shared = make(seed=4, shared_weights=True)
    twin = make(seed=4)
    w0 = W(shared)
    shared.set_delta_weights(jnp.zeros((OUT, IN)))
    shared.update(x, d)
    twin.update(x, d)  # the same key sequence: the update the delta buffer records
    np.testing.assert_array_equal(W(shared), w0)
    np.testing.assert_allclose(np.asarray(shared.get_delta_weights()), W(twin) - w0, atol=1e-7)
    assert np.any(np.asarray(shared.get_delta_weights()) < 0)
    shared.reset_delta_weights()
    assert shared.get_delta_weights() is None
    shared.update(x, d)
    assert not np.array_equal(W(shared), w0)
    # Without shared weights both calls are no-ops (aihwkit).
    plain = make(seed=4)
    plain.set_delta_weights(jnp.zeros((OUT, IN)))
    plain.update(x, d)
    assert plain.get_delta_weights() is None and not np.array_equal(W(plain), w0)
    plain.reset_delta_weights()


# ---------------------------------------------------------------------------------------------
# checkpoints and devices
# ---------------------------------------------------------------------------------------------


def test_dump_and_load_extra_continue_identically() -> None:
    dev = SoftBoundsDevice(lifetime=20.0, diffusion=0.01, drift=DriftParameter(nu=0.05))
    a = make(dev, seed=6)
    x = np.full((2, IN), 0.5, np.float32)
    d = np.full((2, OUT), 0.3, np.float32)
    a.update(x, d)
    a.post_update_step()
    a.drift_weights(2.0)
    a.set_learning_rate(0.05)
    extra = json.loads(json.dumps(a.dump_extra()))
    w = a.get_weights()
    b = make(dev, seed=99)
    b.set_weights(*w)  # the weights are not part of the extra state (set first: it uses a key)
    b.load_extra(extra, strict=True)
    for t in (a, b):
        t.update(x, d)
        t.post_update_step()
        t.drift_weights(3.0)
    assert b.get_learning_rate() == 0.05
    np.testing.assert_array_equal(W(a), W(b))
    for name in a.state.drift:
        np.testing.assert_array_equal(np.asarray(a.state.drift[name]), np.asarray(b.state.drift[name]))


def test_load_extra_strict() -> None:
    a = make()
    other = make(SoftBoundsDevice())
    extra = a.dump_extra()
    with pytest.raises(ValueError, match="ConstantStepDevice.*SoftBoundsDevice"):
        other.load_extra(extra, strict=True)
    with pytest.warns(UserWarning, match="skipped"):
        other.load_extra(extra)  # default strict=False: warn, load what fits


def test_cuda() -> None:
    t = make()
    try:
        gpus = jax.devices("cuda")
    except RuntimeError:
        gpus = []
    if not gpus:
        with pytest.raises(CudaError, match="no CUDA device"):
            t.cuda()
        return
    assert t.cuda() is t
    assert t.state.weights.devices() == {gpus[0]}
    with pytest.raises(CudaError, match="does not exist"):
        t.cuda(len(gpus))
    y = t.forward(np.ones((1, IN), np.float32))
    assert y.devices() == {gpus[0]}
    t.cpu()
    assert t.state.weights.devices() == {jax.devices("cpu")[0]}


def test_pure_functions_match() -> None:
    """The stateful tile is the pure functions with a split key: one call, same result."""
    t = make(quiet_device(diffusion=0.02), seed=8)
    state, key = t.state, t._key
    key, sub = jax.random.split(key)
    expected = lifecycle.diffuse_weights(state, sub)
    t.diffuse_weights()
    np.testing.assert_array_equal(np.asarray(t.state.weights), np.asarray(expected.weights))
