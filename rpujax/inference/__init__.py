"""Inference tiles: noise models, programming, drift, drift compensation, hardware-aware training.

Typical use (spec cells-inference-api §4)::

    from rpujax import inference, tile
    from rpujax.configs import InferenceRPUConfig, WeightModifierParameter, WeightModifierType

    cfg = InferenceRPUConfig(modifier=WeightModifierParameter(type="ADD_NORMAL", std_dev=0.05))
    state = tile.init(key, 64, 128, cfg)
    state = tile.set_weights(state, w)
    # hardware-aware training: y = inference.forward(state, x, k) inside the loss, the dense
    # weight gradient goes to any optax optimizer, then after every step:
    state = inference.post_update_step(state, k)
    # inference:
    state = inference.program_weights(state, k)
    state = inference.drift_weights(state, 3600.0, k)        # 1 hour after programming
    y = inference.forward(state, x, k, is_test=True)        # includes drift compensation
    mean, std = inference.evaluate_over_time(model, metric_fn, key=k, n_seeds=20)
"""

from rpujax.inference.converters import from_conductances, to_conductances
from rpujax.inference.evaluate import INFERENCE_TIMES, evaluate_over_time, program_and_drift
from rpujax.inference.modifiers import (
    clip_weights,
    clip_weights_torch,
    modifier_amax,
    modify_weights,
    modify_weights_torch,
    remap_weights,
    remap_weights_torch,
)
from rpujax.inference.noise import (
    apply_drift_noise,
    apply_noise,
    apply_programming_noise,
    check_inference_time,
    drift_coefficients,
    drift_noise_to_conductance,
    programming_noise_to_conductance,
)
from rpujax.inference.tile import (
    drift_compensation_readout,
    drift_weights,
    forward,
    forward_with_state,
    init_inference_aux,
    is_programmed,
    post_update_step,
    program_weights,
)

__all__ = [
    "INFERENCE_TIMES",
    "apply_drift_noise",
    "apply_noise",
    "apply_programming_noise",
    "check_inference_time",
    "clip_weights",
    "clip_weights_torch",
    "drift_coefficients",
    "drift_compensation_readout",
    "drift_noise_to_conductance",
    "drift_weights",
    "evaluate_over_time",
    "forward",
    "forward_with_state",
    "from_conductances",
    "init_inference_aux",
    "is_programmed",
    "modifier_amax",
    "modify_weights",
    "modify_weights_torch",
    "post_update_step",
    "program_and_drift",
    "program_weights",
    "programming_noise_to_conductance",
    "remap_weights",
    "remap_weights_torch",
    "to_conductances",
]
