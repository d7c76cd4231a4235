"""The analog optimizer: exact configs against nnx + optax, the pulsed path, inference tiles, jit.

Exact configs (floating point; ideal device with perfect IO) must reproduce a plain nnx.Linear
model trained with optax SGD up to float32 rounding: after 20 steps the weights (|w| < 1) agree to
a few ulps (tolerance 2e-6 absolute, i.e. ~30 ulps of 0.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rpujax import optim, tile
from rpujax.configs import (
    ConstantStepDevice,
    FloatingPointDevice,
    FloatingPointRPUConfig,
    IdealDevice,
    IOParameters,
    MappingParameter,
    SingleRPUConfig,
)
from rpujax.configs.inference import InferenceRPUConfig, WeightClipParameter
from rpujax.demo import cross_entropy, load_data
from rpujax.nn import AnalogLinear, convert_to_analog, get_tiles
from rpujax.tile.lifecycle import post_update_step

PERFECT = IOParameters(is_perfect=True)


class Net(nnx.Module):
    def __init__(self, sizes, rngs):
        self.hidden = nnx.Linear(sizes[0], sizes[1], rngs=rngs)
        self.out = nnx.Linear(sizes[1], sizes[2], rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


@pytest.fixture(scope="module")
def batches():
    x, y, _, _ = load_data()
    n = 20 * 16
    return jnp.asarray(x[:n]).reshape(20, 16, 64), jnp.asarray(y[:n]).reshape(20, 16)


def loss_fn(model, x, y):
    return cross_entropy(model(x), y)


def train_reference(model, lr, batches):
    opt = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        opt.update(model, grads)
        return loss

    return [float(step(model, opt, x, y)) for x, y in zip(*batches)]


def train_analog(model, tx, batches):
    opt = optim.AnalogOptimizer(model, tx)

    @nnx.jit
    def step(model, opt, x, y, key):
        loss, grads = optim.value_and_grad(loss_fn)(model, x, y)
        opt.update(model, grads, key)
        return loss

    return [float(step(model, opt, x, y, jax.random.key(i))) for i, (x, y) in enumerate(zip(*batches))]


SCALED = MappingParameter(weight_scaling_omega=0.7, weight_scaling_columnwise=True, weight_scaling_lr_compensation=True)


@pytest.mark.parametrize(
    "rpu_config",
    [
        FloatingPointRPUConfig(),
        SingleRPUConfig(device=IdealDevice(), forward=PERFECT, backward=PERFECT),
        # mapping scales and lr compensation change the split between tile weights, d and lr
        # (d = g/(s_map·λ), tile lr = lr·λ), not the logical SGD step (spec §1.6, §1.9)
        FloatingPointRPUConfig(mapping=SCALED),
    ],
    ids=["floating-point", "ideal", "floating-point-scaled"],
)
@pytest.mark.parametrize("schedule", [False, True], ids=["constant-lr", "schedule"])
def test_exact_configs_match_nnx_linear_with_optax_sgd(rpu_config, schedule, batches):
    lr = optax.exponential_decay(0.2, transition_steps=5, decay_rate=0.5) if schedule else 0.1
    ref = Net((64, 32, 10), nnx.Rngs(0))
    analog = convert_to_analog(ref, rpu_config, rngs=nnx.Rngs(1))
    loss_a = train_analog(analog, optim.analog_sgd(lr), batches)
    loss_r = train_reference(ref, lr, batches)
    np.testing.assert_allclose(loss_a, loss_r, rtol=1e-5)
    moved = jnp.max(jnp.abs(ref.hidden.kernel[...] - Net((64, 32, 10), nnx.Rngs(0)).hidden.kernel[...]))
    assert float(moved) > 1e-2  # it trained: far beyond the tolerance below
    for name in ("hidden", "out"):
        w, b = getattr(analog, name).get_weights()
        layer = getattr(ref, name)
        np.testing.assert_allclose(w, layer.kernel[...].T, atol=2e-6)
        np.testing.assert_allclose(b, layer.bias[...], atol=2e-6)


def test_shared_layer_calls_are_one_update(batches):
    """A layer used twice in a step: its two (x, d) are concatenated into one update (aihwkit)."""

    class Twice(nnx.Module):
        def __init__(self, layer_cls, cfg, rngs):
            self.a = layer_cls(8, 8, rngs=rngs) if cfg is None else layer_cls(8, 8, cfg, rngs=rngs)

        def __call__(self, x):
            return self.a(jax.nn.tanh(self.a(x)))

    ref = Twice(nnx.Linear, None, nnx.Rngs(0))
    analog = convert_to_analog(ref, FloatingPointRPUConfig(), rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (5, 8))
    target = jax.random.normal(jax.random.key(1), (5, 8))
    mse = lambda m: jnp.mean((m(x) - target) ** 2)  # noqa: E731
    _, grads = optim.value_and_grad(mse)(analog)
    assert grads.tiles["a/tiles[0,0]"].x.shape == (10, 8)
    optim.AnalogOptimizer(analog, optim.analog_sgd(0.3)).update(analog, grads, jax.random.key(0))
    g = nnx.grad(mse)(ref)
    nnx.Optimizer(ref, optax.sgd(0.3), wrt=nnx.Param).update(ref, g)
    np.testing.assert_allclose(analog.a.get_weights()[0], ref.a.kernel[...].T, atol=1e-6)


def _pulsed_config():
    # ConstantStep without any variation: every pulse moves a weight by exactly ±dw_min.
    dev = ConstantStepDevice(dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    return SingleRPUConfig(device=dev, forward=PERFECT, backward=PERFECT)


def test_pulsed_tiles_get_layer_x_and_d_through_the_pulsed_update(batches):
    """One step equals ``tile.update`` with the layer's own input and output error, per tile.

    The reference x and d come from plain autodiff of the same network written with the tile
    weights; the keys follow rpujax.optim's documented derivation (tile n in sorted name order:
    ``split(fold_in(key, n))`` -> update key, post-update key). The result is then checked to be
    made of whole pulses (|ΔW|/dw_min integral), which a dense-gradient step would not be.
    """
    cfg = _pulsed_config()
    model = Net((64, 32, 10), nnx.Rngs(0))
    model = convert_to_analog(model, cfg, rngs=nnx.Rngs(1))
    x, y = batches[0][0], batches[1][0]
    tiles0 = get_tiles(model)
    assert sorted(tiles0) == ["hidden/tiles[0,0]", "out/tiles[0,0]"]
    w1, w2 = tiles0["hidden/tiles[0,0]"].weights, tiles0["out/tiles[0,0]"].weights
    b1, b2 = model.hidden.bias[...], model.out.bias[...]

    def reference_loss(p1, p2):
        h = x @ w1.T + p1 + b1
        a = jax.nn.relu(h)
        return cross_entropy(a @ w2.T + p2 + b2, y), a

    (_, a), (d1, d2) = jax.value_and_grad(reference_loss, argnums=(0, 1), has_aux=True)(
        jnp.zeros((16, 32)), jnp.zeros((16, 10))
    )
    lr = 0.1
    key = jax.random.key(5)
    opt = optim.AnalogOptimizer(model, optim.analog_sgd(lr))
    _, grads = optim.value_and_grad(loss_fn)(model, x, y)
    np.testing.assert_allclose(grads.tiles["hidden/tiles[0,0]"].d, d1, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grads.tiles["out/tiles[0,0]"].x, a, rtol=1e-6, atol=1e-7)
    opt.update(model, grads, key)
    new = get_tiles(model)

    for n, (name, xin, d) in enumerate((("hidden/tiles[0,0]", x, d1), ("out/tiles[0,0]", a, d2))):
        k_upd, k_post = jax.random.split(jax.random.fold_in(key, n))
        g = grads.tiles[name]
        expected = post_update_step(tile.update(tiles0[name], g.x, g.d, lr, k_upd), k_post)
        assert bool(jnp.all(new[name].weights == expected.weights)), name
        dw = np.asarray(new[name].weights - tiles0[name].weights)
        pulses = dw / cfg.device.dw_min
        assert np.count_nonzero(np.round(pulses)) > 0.05 * pulses.size, name
        np.testing.assert_allclose(pulses, np.round(pulses), atol=2e-3)
        dense = (-lr * np.asarray(d).T @ np.asarray(xin)) / cfg.device.dw_min
        dense = dense[dense != 0]  # (ReLU zeros give exact zeros)
        assert np.mean(np.abs(dense - np.round(dense)) > 0.05) > 0.5  # a dense step is not whole pulses


def test_jit_and_no_jit_identical():
    """One step of the default (noisy IO, ConstantStep) config, eager vs ``nnx.jit``.

    Loss, captured (x, d), digital gradients and the new tile states are bit-identical. The
    digital parameters are compared to 1 ulp: under jit XLA:CPU contracts optax's ``p − lr·g``
    into one FMA (one rounding instead of two), which is XLA's arithmetic, not rpujax's.
    """
    model = convert_to_analog(Net((8, 6, 3), nnx.Rngs(0)), SingleRPUConfig(), rngs=nnx.Rngs(1))
    x = jax.random.uniform(jax.random.key(0), (4, 8))
    y = jax.random.randint(jax.random.key(1), (4,), 0, 3)

    def step(model, opt, x, y, key):
        loss, grads = optim.value_and_grad(loss_fn)(model, x, y)
        opt.update(model, grads, key)
        return loss, grads

    runs = []
    for compiled in (False, True):
        m = nnx.clone(model)
        opt = optim.AnalogOptimizer(m, optim.analog_sgd(0.1))
        out = (nnx.jit(step) if compiled else step)(m, opt, x, y, jax.random.key(10))
        runs.append((out, get_tiles(m), nnx.state(m, nnx.Param)))
    (out_e, tiles_e, params_e), (out_j, tiles_j, params_j) = runs
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), (out_e, tiles_e), (out_j, tiles_j))
    assert all(jax.tree.leaves(same))
    for a, b in zip(jax.tree.leaves(params_e), jax.tree.leaves(params_j)):
        np.testing.assert_array_max_ulp(np.asarray(a), np.asarray(b), maxulp=1)
    before = get_tiles(model)
    assert not bool(jnp.all(tiles_j["hidden/tiles[0,0]"].weights == before["hidden/tiles[0,0]"].weights))


def test_inference_tiles_take_the_dense_gradient_through_optax():
    """Inference tile: optax applies (g/s_map)ᵀx (spec §1.14), then post_update_step clips."""
    clip = WeightClipParameter(type="FIXED_VALUE", fixed_value=0.4)
    cfg = InferenceRPUConfig(forward=PERFECT, clip=clip, mapping=MappingParameter(weight_scaling_omega=0.6))
    layer = AnalogLinear(6, 4, cfg, rngs=nnx.Rngs(0))
    w_logical, b = layer.get_weights()
    s_map = layer.mapping_scales.get_value()[0, 0]
    w_tile = layer.tiles.get_value()[0][0].weights
    x = jax.random.normal(jax.random.key(0), (5, 6))
    t = jax.random.normal(jax.random.key(1), (5, 4))
    mse = lambda m: jnp.mean((m(x) - t) ** 2)  # noqa: E731
    g = jax.grad(lambda yy: jnp.mean((yy + b - t) ** 2))(x @ w_logical.T)
    opt = optim.AnalogOptimizer(layer, optax.sgd(0.2), learning_rate=0.2)
    _, grads = optim.value_and_grad(mse)(layer)
    opt.update(layer, grads, jax.random.key(0))
    stepped = w_tile - 0.2 * (g / s_map).T @ x
    assert float(jnp.max(jnp.abs(stepped))) > 0.45  # so that the clip acts
    np.testing.assert_allclose(layer.tiles.get_value()[0][0].weights, jnp.clip(stepped, -0.4, 0.4), atol=1e-6)


def test_post_update_step_runs_every_step():
    cfg = FloatingPointRPUConfig(device=FloatingPointDevice(lifetime=10.0))
    layer = AnalogLinear(3, 2, cfg, rngs=nnx.Rngs(0))
    w0, _ = layer.get_weights()
    opt = optim.AnalogOptimizer(layer, optim.analog_sgd(0.0))
    _, grads = optim.value_and_grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(layer)
    opt.update(layer, grads, jax.random.key(0))
    np.testing.assert_allclose(layer.get_weights()[0], w0 * (1 - 1 / 10.0), rtol=1e-6)
    assert int(opt.step[...]) == 1


def test_optimizer_argument_errors():
    layer = AnalogLinear(3, 2, FloatingPointRPUConfig(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="learning_rate"):
        optim.AnalogOptimizer(layer, optax.sgd(0.1))
    opt = optim.AnalogOptimizer(layer, optim.analog_sgd(0.1))
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(layer)
    with pytest.raises(TypeError, match="value_and_grad"):
        opt.update(layer, grads, jax.random.key(0))
    with pytest.raises(ValueError, match="learning_rate"):
        optim.analog_sgd(-1.0)
    with pytest.raises(TypeError, match="data_parallel"):
        optim.AnalogOptimizer(layer, optim.analog_sgd(0.1), data_parallel="data")
