"""How a logical layer maps onto tiles (aihwkit ``MappingParameter``, spec cells-inference-api §2.2)."""

from __future__ import annotations

import dataclasses

from rpujax.configs import _validation as v


@dataclasses.dataclass(frozen=True)
class MappingParameter:
    """Mapping of a layer onto one tile or a grid of tiles, and the digital periphery around it.

    Attributes:
      digital_bias: keep the bias as a digital parameter added after the analog MVM; ``False``
        makes it an extra analog weight column fed by a constant input of 1.
      weight_scaling_omega: if > 0, ``set_weights`` scales the weights so that ``max|W_tile| = ω``
        and keeps the scale digitally (0 = off).
      weight_scaling_columnwise: one scale per output row instead of one per tile.
      weight_scaling_lr_compensation: scale the tile learning rate by ``1/mean(scale)``.
      learn_out_scaling: add trainable output scales.
      out_scaling_columnwise: one learned scale per output instead of a scalar.
      max_input_size: most in-features (tile columns) per physical tile; 0 = no limit.
      max_output_size: most out-features (tile rows) per physical tile; 0 = no limit.
    """

    digital_bias: bool = True
    weight_scaling_omega: float = 0.0
    weight_scaling_columnwise: bool = False
    weight_scaling_lr_compensation: bool = False
    learn_out_scaling: bool = False
    out_scaling_columnwise: bool = False
    max_input_size: int = 512
    max_output_size: int = 512

    def __post_init__(self) -> None:
        for name in ("digital_bias", "weight_scaling_columnwise", "weight_scaling_lr_compensation",
                     "learn_out_scaling", "out_scaling_columnwise"):
            v.check_bool(self, name)
        v.check_finite(self, "weight_scaling_omega")
        v.check_int(self, "max_input_size", minimum=0)
        v.check_int(self, "max_output_size", minimum=0)
