"""Digital pre- and post-processing around a tile (aihwkit ``PrePostProcessingParameter``).

Spec cells-inference-api §2.4: the learned (or fixed) input range of each tile. The behaviour
(clip and rescale of the tile input, data initialisation, the custom gradient of the range) lives
in :mod:`rpujax.nn.input_range` and the analog layers; these are the frozen, hashable settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rpujax.configs import _validation as v

__all__ = ["InputRangeParameter", "PrePostProcessingParameter"]


@dataclasses.dataclass(frozen=True)
class InputRangeParameter:
    """Input range ``r`` of each tile: the input is clipped to ``[-|r|, |r|]`` and divided by ``r``
    before the tile, and the output multiplied by ``r`` after it (spec §1.4, §2.4).

    Attributes:
      enable: turn input-range clipping (and learning) on.
      learn_input_range: ``r`` is a trainable parameter (``nnx.Param``); otherwise a fixed buffer
        (still initialised from data).
      init_value: initial ``r`` (input units).
      init_from_data: number of training-mode forward passes (batches) whose input standard
        deviation initialises ``r`` as a running mean; 0 switches data initialisation off.
      init_std_alpha: multiplier of the input standard deviation in the data initialisation.
      decay: weight of the shrink term of the gradient of ``r`` (0 = off).
      input_min_percentage: the shrink term acts only while the fraction of unclipped inputs
        exceeds this.
      manage_output_clipping: add a gradient term that enlarges ``r`` when tile outputs clip
        (needs a non-perfect forward IO without noise and bound management).
      output_min_percentage: the output-clipping term acts only while the fraction of unclipped
        outputs is below this.
      gradient_scale: multiplier of the clip gradient (only with ``gradient_relative``).
      gradient_relative: multiply the clip gradient by ``r`` (and ``gradient_scale``).
      calibration_info: informational only (``None``, a string, a number or a tuple; a mapping is
        stored as a sorted tuple of ``(key, value)`` pairs so that the config stays hashable).
    """

    enable: bool = False
    learn_input_range: bool = True
    init_value: float = 3.0
    init_from_data: int = 100
    init_std_alpha: float = 3.0
    decay: float = 0.001
    input_min_percentage: float = 0.95
    manage_output_clipping: bool = False
    output_min_percentage: float = 0.95
    gradient_scale: float = 1.0
    gradient_relative: bool = True
    calibration_info: Any = None

    def __post_init__(self) -> None:
        for name in ("enable", "learn_input_range", "manage_output_clipping", "gradient_relative"):
            v.check_bool(self, name)
        v.check_finite(self, "init_value")
        v.check_int(self, "init_from_data", minimum=0)
        v.check_finite(self, "init_std_alpha")
        v.check_non_negative(self, "decay")
        v.check_range(self, "input_min_percentage", 0.0, 1.0)
        v.check_range(self, "output_min_percentage", 0.0, 1.0)
        v.check_finite(self, "gradient_scale")
        if self.enable and self.init_value == 0.0 and self.init_from_data == 0:
            # r = 0 divides by zero in the forward pass and no data initialisation would fix it
            raise ValueError(
                "InputRangeParameter.init_value = 0.0: expected a non-zero input range when init_from_data = 0"
            )
        info = self.calibration_info
        if isinstance(info, Mapping):
            object.__setattr__(self, "calibration_info", tuple(sorted((str(k), val) for k, val in info.items())))
        elif isinstance(info, list):
            object.__setattr__(self, "calibration_info", tuple(info))
        try:
            hash(self.calibration_info)
        except TypeError as err:
            raise ValueError(
                f"InputRangeParameter.calibration_info = {info!r}: expected None, a string, a number, a tuple "
                "or a mapping of hashable values (the config must stay hashable)"
            ) from err


@dataclasses.dataclass(frozen=True)
class PrePostProcessingParameter:
    """Digital processing before and after each tile (aihwkit ``PrePostProcessingParameter``).

    Attributes:
      input_range: the input range of each tile (:class:`InputRangeParameter`; off by default).
    """

    input_range: InputRangeParameter = dataclasses.field(default_factory=InputRangeParameter)

    def __post_init__(self) -> None:
        v.check_instance(self, "input_range", InputRangeParameter)
