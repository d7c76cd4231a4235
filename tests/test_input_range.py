"""Input range of the tile periphery (spec cells-inference-api §1.4–§1.6, §2.4) and the inference presets.

Exact configs (floating point, or an ideal device with perfect IO) make every expectation a hand
computation up to float32 rounding. The gradient of ``r`` is compared with the spec's formula
written out in numpy on an example whose inputs clip on both sides with both signs of ``δ``, so a
wrong sign, a missing ``r`` factor or plain autodiff through the clip would all fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rpujax import optim, tile
from rpujax.configs import (
    BoundManagementType,
    FloatingPointRPUConfig,
    IdealDevice,
    InputRangeParameter,
    IOParameters,
    MappingParameter,
    NoiseManagementType,
    PrePostProcessingParameter,
    SingleRPUConfig,
    UnitCellRPUConfig,
    DigitalRankUpdateRPUConfig,
)
from rpujax.configs.inference import (
    GlobalDriftCompensation,
    InferenceRPUConfig,
    PCMLikeNoiseModel,
    TorchInferenceRPUConfig,
    WeightClipType,
    WeightRemapType,
)
from rpujax.configs.io import WeightNoiseType
from rpujax.nn import AnalogLinear, get_tiles
from rpujax.nn.layers import InputRange, InputRangeCounter
from rpujax.optim import dense_gradient
from rpujax.presets import FloatingPointPreset, PresetIOParameters, StandardHWATrainingPreset
from rpujax.tile.lifecycle import post_update_step

PERFECT = IOParameters(is_perfect=True)


def pre_post(**kw) -> PrePostProcessingParameter:
    return PrePostProcessingParameter(input_range=InputRangeParameter(enable=True, **kw))


def fp_config(mapping=None, **ir) -> FloatingPointRPUConfig:
    return FloatingPointRPUConfig(mapping=mapping or MappingParameter(), pre_post=pre_post(**ir))


def close(a, b, rtol=2e-6, atol=2e-7):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def spec_range_grad(x, r, delta, *, gradient_relative=True, gradient_scale=1.0, decay=0.0, input_min=0.95):
    """Spec §2.4's gradient of r (clip and decay terms), in float64 numpy."""
    x, delta = np.asarray(x, np.float64), np.asarray(delta, np.float64)
    g = np.sum(np.minimum(delta * (x >= r), 0.0)) - np.sum(np.maximum(delta * (x <= -r), 0.0))
    if gradient_relative:
        g = g * r * gradient_scale
    if decay > 0 and np.mean(np.abs(x) < r) > input_min:
        g = g + decay * r
    return g


# ---------------------------------------------------------------------------------------------
# configs


def test_input_range_parameter_defaults_and_validation():
    p = InputRangeParameter()
    assert (p.enable, p.learn_input_range, p.init_value, p.init_from_data, p.init_std_alpha) == (
        False, True, 3.0, 100, 3.0,
    )
    assert (p.decay, p.input_min_percentage, p.manage_output_clipping, p.output_min_percentage) == (
        0.001, 0.95, False, 0.95,
    )
    assert (p.gradient_scale, p.gradient_relative, p.calibration_info) == (1.0, True, None)
    assert PrePostProcessingParameter().input_range == p
    for bad, field in (
        (dict(enable=1), "enable"),
        (dict(init_from_data=-1), "init_from_data"),
        (dict(init_from_data=2.5), "init_from_data"),
        (dict(decay=-0.1), "decay"),
        (dict(input_min_percentage=1.5), "input_min_percentage"),
        (dict(output_min_percentage=-0.1), "output_min_percentage"),
        (dict(init_value=float("nan")), "init_value"),
        (dict(calibration_info=[{}]), "calibration_info"),
    ):
        with pytest.raises(ValueError, match=f"InputRangeParameter.{field}"):
            InputRangeParameter(**bad)
    # a mapping becomes hashable pairs
    assert hash(InputRangeParameter(calibration_info={"b": 1, "a": 2})) is not None
    with pytest.raises(ValueError, match="pre_post"):
        SingleRPUConfig(pre_post=InputRangeParameter())


@pytest.mark.parametrize(
    "cls",
    [SingleRPUConfig, FloatingPointRPUConfig, InferenceRPUConfig, TorchInferenceRPUConfig, UnitCellRPUConfig,
     DigitalRankUpdateRPUConfig],
)
def test_every_rpu_config_has_pre_post_and_stays_hashable(cls):
    cfg = cls()
    assert cfg.pre_post == PrePostProcessingParameter()
    on = cls(pre_post=pre_post())
    assert hash(on) != hash(cfg) or on != cfg
    assert on.pre_post.input_range.enable


# ---------------------------------------------------------------------------------------------
# forward


def test_forward_clips_and_rescales_per_tile():
    """y = W·(clip(x, −|r|, |r|)/r)·r + b per tile, each tile of a grid with its own r."""
    cfg = fp_config(MappingParameter(max_input_size=3), init_from_data=0)
    layer = AnalogLinear(6, 4, cfg, rngs=nnx.Rngs(0))
    assert layer.grid_shape == (2, 1)
    assert isinstance(layer.input_range, nnx.Param) and layer.input_range.shape == (2, 1)
    close(layer.input_range[...], 3.0)
    r = jnp.array([[0.5], [1.5]])
    layer.input_range.set_value(r)
    w, b = layer.get_weights()
    x = 2.0 * jax.random.normal(jax.random.key(1), (7, 6))
    xc = jnp.concatenate([jnp.clip(x[:, :3], -0.5, 0.5), jnp.clip(x[:, 3:], -1.5, 1.5)], axis=1)
    assert bool(jnp.any(xc != x))
    expected = np.asarray(xc, np.float64) @ np.asarray(w, np.float64).T + np.asarray(b)
    for is_test in (False, True):
        layer.is_test = is_test
        close(layer(x), expected, rtol=1e-5, atol=1e-6)
    # a negative stored range clips at |r| and divides by r: the two signs cancel
    layer.input_range.set_value(-r)
    close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_disabled_input_range_adds_nothing():
    layer = AnalogLinear(4, 3, FloatingPointRPUConfig(), rngs=nnx.Rngs(0))
    assert layer.input_range is None and layer.input_range_update_idx is None
    assert "input_range" not in nnx.state(layer, nnx.Param)


# ---------------------------------------------------------------------------------------------
# data initialisation


def test_data_init_running_mean_then_stops_and_skips_zero_std():
    cfg = fp_config(init_value=5.0, init_from_data=3, init_std_alpha=2.0)
    layer = AnalogLinear(4, 2, cfg, rngs=nnx.Rngs(0))
    xs = [jax.random.normal(jax.random.key(i), (6, 4)) * (i + 1) for i in range(4)]
    s = [float(np.std(np.asarray(x, np.float64), ddof=1)) for x in xs]

    def state():
        return float(layer.input_range[...][0, 0]), int(layer.input_range_update_idx[...][0, 0])

    layer(xs[0])
    r, k = state()
    assert k == 1
    np.testing.assert_allclose(r, 2.0 * s[0], rtol=1e-5)  # k = 0: the initial value drops out
    layer(jnp.full((6, 4), 0.7))  # std = 0: not counted
    assert state() == (r, 1)
    layer(xs[1])
    r2 = (r * 1 + 2.0 * s[1]) / 2
    np.testing.assert_allclose(state()[0], r2, rtol=1e-5)
    layer(xs[2])
    r3 = (r2 * 2 + 2.0 * s[2]) / 3
    np.testing.assert_allclose(state()[0], r3, rtol=1e-5)
    assert state()[1] == 3
    before = state()
    layer(xs[3])  # init_from_data batches done
    assert state() == before


def test_data_init_not_in_eval_mode_and_per_tile_of_a_grid():
    cfg = fp_config(MappingParameter(max_input_size=3), init_from_data=5, init_std_alpha=3.0)
    layer = AnalogLinear(6, 2, cfg, rngs=nnx.Rngs(0))
    x = jnp.concatenate([jax.random.normal(jax.random.key(0), (8, 3)), 4 * jax.random.normal(jax.random.key(1), (8, 3))], 1)
    layer.eval()
    layer(x)
    close(layer.input_range[...], 3.0)
    assert int(jnp.sum(layer.input_range_update_idx[...])) == 0
    layer.train()
    layer(x)
    xn = np.asarray(x, np.float64)
    close(layer.input_range[...][:, 0], [3 * np.std(xn[:, :3], ddof=1), 3 * np.std(xn[:, 3:], ddof=1)], rtol=1e-5)


def test_fixed_input_range_is_not_a_param_but_still_initialised_from_data():
    cfg = fp_config(learn_input_range=False, init_from_data=2)
    layer = AnalogLinear(4, 2, cfg, rngs=nnx.Rngs(0))
    assert isinstance(layer.input_range, InputRange) and not isinstance(layer.input_range, nnx.Param)
    assert isinstance(layer.input_range_update_idx, InputRangeCounter)
    assert "input_range" not in nnx.state(layer, nnx.Param)
    x = jax.random.normal(jax.random.key(0), (5, 4))
    _, grads = optim.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(layer)
    assert "input_range" not in grads.params
    np.testing.assert_allclose(float(layer.input_range[...][0, 0]), 3 * np.std(np.asarray(x), ddof=1), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# gradients


def _clipping_example(r=0.8):
    """x with inputs above r and below −r, and a loss weight c giving both signs of δ there."""
    x = jnp.array(
        [
            [1.5, -0.2, -1.1, 0.3],
            [-2.0, 0.9, 0.1, -0.5],
            [0.4, -1.3, 2.2, 0.95],
            [-0.85, 0.6, -0.3, 1.7],
            [1.2, -1.6, 0.2, -0.1],
        ]
    )
    c = jax.random.normal(jax.random.key(3), (5, 3))
    return x, c


def test_range_gradient_is_the_spec_formula_not_autodiff():
    r = 0.8
    ir = dict(init_from_data=0, gradient_scale=2.0, decay=0.0)
    layer = AnalogLinear(4, 3, fp_config(**ir), bias=False, rngs=nnx.Rngs(0))
    layer.input_range.set_value(jnp.full((1, 1), r))
    w, _ = layer.get_weights()
    x, c = _clipping_example(r)
    delta = np.asarray(c, np.float64) @ np.asarray(w, np.float64)  # the tile's backward of g = c
    clipped = np.abs(np.asarray(x)) >= r
    # both sides clip with both signs of δ, so sign errors and min/max mix-ups change the result
    assert np.any((delta > 0) & (np.asarray(x) >= r)) and np.any((delta < 0) & (np.asarray(x) >= r))
    assert np.any((delta > 0) & (np.asarray(x) <= -r)) and np.any((delta < 0) & (np.asarray(x) <= -r))
    expected = spec_range_grad(x, r, delta, gradient_scale=2.0)
    autodiff = np.sum(delta * np.sign(np.asarray(x)) * clipped)  # d/dr of W·clip(x, −r, r)
    assert abs(expected - autodiff) > 0.1 and abs(expected - expected / r) > 0.1

    loss = lambda m, x: jnp.sum(c * m(x))  # noqa: E731
    grads = nnx.grad(loss)(layer, x)
    np.testing.assert_allclose(float(grads["input_range"][...][0, 0]), expected, rtol=1e-5, atol=1e-6)
    _, agrads = optim.value_and_grad(loss)(layer, x)
    np.testing.assert_allclose(float(agrads.params["input_range"][...][0, 0]), expected, rtol=1e-5, atol=1e-6)

    # gradient_relative=False: no r·gradient_scale factor
    layer2 = AnalogLinear(4, 3, fp_config(init_from_data=0, gradient_scale=2.0, decay=0.0, gradient_relative=False),
                          bias=False, rngs=nnx.Rngs(0))
    layer2.input_range.set_value(jnp.full((1, 1), r))
    g2 = nnx.grad(loss)(layer2, x)["input_range"][...][0, 0]
    np.testing.assert_allclose(float(g2), spec_range_grad(x, r, delta, gradient_relative=False), rtol=1e-5, atol=1e-6)


def test_input_gradient_is_straight_through_the_clip():
    r = 0.8
    layer = AnalogLinear(4, 3, fp_config(init_from_data=0), bias=False, rngs=nnx.Rngs(0))
    layer.input_range.set_value(jnp.full((1, 1), r))
    w, _ = layer.get_weights()
    x, c = _clipping_example(r)
    dx = nnx.grad(lambda m, x: jnp.sum(c * m(x)), argnums=1)(layer, x)
    # Wᵀg everywhere: clipped inputs are not zeroed and there is no r or 1/r factor
    close(dx, np.asarray(c, np.float64) @ np.asarray(w, np.float64), rtol=1e-5, atol=1e-6)


def test_decay_term_pulls_the_range_down_only_when_few_inputs_clip():
    r = 2.0
    ir = dict(init_from_data=0, decay=0.01, input_min_percentage=0.9)
    layer = AnalogLinear(4, 3, fp_config(**ir), bias=False, rngs=nnx.Rngs(0))
    layer.input_range.set_value(jnp.full((1, 1), r))
    x = 0.3 * jax.random.normal(jax.random.key(0), (6, 4))  # all inside the range
    loss = lambda m, x: jnp.sum(m(x))  # noqa: E731
    g = float(nnx.grad(loss)(layer, x)["input_range"][...][0, 0])
    np.testing.assert_allclose(g, 0.01 * r, rtol=1e-6)  # positive: gradient descent shrinks r
    x_big, _ = _clipping_example()
    layer.input_range.set_value(jnp.full((1, 1), 0.8))
    w, _ = layer.get_weights()
    delta = np.ones((5, 3)) @ np.asarray(w, np.float64)
    g = float(nnx.grad(loss)(layer, x_big)["input_range"][...][0, 0])
    # 11 of 20 inputs clip: p_in = 0.45 < 0.9, no decay term
    np.testing.assert_allclose(g, spec_range_grad(x_big, 0.8, delta, decay=0.01, input_min=0.9), rtol=1e-5, atol=1e-6)
    assert abs(spec_range_grad(x_big, 0.8, delta, decay=0.01, input_min=0.4) - g) > 1e-3


def test_manage_output_clipping_term():
    """The forward out-bound mask adds −f·r (f = clipped outputs / numel(δ)) when f > 1 − 0.95."""
    r, bound = 0.8, 0.3
    fwd = IOParameters(
        inp_res=0.0, out_res=0.0, out_noise=0.0, out_bound=bound,
        noise_management=NoiseManagementType.NONE, bound_management=BoundManagementType.NONE,
    )
    cfg = SingleRPUConfig(
        device=IdealDevice(), forward=fwd, backward=PERFECT,
        pre_post=pre_post(init_from_data=0, decay=0.0, manage_output_clipping=True),
    )
    layer = AnalogLinear(4, 3, cfg, bias=False, rngs=nnx.Rngs(0))
    layer.input_range.set_value(jnp.full((1, 1), r))
    w, _ = layer.get_weights()
    x, c = _clipping_example(r)
    wn = np.asarray(w, np.float64)
    xt = np.clip(np.asarray(x, np.float64), -r, r) / r
    y_raw = xt @ wn.T
    out_clipped = np.abs(np.clip(y_raw, -bound, bound)) >= 0.999 * bound
    f = out_clipped.sum() / x.size
    assert 1 - f < 0.95
    close(layer(x), np.clip(y_raw, -bound, bound) * r, rtol=1e-5, atol=1e-6)
    delta = (np.asarray(c, np.float64) * ~out_clipped) @ wn  # the tile's backward masks clipped outputs
    expected = spec_range_grad(x, r, delta) - f * r
    g = float(nnx.grad(lambda m, x: jnp.sum(c * m(x)))(layer, x)["input_range"][...][0, 0])
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_manage_output_clipping_needs_a_bounded_forward_without_management():
    with pytest.raises(ValueError, match="manage_output_clipping"):
        AnalogLinear(4, 3, fp_config(manage_output_clipping=True), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="noise_management"):
        AnalogLinear(4, 3, SingleRPUConfig(pre_post=pre_post(manage_output_clipping=True)), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------
# the update path


def test_pulsed_update_uses_the_clipped_and_scaled_input():
    """x_u = clip(x, −|r|, |r|)/r with the data-initialised r; d = g/s_map; one tile.update."""
    cfg = SingleRPUConfig(
        forward=PERFECT, backward=PERFECT, mapping=MappingParameter(weight_scaling_omega=0.5),
        pre_post=pre_post(init_from_data=1, init_std_alpha=1.0),
    )
    layer = AnalogLinear(5, 3, cfg, bias=False, rngs=nnx.Rngs(0))
    x = 1.5 * jax.random.normal(jax.random.key(1), (6, 5))
    c = jax.random.normal(jax.random.key(2), (6, 3))
    tiles0 = get_tiles(layer)
    (name,) = tiles0
    s_map = layer.tile_mapping_scales(0, 0)
    assert abs(float(s_map[0]) - 1.0) > 0.1
    _, grads = optim.value_and_grad(lambda m: jnp.sum(c * m(x)))(layer)
    r = float(np.std(np.asarray(x, np.float64), ddof=1))  # data init: 1·std(x), written back
    np.testing.assert_allclose(float(layer.input_range[...][0, 0]), r, rtol=1e-5)
    r32 = layer.input_range[...][0, 0]
    x_u = jnp.clip(x, -r32, r32) / r32
    assert float(jnp.max(jnp.abs(x_u))) == pytest.approx(1.0) and bool(jnp.any(jnp.abs(x) > r32))
    g = grads.tiles[name]
    close(g.x, x_u)
    close(g.d, c / s_map, rtol=1e-6)
    lr, key = 0.1, jax.random.key(7)
    k_upd, k_post = jax.random.split(jax.random.fold_in(key, 0))
    expected = post_update_step(tile.update(tiles0[name], x_u, c / s_map, lr, k_upd), k_post)
    r_before = layer.input_range[...]
    optim.AnalogOptimizer(layer, optim.analog_sgd(lr)).update(layer, grads, key)
    assert bool(jnp.all(get_tiles(layer)[name].weights == expected.weights))
    assert bool(jnp.any(expected.weights != tiles0[name].weights))
    # the digital optimizer steps r with its custom gradient
    close(layer.input_range[...], r_before - lr * grads.params["input_range"][...])


def test_inference_dense_gradient_uses_x_u_and_g_over_s_map():
    """Spec §1.14: the inference tile's weight gradient is (g/(s_map·λ))ᵀ·x_u."""
    cfg = InferenceRPUConfig(
        forward=PERFECT, mapping=MappingParameter(weight_scaling_omega=0.6, weight_scaling_columnwise=True),
        pre_post=pre_post(init_from_data=0),
    )
    layer = AnalogLinear(4, 3, cfg, bias=False, rngs=nnx.Rngs(0))
    layer.input_range.set_value(jnp.full((1, 1), 0.8))
    x, c = _clipping_example()
    _, grads = optim.value_and_grad(lambda m: jnp.sum(c * m(x)))(layer)
    (name,) = grads.tiles
    s_map = layer.tile_mapping_scales(0, 0)
    x_u = np.clip(np.asarray(x, np.float64), -0.8, 0.8) / 0.8
    expected = (np.asarray(c, np.float64) / np.asarray(s_map)).T @ x_u
    close(dense_gradient(get_tiles(layer)[name], grads.tiles[name]), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# presets


def test_standard_hwa_training_preset_fields():
    p = StandardHWATrainingPreset()
    assert isinstance(p, InferenceRPUConfig) and not isinstance(p, TorchInferenceRPUConfig)
    assert p.mapping == MappingParameter(
        weight_scaling_omega=1.0, weight_scaling_columnwise=True, max_input_size=512, max_output_size=0,
        digital_bias=True, learn_out_scaling=True, out_scaling_columnwise=True,
    )
    f = p.forward
    assert isinstance(f, PresetIOParameters)
    assert (f.inp_res, f.out_res, f.bound_management, f.noise_management, f.nm_thres) == (
        254, 254, BoundManagementType.NONE, NoiseManagementType.CONSTANT, 1.0,
    )
    assert (f.w_noise, f.w_noise_type, f.ir_drop, f.out_noise, f.out_bound) == (
        0.0175, WeightNoiseType.PCM_READ, 1.0, 0.04, 10.0,
    )
    # 254 steps over the full range [−1, 1]: a bin of 2/254
    np.testing.assert_allclose(f.inp_res_eff, 2.0 / 254, rtol=1e-6)
    np.testing.assert_allclose(f.out_res_eff, 20.0 / 254, rtol=1e-6)
    assert f.inp_sto_round is False and f.out_scale == 1.0
    assert p.remap.type is WeightRemapType.CHANNELWISE_SYMMETRIC and p.remap.remapped_wmax == 1.0
    assert p.noise_model == PCMLikeNoiseModel() and p.drift_compensation == GlobalDriftCompensation()
    assert p.clip.type is WeightClipType.FIXED_VALUE and p.clip.fixed_value == 1.0
    assert p.pre_post.input_range == InputRangeParameter(
        enable=True, init_value=3.0, init_from_data=100, init_std_alpha=3.0, decay=0.001,
        input_min_percentage=0.95, output_min_percentage=0.95, manage_output_clipping=False,
        gradient_scale=1.0, gradient_relative=True,
    )
    assert p.pre_post.input_range.learn_input_range
    hash(p)


def test_floating_point_preset_fields():
    p = FloatingPointPreset()
    assert isinstance(p, TorchInferenceRPUConfig)
    assert p.mapping == MappingParameter(max_input_size=0, max_output_size=0)
    assert p.forward == IOParameters(is_perfect=True)
    assert not p.pre_post.input_range.enable
    rest = TorchInferenceRPUConfig()
    for field in ("noise_model", "drift_compensation", "clip", "remap", "modifier"):
        assert getattr(p, field) == getattr(rest, field), field


def _train(rpu_config, steps=40, lr=0.05):
    model = AnalogLinear(12, 4, rpu_config, rngs=nnx.Rngs(0))
    w_t = jax.random.normal(jax.random.key(1), (4, 12)) / np.sqrt(12)
    opt = optim.AnalogOptimizer(model, optim.analog_sgd(lr))

    @nnx.jit
    def step(model, opt, x, key):
        loss, grads = optim.value_and_grad(lambda m: jnp.mean((m(x) - x @ w_t.T) ** 2))(model)
        opt.update(model, grads, key)
        return loss

    losses = []
    for i in range(steps):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(2), i), (32, 12))
        losses.append(float(step(model, opt, x, jax.random.key(100 + i))))
    return model, np.array(losses)


def test_standard_hwa_preset_trains():
    # the input range divides the effective logical step by r ≈ 3: a larger lr than the FP baseline
    model, losses = _train(StandardHWATrainingPreset(), lr=0.2)
    assert isinstance(model.input_range, nnx.Param)
    print("HWA losses", losses[:3], losses[-3:])
    assert np.all(np.isfinite(losses))
    assert losses[-5:].mean() < 0.3 * losses[:3].mean()  # measured: 1.5 -> 0.19
    # data init ran once per step (40 < 100 batches), r moved from its init value of 3
    assert int(model.input_range_update_idx[...][0, 0]) == 40
    assert abs(float(model.input_range[...][0, 0]) - 3.0) > 1e-3


def test_floating_point_preset_trains():
    model, losses = _train(FloatingPointPreset())
    assert model.input_range is None
    print("FP losses", losses[:3], losses[-3:])
    assert losses[-5:].mean() < 0.3 * losses[:3].mean()  # measured: 1.6 -> 0.24


def test_conv_layer_clips_its_patches():
    """A convolution's tile input is the im2col patch matrix: clipping it equals clipping the image
    (zero padding stays zero), so the output is the conv of the clipped image."""
    from rpujax.nn import AnalogConv1d

    cfg = fp_config(init_from_data=0)
    conv = AnalogConv1d(2, 3, 3, cfg, padding="VALID", bias=False, rngs=nnx.Rngs(0))
    conv.input_range.set_value(jnp.full((1, 1), 0.5))
    x = jax.random.normal(jax.random.key(0), (2, 7, 2))
    w, _ = conv.get_weights()  # (3, C_in·k) in (C_in, k) order
    k = np.asarray(w).reshape(3, 2, 3)
    xc = np.clip(np.asarray(x, np.float64), -0.5, 0.5)
    expected = np.stack(
        [np.einsum("bkc,ock->bo", xc[:, t : t + 3, :], k) for t in range(5)], axis=1
    )
    close(conv(x), expected, rtol=1e-5, atol=1e-6)
