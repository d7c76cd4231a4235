"""The tile state: one immutable pytree per analog crossbar tile.

Every tile function takes a :class:`TileState` and returns a new one; nothing is mutated. Array
leaves carry everything that changes or that differs between device-to-device draws; the rpu
config is a static field, so it is part of the compiled program rather than traced data. A batch of
tiles is a ``TileState`` whose leaves have a leading axis (``jax.vmap(init)(keys)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array


@struct.dataclass
class TileState:
    """State of one analog tile (aihwkit: an ``RPUPulsed`` C++ tile).

    Attributes:
      weights: ``(D, X)`` apparent weights used by forward/backward (``X = in_size + 1`` when the
        bias is an analog column). In device units (aihwkit's raw tile weights).
      device: per-cross-point device parameters keyed by aihwkit's hidden-parameter names
        (``max_bound``, ``min_bound``, ``dwmin_up``, ``dwmin_down``, ``decay_scales``,
        ``diffusion_rates``, ``reset_bias``, ``drift_nu``, device extras such as ``slope_up``,
        ``gamma_up``, ``reference``, and ``persistent_weights`` when write noise is on), each
        ``(D, X)``. Empty for floating-point tiles. Compound devices (unit cells, the transfer
        family, mixed precision; :mod:`rpujax.cells`) stack their sub-devices on a leading axis:
        ``hidden_weights`` is ``(n_devices, D, X)`` and every sub-device parameter is
        ``(n_devices, D, X)`` under its single-device name.
      fwd: forward periphery parameters sampled at construction (spec tile-core §1.5), keyed by
        aihwkit's names (``v_offset``, ``w_asymmetry``, ``out_nonlinearity``,
        ``out_nonlinearity_factor``, ``out_noise_values``); only the ones the IO config uses.
      bwd: the same for the backward pass (per-output arrays have length X).
      nm_value: running value of ``AVERAGE_ABS_MAX`` noise management, ``-1`` while unset; shared by
        forward and backward, as on aihwkit's CPU tile.
      hidden_update_index: index of the sub-device updated next (0 for single devices).
      drift: dynamic drift state (``w0``, ``t``, ``prev``, ``current_t``, ``initialized``) when the
        device drifts, else empty.
      aux: bookkeeping beyond the weights: compound devices (``aux['cell']``: transfer counters,
        buffers, choppers), inference tiles (compensation ``alpha``, programmed weights, drift
        coefficients, modifier weights) and the delta-weight buffer.
      rpu_config: the (hashable, static) rpu config this tile was built from.
      bias: whether the last weight column is an analog bias (``X = in_size + 1``).
    """

    weights: Array
    device: dict[str, Array] = struct.field(default_factory=dict)
    fwd: dict[str, Array] = struct.field(default_factory=dict)
    bwd: dict[str, Array] = struct.field(default_factory=dict)
    nm_value: Array = struct.field(default_factory=lambda: jnp.asarray(-1.0, jnp.float32))
    hidden_update_index: Array = struct.field(default_factory=lambda: jnp.asarray(0, jnp.int32))
    drift: dict[str, Array] = struct.field(default_factory=dict)
    aux: dict[str, Any] = struct.field(default_factory=dict)
    rpu_config: Any = struct.field(pytree_node=False, default=None)
    bias: bool = struct.field(pytree_node=False, default=False)

    @property
    def out_size(self) -> int:
        """Number of tile outputs D (rows of the weight matrix)."""
        return self.weights.shape[-2]

    @property
    def x_size(self) -> int:
        """Number of weight columns X (``in_size + 1`` with an analog bias)."""
        return self.weights.shape[-1]

    @property
    def in_size(self) -> int:
        """Number of logical inputs (without the analog bias column)."""
        return self.x_size - (1 if self.bias else 0)
