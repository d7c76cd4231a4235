"""Flax nnx analog layers: ``AnalogLinear``, ``AnalogConv1d``, ``AnalogConv2d``.

A layer holds a grid of tiles (spec cells-inference-api §2.3) and the digital periphery around
each tile (§1.4–§1.7, tile-core §6.4):

* ``tiles`` (:class:`AnalogTiles`): ``tiles[i][j]`` is the :class:`~rpujax.tile.TileState` of
  input piece ``i`` and output piece ``j``. Not an ``nnx.Param``: optax never sees it; the analog
  optimizer (:mod:`rpujax.optim`) updates it.
* ``mapping_scales`` (:class:`MappingScales`): the digital weight-scaling factors ``s_map`` set by
  ``set_weights`` with ``weight_scaling_omega > 0``; shape ``(n_in, n_out)`` (one per tile) or
  ``(n_in, out_features)`` (per output, ``weight_scaling_columnwise``). Ones otherwise.
* ``out_scaling_alpha`` (``nnx.Param``, with ``learn_out_scaling``): learned output scales
  ``s_out``, ``(n_in, n_out)`` or ``(n_in, out_features)`` (``out_scaling_columnwise``).
* ``bias`` (``nnx.Param``, ``(out_features,)``): the digital bias (``mapping.digital_bias``, or
  always for a tile grid). Otherwise a bias is an analog last column of the single tile.
* ``input_range`` (with ``rpu_config.pre_post.input_range.enable``): one range ``r`` per tile,
  ``(n_in, n_out)``; an ``nnx.Param`` with ``learn_input_range``, else an :class:`InputRange`
  buffer. ``input_range_update_idx`` (:class:`InputRangeCounter`, ``(n_in, n_out)`` int32): the
  data-initialisation counter ``k`` of each tile. See :mod:`rpujax.nn.input_range`.

Forward, per tile (spec §1.4): with an input range, training mode first runs the data
initialisation of ``r`` (written back to the layer, no gradient through it) and the tile sees
``x̃ = clip(x_i, −|r|, |r|)/r``; ``y = tile_forward(x̃) (· r) · s_map`` — then, inside
:func:`rpujax.optim.value_and_grad`, plus the zero perturbation that captures the update error
(:mod:`rpujax.nn.capture`) — ``· s_out``; outputs are concatenated over output pieces, summed over
input pieces, and the digital bias is added. The gradient w.r.t. the input is the tiles' analog
backward pass with the out-bound mask (``tile.forward``'s VJP), straight-through the input range;
the gradient of ``r`` is spec §2.4's formula only (:mod:`rpujax.nn.input_range`). The pulsed
update (and an inference tile's dense gradient) uses ``x_u = clip(x_i, −|r|, |r|)/r`` with the
``r`` of the forward pass.

Randomness: each layer owns an ``nnx.RngStream`` tagged ``"analog"`` (drawn from
``rngs['analog']``, which falls back to ``rngs.default``), used for the forward-pass noise when no
key is passed to the call; ``nnx.reseed(model, analog=key)`` resets all of them. Tile ``(i, j)``
of a call uses ``fold_in(key, i·n_out + j)``.

Training vs eval: ``layer.is_test`` (aihwkit: ``not module.training``). ``model.eval()`` /
``model.train()`` set it through the ``deterministic`` alias, like Flax's ``Dropout``. In eval
mode inference tiles apply drift compensation and no update error is captured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rpujax import tile
from rpujax.configs.inference import InferenceRPUConfig, TorchInferenceRPUConfig
from rpujax.configs.io import BoundManagementType, NoiseManagementType
from rpujax.configs.mapping import MappingParameter
from rpujax.configs.pre_post import InputRangeParameter
from rpujax.nn import input_range as ir_ops
from rpujax.nn.capture import active_capture
from rpujax.nn.mapping import lr_scale, scale_weights, tile_grid_sizes, uses_tile_array

Array = jax.Array

__all__ = [
    "AnalogConv",
    "AnalogConv1d",
    "AnalogConv2d",
    "AnalogLayer",
    "AnalogLinear",
    "AnalogTiles",
    "InputRange",
    "InputRangeCounter",
    "MappingScales",
    "is_inference_config",
]


class AnalogTiles(nnx.Variable):
    """A grid of tile states, ``value[i][j]`` for input piece ``i`` and output piece ``j``."""


class MappingScales(nnx.Variable):
    """Digital mapping scales ``s_map`` of the tiles of a layer (a buffer, not trained)."""


class InputRange(nnx.Variable):
    """Fixed (not learned) input ranges ``r`` of the tiles of a layer, ``(n_in, n_out)``."""


class InputRangeCounter(nnx.Variable):
    """Data-initialisation counters of the tiles' input ranges, ``(n_in, n_out)`` int32."""


def _input_range_params(rpu_config: Any) -> InputRangeParameter | None:
    """The config's input-range settings if enabled, else None."""
    pre_post = getattr(rpu_config, "pre_post", None)
    params = None if pre_post is None else pre_post.input_range
    return params if params is not None and params.enable else None


def _check_output_clipping(rpu_config: Any, params: InputRangeParameter) -> None:
    """aihwkit's config check for ``manage_output_clipping`` (a ``ConfigError`` there)."""
    if not params.manage_output_clipping:
        return
    fwd = rpu_config.forward
    if (
        fwd.is_perfect
        or fwd.noise_management is not NoiseManagementType.NONE
        or fwd.bound_management is not BoundManagementType.NONE
        or not math.isfinite(fwd.out_bound)
        or fwd.out_bound <= 0
    ):
        raise ValueError(
            f"{type(rpu_config).__name__}.pre_post.input_range.manage_output_clipping = True needs a non-perfect "
            "forward IO with noise_management = NONE, bound_management = NONE and a finite out_bound > 0 "
            f"(got is_perfect={fwd.is_perfect}, noise_management={fwd.noise_management.name}, "
            f"bound_management={fwd.bound_management.name}, out_bound={fwd.out_bound})"
        )


def is_inference_config(rpu_config: Any) -> bool:
    """Whether tiles of this config are inference tiles (dense-gradient, hardware-aware training)."""
    return isinstance(rpu_config, InferenceRPUConfig)


def _check_size(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} = {value!r}: expected an int >= 1")
    return int(value)


def _offsets(sizes: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)]))


def _key_from(rngs: Any) -> Array:
    """A key from a call-time ``rngs`` argument (key array, ``RngStream`` or ``Rngs``)."""
    if isinstance(rngs, nnx.Rngs):
        return rngs["analog"]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        if jnp.issubdtype(rngs.dtype, jax.dtypes.prng_key):
            return rngs
        return jax.random.wrap_key_data(rngs)
    raise TypeError(f"rngs must be a jax.random key, an nnx.RngStream or nnx.Rngs, got {type(rngs).__name__}")


class AnalogLayer(nnx.Module):
    """Shared core of the analog layers: a logical ``(out_features, in_features)`` matrix on tiles.

    Subclasses turn their inputs into rows of ``in_features`` values (a linear layer: the last
    axis; a convolution: im2col patches) and call :meth:`analog_matmul`.

    Attributes:
      in_features: logical inputs of the matrix (for a convolution ``C_in · prod(kernel_size)``).
      out_features: logical outputs.
      rpu_config: the (static, hashable) rpu config of every tile.
      in_sizes, out_sizes: the tile grid (spec §2.3); one tile for each pair.
      is_array: whether aihwkit would build a ``TileModuleArray`` (then the bias is digital).
      analog_bias: whether the bias is an analog column of the (single) tile.
      is_test: eval mode.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rpu_config: Any,
        *,
        bias: bool,
        rngs: nnx.Rngs,
    ):
        in_features = _check_size("in_features", in_features)
        out_features = _check_size("out_features", out_features)
        if not isinstance(bias, bool):
            raise ValueError(f"bias = {bias!r}: expected True or False")
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        mapping = getattr(rpu_config, "mapping", None)
        if not isinstance(mapping, MappingParameter):
            raise TypeError(
                f"rpu_config must be an rpu config with a MappingParameter .mapping (SingleRPUConfig, "
                f"FloatingPointRPUConfig, InferenceRPUConfig, ...), got {type(rpu_config).__name__}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.rpu_config = rpu_config
        self.in_sizes, self.out_sizes = tile_grid_sizes(out_features, in_features, mapping)
        self.is_array = uses_tile_array(out_features, in_features, mapping)
        self.analog_bias = bias and not self.is_array and not mapping.digital_bias
        self.use_bias = bias
        self.is_test = False

        k_tiles, k_w, k_b, k_set = jax.random.split(rngs.params(), 4)
        self.rngs = nnx.RngStream(rngs["analog"](), tag="analog")
        n_out = len(self.out_sizes)
        grid = tuple(
            tuple(
                tile.init(jax.random.fold_in(k_tiles, i * n_out + j), o, n, rpu_config, bias=self.analog_bias)
                for j, o in enumerate(self.out_sizes)
            )
            for i, n in enumerate(self.in_sizes)
        )
        self.tiles = AnalogTiles(grid)
        self.mapping_scales = MappingScales(jnp.ones(self._scale_shape(mapping.weight_scaling_columnwise)))
        if mapping.learn_out_scaling:
            self.out_scaling_alpha = nnx.Param(jnp.ones(self._scale_shape(mapping.out_scaling_columnwise)))
        else:
            self.out_scaling_alpha = nnx.data(None)
        digital_bias = bias and not self.analog_bias
        self.bias = nnx.Param(jnp.zeros((out_features,))) if digital_bias else nnx.data(None)
        ir = _input_range_params(rpu_config)
        if ir is not None:
            _check_output_clipping(rpu_config, ir)
            r0 = jnp.full((len(self.in_sizes), n_out), ir.init_value, jnp.float32)
            self.input_range = nnx.Param(r0) if ir.learn_input_range else InputRange(r0)
            self.input_range_update_idx = InputRangeCounter(jnp.zeros(r0.shape, jnp.int32))
        else:
            self.input_range = nnx.data(None)
            self.input_range_update_idx = nnx.data(None)

        # aihwkit layers overwrite the tile's initial weights with torch's default initialisation
        # (uniform in ±1/sqrt(fan_in) for weights and bias), through set_weights and its scaling.
        bound = 1.0 / math.sqrt(in_features)
        w = jax.random.uniform(k_w, (out_features, in_features), jnp.float32, -bound, bound)
        b = jax.random.uniform(k_b, (out_features,), jnp.float32, -bound, bound) if bias else None
        self.set_weights(w, b, key=k_set)

    # ------------------------------------------------------------------------------------------
    # modes

    @property
    def deterministic(self) -> bool:
        """Alias of ``is_test`` so that ``model.eval()`` / ``model.train()`` switch analog layers."""
        return self.is_test

    @deterministic.setter
    def deterministic(self, value: bool) -> None:
        self.is_test = bool(value)

    # ------------------------------------------------------------------------------------------
    # grid helpers

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(number of input pieces, number of output pieces)``."""
        return len(self.in_sizes), len(self.out_sizes)

    def _scale_shape(self, columnwise: bool) -> tuple[int, int]:
        return (len(self.in_sizes), self.out_features if columnwise else len(self.out_sizes))

    def _tile_scale(self, scales: Array, i: int, j: int, columnwise: bool) -> Array:
        """The ``(1,)`` or ``(out_j,)`` slice of a per-layer scale array that belongs to tile (i, j)."""
        if columnwise:
            o = _offsets(self.out_sizes)
            return scales[i, o[j] : o[j + 1]]
        return scales[i, j : j + 1]

    def tile_mapping_scales(self, i: int, j: int) -> Array:
        """``s_map`` of tile (i, j): ``(1,)`` or ``(out_j,)``."""
        return self._tile_scale(self.mapping_scales.get_value(), i, j, self.rpu_config.mapping.weight_scaling_columnwise)

    def tile_out_scales(self, i: int, j: int) -> Array | None:
        """Learned ``s_out`` of tile (i, j), or None without ``learn_out_scaling``."""
        if self.out_scaling_alpha is None:
            return None
        return self._tile_scale(self.out_scaling_alpha[...], i, j, self.rpu_config.mapping.out_scaling_columnwise)

    def tile_input_range(self, i: int, j: int) -> Array | None:
        """Input range ``r`` (scalar) of tile (i, j), or None without an input range."""
        if self.input_range is None:
            return None
        return self.input_range[...][i, j]

    # ------------------------------------------------------------------------------------------
    # weights

    def set_weights(self, weight: Array, bias: Array | None = None, *, key: Array | None = None) -> None:
        """Write the logical weights (aihwkit ``set_weights``, spec §1.7, §2.3).

        Each tile gets its slice of ``weight`` (and the analog bias column, if any); with
        ``mapping.weight_scaling_omega > 0`` each tile stores ``W/α`` with ``max|W/α| = ω`` (per row
        if columnwise) and keeps ``α`` as its mapping scales, resetting its learned out scales to 1.
        With ``ω <= 0`` the weights are written unchanged and the scales kept. Writing clips to the
        device bounds.

        Args:
          weight: ``(out_features, in_features)``.
          bias: ``(out_features,)``; goes to the digital bias, or into the analog bias column.
          key: needed only for devices that draw write noise when weights are set.
        """
        weight = jnp.asarray(weight, jnp.float32)
        if weight.shape != (self.out_features, self.in_features):
            raise ValueError(
                f"set_weights: weight has shape {weight.shape}, expected {(self.out_features, self.in_features)}"
            )
        if bias is not None:
            bias = jnp.asarray(bias, jnp.float32)
            if not self.use_bias:
                raise ValueError("set_weights: bias given but the layer was built with bias=False")
            if bias.shape != (self.out_features,):
                raise ValueError(f"set_weights: bias has shape {bias.shape}, expected {(self.out_features,)}")
        elif self.analog_bias:
            raise ValueError("set_weights: this layer has an analog bias column; pass bias")
        mapping = self.rpu_config.mapping
        oi, oo = _offsets(self.in_sizes), _offsets(self.out_sizes)
        n_out = len(self.out_sizes)
        grid = self.tiles.get_value()
        s_map = self.mapping_scales.get_value()
        s_out = None if self.out_scaling_alpha is None else self.out_scaling_alpha[...]
        new_grid = []
        for i in range(len(self.in_sizes)):
            row = []
            for j in range(n_out):
                w = weight[oo[j] : oo[j + 1], oi[i] : oi[i + 1]]
                if self.analog_bias:
                    w = jnp.concatenate([w, bias[:, None]], axis=1)
                w, scales = scale_weights(w, mapping.weight_scaling_omega, mapping.weight_scaling_columnwise)
                k = None if key is None else jax.random.fold_in(key, i * n_out + j)
                row.append(tile.set_weights(grid[i][j], w, key=k))
                if scales is not None:
                    s_map = self._set_tile_scale(s_map, scales, i, j, mapping.weight_scaling_columnwise)
                    if s_out is not None:
                        ones = jnp.ones((self.out_sizes[j],))
                        s_out = self._set_tile_scale(s_out, ones, i, j, mapping.out_scaling_columnwise)
            new_grid.append(tuple(row))
        self.tiles.set_value(tuple(new_grid))
        self.mapping_scales.set_value(s_map)
        if s_out is not None:
            self.out_scaling_alpha.set_value(s_out)
        if self.bias is not None and bias is not None:
            self.bias.set_value(bias)

    def _set_tile_scale(self, scales: Array, value: Array, i: int, j: int, columnwise: bool) -> Array:
        if columnwise:
            o = _offsets(self.out_sizes)
            return scales.at[i, o[j] : o[j + 1]].set(jnp.broadcast_to(value, (self.out_sizes[j],)))
        if value.shape != (1,):
            raise ValueError(
                f"a per-output scale of shape {value.shape} cannot be stored in a per-tile scale array "
                f"of shape {scales.shape}"
            )
        return scales.at[i, j].set(value[0])

    def get_weights(self) -> tuple[Array, Array | None]:
        """The logical weights ``(W (out, in), bias (out,) or None)`` (aihwkit ``get_weights``).

        Tile weights times ``s_map · s_out`` per output row (analog bias column too); the digital
        bias as stored.
        """
        grid = self.tiles.get_value()
        cols = []
        analog_b = None
        for i in range(len(self.in_sizes)):
            rows = []
            for j in range(len(self.out_sizes)):
                w, b = tile.get_weights(grid[i][j])
                s = self.tile_mapping_scales(i, j)
                s_out = self.tile_out_scales(i, j)
                if s_out is not None:
                    s = s * s_out
                rows.append(w * s[:, None])
                if b is not None:
                    analog_b = b * s
            cols.append(jnp.concatenate(rows, axis=0))
        weight = jnp.concatenate(cols, axis=1)
        if self.analog_bias:
            return weight, analog_b
        return weight, (None if self.bias is None else self.bias[...])

    # ------------------------------------------------------------------------------------------
    # forward

    def _call_key(self, rngs: Any) -> Array:
        return self.rngs() if rngs is None else _key_from(rngs)

    def analog_matmul(self, x: Array, key: Array) -> Array:
        """``(N, in_features) -> (N, out_features)`` through the tile grid and the periphery.

        Updates the tiles' running state (noise-management value) and, in training mode with an
        input range, the data-initialised ranges and their counters. See the module docstring for
        the data flow.
        """
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"analog_matmul: x has shape {tuple(x.shape)}, expected (N, {self.in_features})")
        from rpujax import inference  # noqa: PLC0415 - imported late: inference imports tile helpers

        cfg = self.rpu_config
        inference_tiles = is_inference_config(cfg)
        fwd = inference.forward_with_state if inference_tiles else tile.forward_with_state
        ctx = None if self.is_test else active_capture()
        compensate = cfg.mapping.weight_scaling_lr_compensation
        oi = _offsets(self.in_sizes)
        n_out = len(self.out_sizes)
        grid = self.tiles.get_value()
        ir = _input_range_params(cfg) if self.input_range is not None else None
        ranges = None if ir is None else self._input_ranges(x, ir)
        # the torch inference tile has no output-clipping term (spec §4.10)
        manage_out = ir is not None and ir.manage_output_clipping and not isinstance(cfg, TorchInferenceRPUConfig)
        total = None
        new_grid = []
        for i in range(len(self.in_sizes)):
            x_i = x[:, oi[i] : oi[i + 1]]
            row, outs = [], []
            for j in range(n_out):
                state = grid[i][j]
                x_t = x_i if ranges is None else ir_ops.clip_input(ir, x_i, ranges[i, j])
                y, new_state = fwd(state, x_t, jax.random.fold_in(key, i * n_out + j), is_test=self.is_test)
                row.append(new_state)
                if ranges is not None:
                    frac = self._clipped_fraction(state, y, x_i.size) if manage_out else jnp.zeros((), y.dtype)
                    y = ir_ops.scale_output(ir, y, ranges[i, j], frac)
                s_map = self.tile_mapping_scales(i, j)
                y = y * s_map
                if ctx is not None:
                    lam = lr_scale(s_map, compensate)
                    s_total = s_map if lam is None else s_map * lam
                    if inference_tiles and "mapping_scales" in state.aux:
                        s_total = s_total * state.aux["mapping_scales"]
                    # the update input is x_u = clip(x, −|r|, |r|)/r (spec §1.6); the perturbation is
                    # added after the r and s_map factors, so ∂L/∂p is still g/(s_map·λ)
                    y = ctx.tap(self, i, j, x_t, y, 1.0 / s_total, lam)
                s_out = self.tile_out_scales(i, j)
                if s_out is not None:
                    y = y * s_out
                outs.append(y)
            y_i = outs[0] if n_out == 1 else jnp.concatenate(outs, axis=-1)
            total = y_i if total is None else total + y_i
            new_grid.append(tuple(row))
        if cfg.forward.noise_management is NoiseManagementType.AVERAGE_ABS_MAX:
            # the only forward state: the running NM value (written only when it can change, so
            # that a layer without it stays a pure function, e.g. under a plain jax.grad)
            self.tiles.set_value(tuple(new_grid))
        if self.bias is not None:
            total = total + self.bias[...]
        return total

    def _input_ranges(self, x: Array, ir: InputRangeParameter) -> Array:
        """The ``(n_in, n_out)`` ranges of this call; in training mode after the data init (spec §2.4).

        The data-initialised values and counters are written back to the layer. Gradients flow to
        the stored range as if the data init were a constant shift (``r + stop_gradient(r' − r)``),
        so the gradient step applies to the initialised value, as in aihwkit.
        """
        r = self.input_range[...]
        if self.is_test or ir.init_from_data == 0:
            return r
        k = self.input_range_update_idx[...]
        oi = _offsets(self.in_sizes)
        new_r, new_k = r, k
        for i in range(len(self.in_sizes)):
            x_i = x[:, oi[i] : oi[i + 1]]
            for j in range(len(self.out_sizes)):
                r_ij, k_ij = ir_ops.data_init(ir, r[i, j], k[i, j], x_i)
                new_r = new_r.at[i, j].set(r_ij)
                new_k = new_k.at[i, j].set(k_ij)
        r_eff = r + jax.lax.stop_gradient(new_r - r)
        self.input_range.set_value(r_eff)
        self.input_range_update_idx.set_value(new_k)
        return r_eff

    def _clipped_fraction(self, state: Any, y: Array, n_delta: int) -> Array:
        """Outputs at the forward out bound over ``numel(δ)`` (spec §2.4 ``manage_output_clipping``)."""
        from rpujax.tile.mvm import out_bound_mask  # noqa: PLC0415

        y_raw = jax.lax.stop_gradient(y)
        if "mapping_scales" in state.aux:
            # inference tiles return the remap scales already applied; the bound is on the tile output
            y_raw = y_raw / state.aux["mapping_scales"]
        clipped = jnp.sum(~out_bound_mask(self.rpu_config.forward, y_raw))
        return (clipped / n_delta).astype(y.dtype)

    def _as_input(self, x: Any) -> Array:
        # Tiles compute in float32 (their weights' dtype); integer or float64 inputs are cast.
        return jnp.asarray(x).astype(jnp.float32)

    def _like(self, rpu_config: Any, rngs: nnx.Rngs) -> AnalogLayer:
        """A new layer of the same geometry with another rpu config (weights not copied)."""
        raise NotImplementedError


class AnalogLinear(AnalogLayer):
    """Analog fully connected layer (aihwkit ``AnalogLinear``): ``y = W x + b`` on analog tiles.

    Args:
      in_features: number of inputs.
      out_features: number of outputs.
      rpu_config: the tile config (``SingleRPUConfig``, ``FloatingPointRPUConfig``,
        ``InferenceRPUConfig``, ...); its ``mapping`` decides the tile grid, bias and scaling.
      bias: whether the layer has a bias (digital or analog per ``mapping.digital_bias``).
      rngs: ``nnx.Rngs``; ``rngs.params()`` seeds the device-to-device draws and the initial
        weights (uniform ``±1/sqrt(in_features)``, aihwkit/torch's default), ``rngs['analog']`` the
        forward-noise stream.

      in_trans: the input's feature axis is its first axis, ``(in_features, ...)`` (aihwkit's tile
        flag ``in_trans``); default: the last axis.
      out_trans: return ``(out_features, ...)`` instead of ``(..., out_features)``.

    Call: ``layer(x, rngs=None)`` with ``x`` of shape ``(..., in_features)``; ``rngs`` (a key,
    ``RngStream`` or ``Rngs``) overrides the layer's own noise stream for this call.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rpu_config: Any,
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
        in_trans: bool = False,
        out_trans: bool = False,
    ):
        super().__init__(in_features, out_features, rpu_config, bias=bias, rngs=rngs)
        self.in_trans = bool(in_trans)
        self.out_trans = bool(out_trans)

    def __call__(self, x: Array, *, rngs: Any = None) -> Array:
        x = self._as_input(x)
        given = tuple(x.shape)
        if x.ndim >= 1 and self.in_trans:
            x = jnp.moveaxis(x, 0, -1)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            expected = f"({self.in_features}, ...)" if self.in_trans else f"(..., {self.in_features})"
            raise ValueError(f"AnalogLinear: input has shape {given}, expected {expected}")
        lead = x.shape[:-1]
        y = self.analog_matmul(x.reshape((-1, self.in_features)), self._call_key(rngs))
        y = y.reshape(lead + (self.out_features,))
        return jnp.moveaxis(y, -1, 0) if self.out_trans else y

    def _like(self, rpu_config: Any, rngs: nnx.Rngs) -> AnalogLinear:
        return AnalogLinear(
            self.in_features, self.out_features, rpu_config, bias=self.use_bias, rngs=rngs,
            in_trans=self.in_trans, out_trans=self.out_trans,
        )


def _tuple(name: str, value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    value = tuple(value)
    if len(value) != n or any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 for v in value):
        raise ValueError(f"{name} = {value!r}: expected an int >= 1 or {n} of them")
    return tuple(int(v) for v in value)


def _padding(padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        if padding.upper() in ("SAME", "VALID", "SAME_LOWER"):
            return padding.upper()
        raise ValueError(f"padding = {padding!r}: expected 'SAME', 'VALID', 'SAME_LOWER', an int or pairs")
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * n
    padding = tuple(padding)
    if len(padding) != n:
        raise ValueError(f"padding = {padding!r}: expected {n} entries")
    pairs = tuple((int(p), int(p)) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1])) for p in padding)
    return pairs


_CONV_DIMS = {1: ("NWC", "OIW", "NWC"), 2: ("NHWC", "OIHW", "NHWC"), 3: ("NDHWC", "OIDHW", "NDHWC")}


class AnalogConv(AnalogLayer):
    """Analog N-d convolution (im2col onto the tile grid), channels-last like ``nnx.Conv``.

    The convolution is unfolded into patches and every patch is one input vector of the tiles,
    so a batch of ``N`` images gives ``N · prod(output spatial size)`` samples per tile call (and
    per pulsed update), as aihwkit's indexed convolution does (spec §1.17). The tile's weight
    columns are ordered ``(C_in, k_1, ..., k_n)`` — aihwkit's (torch's) layout of
    ``weight.reshape(out_channels, -1)``.

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: an int or one per spatial axis.
      rpu_config: the tile config.
      strides, padding, kernel_dilation: as ``nnx.Conv`` (padding ``'SAME'``, ``'VALID'``,
        ``'SAME_LOWER'``, an int or ``(low, high)`` pairs per axis; default ``'SAME'``).
      bias: whether the layer has a bias.
      rngs: ``nnx.Rngs``.

    Call: ``layer(x, rngs=None)`` with ``x`` of shape ``(N, *spatial, C_in)`` (or unbatched
    ``(*spatial, C_in)``; several leading batch axes are flattened).
    """

    num_spatial: int = 0

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        rpu_config: Any,
        *,
        strides: int | Sequence[int] = 1,
        padding: Any = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        bias: bool = True,
        rngs: nnx.Rngs,
    ):
        n = self.num_spatial
        if n not in _CONV_DIMS:
            raise TypeError("use AnalogConv1d or AnalogConv2d")
        self.in_channels = _check_size("in_features", in_features)
        self.kernel_size = _tuple("kernel_size", kernel_size, n)
        self.strides = _tuple("strides", strides, n)
        self.kernel_dilation = _tuple("kernel_dilation", kernel_dilation, n)
        self.padding = _padding(padding, n)
        fan_in = self.in_channels * math.prod(self.kernel_size)
        super().__init__(fan_in, out_features, rpu_config, bias=bias, rngs=rngs)

    def __call__(self, x: Array, *, rngs: Any = None) -> Array:
        x = self._as_input(x)
        n = self.num_spatial
        if x.ndim < n + 1 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: input has shape {tuple(x.shape)}, expected (N, {n} spatial axes, "
                f"{self.in_channels})"
            )
        lead = x.shape[: x.ndim - n - 1]
        xb = x.reshape((-1,) + x.shape[x.ndim - n - 1 :])
        patches = jax.lax.conv_general_dilated_patches(
            xb,
            self.kernel_size,
            self.strides,
            self.padding,
            rhs_dilation=self.kernel_dilation,
            dimension_numbers=_CONV_DIMS[n],
            precision=jax.lax.Precision.HIGHEST,
        )
        spatial = patches.shape[1:-1]
        y = self.analog_matmul(patches.reshape((-1, self.in_features)), self._call_key(rngs))
        return y.reshape(lead + spatial + (self.out_features,))

    def _like(self, rpu_config: Any, rngs: nnx.Rngs) -> AnalogConv:
        return type(self)(
            self.in_channels, self.out_features, self.kernel_size, rpu_config,
            strides=self.strides, padding=self.padding, kernel_dilation=self.kernel_dilation,
            bias=self.use_bias, rngs=rngs,
        )


class AnalogConv1d(AnalogConv):
    """Analog 1-d convolution, input ``(N, W, C_in)`` (see :class:`AnalogConv`)."""

    num_spatial = 1


class AnalogConv2d(AnalogConv):
    """Analog 2-d convolution, input ``(N, H, W, C_in)`` (see :class:`AnalogConv`)."""

    num_spatial = 2
