"""Analog nnx layers: tile grids, periphery (scales, bias), convolutions, conversion, masks.

Exact (floating-point or ideal-with-perfect-IO) configs make every expectation an equality up to
float32 rounding of sums of a few dozen products; tolerances are a few ulps of the values.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rpujax import optim
from rpujax.configs import (
    FloatingPointRPUConfig,
    IdealDevice,
    IOParameters,
    MappingParameter,
    SingleRPUConfig,
)
from rpujax.configs.inference import InferenceRPUConfig
from rpujax.nn import (
    AnalogConv1d,
    AnalogConv2d,
    AnalogLinear,
    convert_to_analog,
    get_tiles,
    set_tiles,
    split_sizes,
    uses_tile_array,
)

PERFECT = IOParameters(is_perfect=True)


def ideal_config(**mapping) -> SingleRPUConfig:
    """Ideal device (exact FP update) with exact IO in both directions."""
    return SingleRPUConfig(device=IdealDevice(), forward=PERFECT, backward=PERFECT, mapping=MappingParameter(**mapping))


def fp_config(**mapping) -> FloatingPointRPUConfig:
    return FloatingPointRPUConfig(mapping=MappingParameter(**mapping))


def input_grad(model, x):
    """Gradient of sum(sin(model(x))) w.r.t. x (nnx.grad: the layer's noise stream is state)."""
    return nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x))), argnums=1)(model, x)


def close(a, b, rtol=2e-6, atol=2e-7):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# tile grid (spec cells-inference-api §2.3)


def test_split_sizes_near_equal_larger_first():
    assert split_sizes(10, 4) == (4, 3, 3)
    assert split_sizes(5, 3) == (3, 2)
    assert split_sizes(512, 512) == (512,)
    assert split_sizes(513, 512) == (257, 256)
    assert split_sizes(7, 0) == (7,)
    assert split_sizes(9, 3) == (3, 3, 3)


def test_tile_array_selection_rule():
    assert not uses_tile_array(10, 10, MappingParameter())
    assert uses_tile_array(10, 600, MappingParameter())
    assert not uses_tile_array(10, 10, MappingParameter(max_input_size=0, max_output_size=0))
    # a limit of 0 counts as "smaller" in aihwkit: an array (with one tile) is built
    assert uses_tile_array(10, 10, MappingParameter(max_input_size=0, max_output_size=512))


def test_grid_3x2_tile_count_sizes_and_bias():
    cfg = ideal_config(max_input_size=4, max_output_size=3, digital_bias=False)
    layer = AnalogLinear(10, 5, cfg, rngs=nnx.Rngs(0))
    assert layer.in_sizes == (4, 3, 3) and layer.out_sizes == (3, 2)
    grid = layer.tiles.get_value()
    shapes = [[tuple(t.weights.shape) for t in row] for row in grid]
    assert shapes == [[(3, 4), (2, 4)], [(3, 3), (2, 3)], [(3, 3), (2, 3)]]
    assert len(get_tiles(layer)) == 6
    # a tile array always has one digital bias, whatever mapping.digital_bias says
    assert not layer.analog_bias and layer.bias is not None and layer.bias.shape == (5,)
    assert all(not t.bias for row in grid for t in row)


def _copy(src: AnalogLinear, dst: AnalogLinear) -> None:
    w, b = src.get_weights()
    dst.set_weights(w, b)


def test_grid_3x2_equals_unsplit_ideal_forward_backward_and_training():
    split = AnalogLinear(10, 5, ideal_config(max_input_size=4, max_output_size=3), rngs=nnx.Rngs(0))
    whole = AnalogLinear(10, 5, ideal_config(), rngs=nnx.Rngs(1))
    assert whole.grid_shape == (1, 1)
    _copy(split, whole)
    x = jax.random.normal(jax.random.key(0), (7, 10))
    close(split(x), whole(x))
    w, b = split.get_weights()
    close(split(x), x @ w.T + b)
    gx_split = input_grad(split, x)
    gx_whole = input_grad(whole, x)
    close(gx_split, gx_whole)

    # three SGD steps: the split layer's tiles each get their slice of x and d
    labels = jnp.array([0, 1, 2, 3, 4, 0, 1])
    for model in (split, whole):
        opt = optim.AnalogOptimizer(model, optim.analog_sgd(0.5))
        for s in range(3):
            _, grads = optim.value_and_grad(
                lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
            )(model)
            opt.update(model, grads, jax.random.key(s))
    ws, bs = split.get_weights()
    ww, bw = whole.get_weights()
    assert float(jnp.max(jnp.abs(ws - w))) > 1e-2  # it did train
    close(ws, ww)
    close(bs, bw)


# ---------------------------------------------------------------------------------------------
# periphery: weight scaling, learned out scales, analog bias (spec §1.4, §1.7)


def test_weight_scaling_layerwise_and_columnwise():
    w = jax.random.uniform(jax.random.key(1), (4, 6), minval=-2.0, maxval=2.0)
    w = w.at[2].set(0.0)  # an all-zero row: its columnwise scale is 1
    b = jnp.arange(4.0)
    x = jax.random.normal(jax.random.key(2), (3, 6))
    for columnwise in (False, True):
        layer = AnalogLinear(6, 4, fp_config(weight_scaling_omega=0.5, weight_scaling_columnwise=columnwise),
                             rngs=nnx.Rngs(0))
        layer.set_weights(w, b)
        tile_w = layer.tiles.get_value()[0][0].weights
        s_map = layer.mapping_scales.get_value()
        if columnwise:
            assert s_map.shape == (1, 4)
            row_max = jnp.max(jnp.abs(w), axis=1)
            close(s_map[0], jnp.where(row_max == 0, 1.0, row_max / 0.5))
            close(jnp.max(jnp.abs(tile_w), axis=1), jnp.where(row_max == 0, 0.0, 0.5))
        else:
            assert s_map.shape == (1, 1)
            close(s_map[0, 0], jnp.max(jnp.abs(w)) / 0.5)
            close(jnp.max(jnp.abs(tile_w)), 0.5)
        gw, gb = layer.get_weights()
        close(gw, w)
        close(gb, b)
        close(layer(x), x @ w.T + b, rtol=1e-5, atol=1e-6)


def test_omega_zero_writes_unscaled_and_keeps_scales():
    layer = AnalogLinear(3, 2, fp_config(), rngs=nnx.Rngs(0))
    assert float(layer.mapping_scales.get_value()[0, 0]) == 1.0
    layer.mapping_scales.set_value(jnp.full((1, 1), 2.0))
    w = jnp.arange(6.0).reshape(2, 3) / 10
    layer.set_weights(w, jnp.zeros(2))
    close(layer.tiles.get_value()[0][0].weights, w)
    assert float(layer.mapping_scales.get_value()[0, 0]) == 2.0
    close(layer.get_weights()[0], 2.0 * w)
    close(layer(jnp.ones((1, 3))), 2.0 * jnp.ones((1, 3)) @ w.T)


def test_learned_out_scaling_resets_on_set_weights_and_trains():
    cfg = fp_config(weight_scaling_omega=1.0, learn_out_scaling=True, out_scaling_columnwise=True)
    layer = AnalogLinear(5, 3, cfg, rngs=nnx.Rngs(0))
    assert layer.out_scaling_alpha.shape == (1, 3)
    tile_w = layer.tiles.get_value()[0][0].weights
    s_map = layer.mapping_scales.get_value()[0]
    layer.out_scaling_alpha.set_value(jnp.array([[2.0, 3.0, 4.0]]))
    close(layer.get_weights()[0], tile_w * (s_map * jnp.array([2.0, 3.0, 4.0]))[:, None])
    w = jax.random.normal(jax.random.key(0), (3, 5))
    layer.set_weights(w, jnp.zeros(3))
    close(layer.out_scaling_alpha[...], jnp.ones((1, 3)))
    close(layer.get_weights()[0], w)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    _, grads = optim.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(layer)
    y = x @ w.T
    # dL/ds_out_i = sum_b 2 y_bi * (y_bi / s_out_i) with s_out = 1
    close(grads.params["out_scaling_alpha"][...][0], jnp.sum(2 * y * y, axis=0), rtol=1e-5)


def test_analog_bias_column():
    cfg = fp_config(digital_bias=False)
    layer = AnalogLinear(4, 3, cfg, rngs=nnx.Rngs(0))
    assert layer.analog_bias and layer.bias is None
    state = layer.tiles.get_value()[0][0]
    assert state.bias and state.weights.shape == (3, 5)
    w = jax.random.normal(jax.random.key(0), (3, 4))
    b = jnp.array([0.5, -1.0, 2.0])
    layer.set_weights(w, b)
    close(layer.tiles.get_value()[0][0].weights, jnp.concatenate([w, b[:, None]], axis=1))
    x = jax.random.normal(jax.random.key(1), (2, 4))
    close(layer(x), x @ w.T + b)
    gw, gb = layer.get_weights()
    close(gw, w)
    close(gb, b)
    with pytest.raises(ValueError, match="analog bias"):
        layer.set_weights(w)


def test_no_bias():
    layer = AnalogLinear(4, 3, fp_config(), bias=False, rngs=nnx.Rngs(0))
    assert layer.bias is None and layer.get_weights()[1] is None
    w = layer.get_weights()[0]
    x = jnp.ones((1, 4))
    close(layer(x), x @ w.T)


def test_in_trans_out_trans_layouts():
    plain = AnalogLinear(4, 3, fp_config(), rngs=nnx.Rngs(0))
    trans = AnalogLinear(4, 3, fp_config(), rngs=nnx.Rngs(0), in_trans=True, out_trans=True)
    x = jax.random.normal(jax.random.key(0), (5, 2, 4))
    y = plain(x)
    yt = trans(jnp.moveaxis(x, -1, 0))
    assert yt.shape == (3, 5, 2)
    close(jnp.moveaxis(yt, 0, -1), y)
    with pytest.raises(ValueError, match=r"\(5, 2, 4\).*\(4, \.\.\.\)"):
        trans(x)


def test_default_init_is_torch_uniform():
    layer = AnalogLinear(100, 50, fp_config(), rngs=nnx.Rngs(0))
    w, b = layer.get_weights()
    bound = 1 / math.sqrt(100)
    assert float(jnp.max(jnp.abs(w))) <= bound and float(jnp.max(jnp.abs(b))) <= bound
    # U(±bound) has std bound/sqrt(3). With n = 5000 draws and kurtosis 1.8, the relative standard
    # error of the sample variance is sqrt((1.8 − 1)/n) = 0.0126, of the std half that; 5 sigma.
    n = w.size
    assert abs(float(jnp.std(w)) / (bound / math.sqrt(3)) - 1) < 5 * 0.5 * math.sqrt(0.8 / n)


def test_shape_errors_name_both_shapes():
    layer = AnalogLinear(4, 3, fp_config(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(\.\.\., 4\)"):
        layer(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 4\)"):
        layer.set_weights(jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="in_features"):
        AnalogLinear(0, 3, fp_config(), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------
# modes, masks, randomness


def test_eval_and_train_switch_is_test():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = AnalogLinear(3, 3, fp_config(), rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

    net = Net(nnx.Rngs(0))
    net.eval()
    assert net.a.is_test and net.drop.deterministic
    net.train()
    assert not net.a.is_test and not net.drop.deterministic


def test_out_bound_mask_on_input_gradient_not_on_update_error():
    # forward out_bound B = 1: outputs with |y| >= 0.999 B get no gradient to x (spec §1.15),
    # but the update error d stays unmasked (spec §1.6).
    io = IOParameters(is_perfect=True, out_bound=1.0)
    cfg = SingleRPUConfig(device=IdealDevice(), forward=io, backward=PERFECT)
    layer = AnalogLinear(2, 3, cfg, bias=False, rngs=nnx.Rngs(0))
    w = jnp.array([[2.0, 0.0], [0.1, 0.2], [-3.0, 1.0]])
    layer.set_weights(w)
    x = jnp.array([[1.0, 1.0]])
    y = x @ w.T  # [2, 0.3, -2]: outputs 0 and 2 are beyond the bound
    close(layer(x), y)
    gx = nnx.grad(lambda m, x: jnp.sum(m(x)), argnums=1)(layer, x)
    mask = (jnp.abs(y) < 0.999).astype(jnp.float32)
    close(gx, mask @ w)
    _, grads = optim.value_and_grad(lambda m: jnp.sum(m(x)))(layer)
    tg = grads.tiles["tiles[0,0]"]
    close(tg.d, jnp.ones((1, 3)))
    close(tg.x, x)


def test_forward_noise_key_and_reseed():
    layer = AnalogLinear(8, 4, SingleRPUConfig(), rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (5, 8))
    y1 = layer(x)
    y2 = layer(x)
    assert not bool(jnp.all(y1 == y2))  # the stream advances: fresh output noise
    k = jax.random.key(7)
    assert bool(jnp.all(layer(x, rngs=k) == layer(x, rngs=k)))
    nnx.reseed(layer, analog=3)
    a = layer(x)
    nnx.reseed(layer, analog=3)
    assert bool(jnp.all(layer(x) == a))


def test_set_and_get_tiles_roundtrip():
    layer = AnalogLinear(10, 5, fp_config(max_input_size=4), rngs=nnx.Rngs(0))
    tiles = get_tiles(layer)
    assert sorted(tiles) == ["tiles[0,0]", "tiles[1,0]", "tiles[2,0]"]
    changed = {"tiles[1,0]": tiles["tiles[1,0]"].replace(weights=jnp.zeros_like(tiles["tiles[1,0]"].weights))}
    set_tiles(layer, changed)
    w, _ = layer.get_weights()
    assert float(jnp.max(jnp.abs(w[:, 4:7]))) == 0.0 and float(jnp.max(jnp.abs(w[:, :4]))) > 0
    with pytest.raises(KeyError, match="nope"):
        set_tiles(layer, {"nope": tiles["tiles[0,0]"]})


# ---------------------------------------------------------------------------------------------
# convolutions and conversion


@pytest.mark.parametrize(
    "nd, padding, strides, dilation",
    [(1, "SAME", 1, 1), (1, "VALID", 2, 2), (1, 1, 1, 1), (2, "SAME", 2, 1), (2, "VALID", 1, 2), (2, ((1, 0), (0, 2)), 1, 1)],
)
def test_conv_matches_nnx_conv(nd, padding, strides, dilation):
    conv = nnx.Conv(3, 5, (3,) * nd, strides=strides, padding=padding, kernel_dilation=dilation, rngs=nnx.Rngs(0))
    analog = convert_to_analog(conv, fp_config(), rngs=nnx.Rngs(1))
    assert isinstance(analog, AnalogConv1d if nd == 1 else AnalogConv2d)
    x = jax.random.normal(jax.random.key(0), (2,) + (9,) * nd + (3,))
    close(analog(x), conv(x), rtol=1e-5, atol=1e-6)
    close(analog(x[0]), conv(x[0]), rtol=1e-5, atol=1e-6)  # unbatched input
    # tile layout (C_out, C_in·k) in aihwkit's (C_in, k...) order
    w, b = analog.get_weights()
    kernel = conv.kernel[...]
    close(w.reshape((5, 3) + (3,) * nd), jnp.moveaxis(kernel, (-1, -2), (0, 1)))
    close(b, conv.bias[...])


def test_conv_input_gradient_matches_nnx_conv():
    conv = nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    analog = convert_to_analog(conv, fp_config(), rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
    g_a = input_grad(analog, x)
    g_d = input_grad(conv, x)
    close(g_a, g_d, rtol=1e-5, atol=1e-6)


def test_conv_patches_are_update_samples():
    layer = AnalogConv2d(2, 3, 2, fp_config(), padding="VALID", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 2))
    _, grads = optim.value_and_grad(lambda m: jnp.sum(m(x)))(layer)
    tg = grads.tiles["tiles[0,0]"]
    assert tg.x.shape == (4 * 4 * 4, 2 * 2 * 2) and tg.d.shape == (4 * 4 * 4, 3)


def test_convert_to_analog_nested_model_keeps_weights():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(32, 16, rngs=rngs), nnx.Linear(16, 4, rngs=rngs)])
            self.norm = nnx.LayerNorm(4, rngs=rngs)

        def __call__(self, x):
            h = jax.nn.relu(self.conv(x)).reshape((x.shape[0], -1))
            return self.norm(self.blocks[1](jax.nn.relu(self.blocks[0](h))))

    net = Net(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
    analog = convert_to_analog(net, fp_config(), rngs=nnx.Rngs(1))
    assert isinstance(net.blocks[0], nnx.Linear)  # not in place
    assert isinstance(analog.conv, AnalogConv2d)
    assert all(isinstance(b, AnalogLinear) for b in analog.blocks)
    assert isinstance(analog.norm, nnx.LayerNorm)
    close(analog(x), net(x), rtol=1e-5, atol=1e-5)
    close(analog.blocks[0].get_weights()[0], net.blocks[0].kernel[...].T)

    # re-mapping analog layers to another config keeps the logical weights
    cfg = InferenceRPUConfig(mapping=MappingParameter(weight_scaling_omega=1.0))
    deployed = convert_to_analog(analog, cfg, rngs=nnx.Rngs(2))
    assert deployed.blocks[1].rpu_config == cfg
    close(deployed.blocks[1].get_weights()[0], analog.blocks[1].get_weights()[0], rtol=1e-6, atol=1e-7)
    kept = convert_to_analog(analog, cfg, rngs=nnx.Rngs(2), convert_analog=False)
    assert kept.blocks[1].rpu_config == fp_config()


def test_convert_rejects_grouped_conv():
    conv = nnx.Conv(4, 4, (3,), feature_group_count=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="feature_group_count=2"):
        convert_to_analog(conv, fp_config(), rngs=nnx.Rngs(0))
