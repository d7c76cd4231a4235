"""Inference rpu-config presets (aihwkit ``presets/inference.py``, spec cells-inference-api §6.3).

- :class:`StandardHWATrainingPreset`: hardware-aware training of an ``InferenceRPUConfig`` with
  a PCM-like 8-bit forward pass, column-wise weight scaling and remapping, learned output scales,
  a learned input range and a fixed weight clip at 1.
- :class:`FloatingPointPreset`: a ``TorchInferenceRPUConfig`` with an exact forward pass, one tile
  per layer and no input range (a floating-point baseline in the same training code).

Both are subclasses with other defaults, so any field can still be overridden.
"""

from __future__ import annotations

import dataclasses

from rpujax.configs.inference import (
    InferenceRPUConfig,
    TorchInferenceRPUConfig,
    WeightClipParameter,
    WeightClipType,
    WeightRemapParameter,
    WeightRemapType,
)
from rpujax.configs.io import BoundManagementType, IOParameters, NoiseManagementType, WeightNoiseType
from rpujax.configs.mapping import MappingParameter
from rpujax.configs.pre_post import InputRangeParameter, PrePostProcessingParameter
from rpujax.presets.utils import PresetIOParameters

__all__ = ["FloatingPointPreset", "StandardHWATrainingPreset"]


def _hwa_mapping() -> MappingParameter:
    return MappingParameter(
        weight_scaling_omega=1.0,
        weight_scaling_columnwise=True,
        max_input_size=512,
        max_output_size=0,
        digital_bias=True,
        learn_out_scaling=True,
        out_scaling_columnwise=True,
    )


def _hwa_forward() -> IOParameters:
    # resolutions > 1 are numbers of steps: 254 steps = a bin width of 1/254 of the full range
    return PresetIOParameters(
        inp_res=254.0,
        out_res=254.0,
        bound_management=BoundManagementType.NONE,
        noise_management=NoiseManagementType.CONSTANT,
        nm_thres=1.0,
        w_noise=0.0175,
        w_noise_type=WeightNoiseType.PCM_READ,
        ir_drop=1.0,
        out_noise=0.04,
        out_bound=10.0,
    )


def _hwa_pre_post() -> PrePostProcessingParameter:
    return PrePostProcessingParameter(
        input_range=InputRangeParameter(
            enable=True,
            init_value=3.0,
            init_from_data=100,
            init_std_alpha=3.0,
            decay=0.001,
            input_min_percentage=0.95,
            output_min_percentage=0.95,
            manage_output_clipping=False,
            gradient_scale=1.0,
            gradient_relative=True,
        )
    )


@dataclasses.dataclass(frozen=True)
class StandardHWATrainingPreset(InferenceRPUConfig):
    """Standard hardware-aware training setting (aihwkit ``StandardHWATrainingPreset``).

    * mapping: column-wise weight scaling to ``ω = 1``, learned column-wise output scales, digital
      bias, tiles of at most 512 inputs (outputs unlimited: ``max_output_size = 0``);
    * forward: :class:`~rpujax.presets.utils.PresetIOParameters` with 254-step (8-bit) DAC and ADC,
      no bound management, constant noise management (``nm_thres = 1``), PCM read weight noise
      0.0175, IR drop 1.0, output noise 0.04, output bound 10;
    * remap: channel-wise symmetric to ``remapped_wmax = 1``; clip: fixed value 1.0;
    * noise model ``PCMLikeNoiseModel()``, drift compensation ``GlobalDriftCompensation()``
      (the defaults);
    * input range enabled: initial 3.0, initialised from the first 100 batches (3 standard
      deviations), decay 0.001, relative gradient, no output-clipping management.
    """

    forward: IOParameters = dataclasses.field(default_factory=_hwa_forward)
    clip: WeightClipParameter = dataclasses.field(
        default_factory=lambda: WeightClipParameter(type=WeightClipType.FIXED_VALUE, fixed_value=1.0)
    )
    remap: WeightRemapParameter = dataclasses.field(
        default_factory=lambda: WeightRemapParameter(type=WeightRemapType.CHANNELWISE_SYMMETRIC, remapped_wmax=1.0)
    )
    mapping: MappingParameter = dataclasses.field(default_factory=_hwa_mapping)
    pre_post: PrePostProcessingParameter = dataclasses.field(default_factory=_hwa_pre_post)


@dataclasses.dataclass(frozen=True)
class FloatingPointPreset(TorchInferenceRPUConfig):
    """Floating-point baseline (aihwkit ``FloatingPointPreset``): a torch inference tile with an
    exact forward pass (``IOParameters(is_perfect=True)``), one tile per layer
    (``max_input_size = max_output_size = 0``) and the input range disabled; the other fields are
    the ``TorchInferenceRPUConfig`` defaults."""

    forward: IOParameters = dataclasses.field(default_factory=lambda: IOParameters(is_perfect=True))
    mapping: MappingParameter = dataclasses.field(
        default_factory=lambda: MappingParameter(max_input_size=0, max_output_size=0)
    )
    pre_post: PrePostProcessingParameter = dataclasses.field(
        default_factory=lambda: PrePostProcessingParameter(input_range=InputRangeParameter(enable=False))
    )
