"""``SimulatorTile``: a stateful tile object with aihwkit's method names, for porting code line by line.

rpujax's tile API is functional (:mod:`rpujax.tile`): every operation takes a :class:`TileState`
and a key and returns a new state. :class:`SimulatorTile` holds one state and one key, calls those
pure functions and stores the result, so code written against aihwkit's
``RPUCudaSimulatorTileWrapper`` (``tile.update(x, d)``, ``tile.decay_weights()``, ...) ports
directly. Every random call splits the held key (``seed`` fixes the whole sequence), so a
``SimulatorTile`` is reproducible, unlike aihwkit's clock-seeded C++ tiles.

For jitted training loops use the pure functions; this class runs them eagerly one call at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rpujax import tile as _tile
from rpujax.tile import checkpoint as _ckpt
from rpujax.tile import lifecycle as _life
from rpujax.tile import parameters as _params
from rpujax.tile.state import TileState

Array = jax.Array

__all__ = ["CudaError", "SimulatorTile"]

_COMPAT_KEY = "compat"


class CudaError(RuntimeError):
    """No CUDA device (or no CUDA kernel that the config requires) is available (aihwkit ``CudaError``)."""


class SimulatorTile:
    """A tile with aihwkit's ``RPUCudaSimulatorTileWrapper`` methods, backed by a :class:`TileState`.

    Args:
      out_size: number of outputs (weight rows).
      in_size: number of inputs (weight columns, without bias).
      rpu_config: ``SingleRPUConfig``, ``FloatingPointRPUConfig``, ...
      bias: whether the tile has a bias. As in aihwkit it is digital (a vector added after the
        analog output, never updated by :meth:`update`) when ``rpu_config.mapping.digital_bias``
        is True (the default), else an extra analog weight column fed by a constant 1.
      in_trans: inputs of :meth:`forward` / :meth:`update` and outputs of :meth:`backward` have
        the feature axis first (``[in_size, ...]``) instead of last (spec cells-inference-api §1.3).
      out_trans: outputs of :meth:`forward` and inputs of :meth:`backward` / :meth:`update`
        (``d``) have the feature axis first (``[out_size, ...]``).
      shared_weights: ``True`` or a ``(out_size, X)`` array: the tile's weights are "shared"
        (aihwkit's zero-copy weight tensor): :attr:`shared_weights` is the tile's weight array,
        :meth:`ensure_shared_weights` writes a new one in, and delta-weight mode
        (:meth:`set_delta_weights`) is enabled. ``None``/``False``: not shared.
      seed: seed of the tile's key; the construction draws and every later random call derive
        from it.

    Attributes:
      state: the current :class:`TileState` (read it to leave the stateful world; assign to it to
        put a state back).
    """

    def __init__(
        self,
        out_size: int,
        in_size: int,
        rpu_config: Any,
        bias: bool = True,
        in_trans: bool = False,
        out_trans: bool = False,
        shared_weights: bool | Array | None = None,
        seed: int = 0,
    ) -> None:
        mapping = getattr(rpu_config, "mapping", None)
        digital = True if mapping is None else bool(mapping.digital_bias)
        self.out_size = out_size
        self.in_size = in_size
        self.rpu_config = rpu_config
        self.in_trans = bool(in_trans)
        self.out_trans = bool(out_trans)
        self.analog_bias = bool(bias) and not digital
        self.digital_bias = bool(bias) and digital
        self._key = jax.random.key(seed)
        self.state: TileState = _tile.init(self._next_key(), out_size, in_size, rpu_config, bias=self.analog_bias)
        self.bias: Array | None = jnp.zeros((out_size,), self.state.weights.dtype) if self.digital_bias else None
        self._lr = 0.1
        self._shared = shared_weights is not None and shared_weights is not False
        if self._shared and shared_weights is not True:
            self.ensure_shared_weights(shared_weights)

    # -----------------------------------------------------------------------------------------
    # helpers

    def _next_key(self) -> Array:
        self._key, sub = jax.random.split(self._key)
        return sub

    def _to_features_last(self, v: Any, trans: bool) -> Array:
        v = jnp.asarray(v, self.state.weights.dtype)
        return jnp.moveaxis(v, 0, -1) if trans else v

    def _from_features_last(self, v: Array, trans: bool) -> Array:
        return jnp.moveaxis(v, -1, 0) if trans else v

    def __repr__(self) -> str:
        return (
            f"SimulatorTile(out_size={self.out_size}, in_size={self.in_size}, "
            f"rpu_config={self.rpu_config!r}, analog_bias={self.analog_bias}, digital_bias={self.digital_bias})"
        )

    # -----------------------------------------------------------------------------------------
    # forward / backward / update

    def forward(self, x: Any, is_test: bool = False) -> Array:
        """Analog forward pass (wraps :func:`rpujax.tile.forward_with_state`, then adds the digital bias).

        ``x``: ``[..., in_size]`` (``[in_size, ...]`` with ``in_trans``); returns ``[..., out_size]``
        (``[out_size, ...]`` with ``out_trans``). The running noise-management value is kept.
        """
        x = self._to_features_last(x, self.in_trans)
        y, self.state = _tile.forward_with_state(self.state, x, self._next_key(), is_test=is_test)
        if self.bias is not None:
            y = y + self.bias
        return self._from_features_last(y, self.out_trans)

    def backward(self, d: Any) -> Array:
        """Analog backward pass ``Wᵀ d`` (wraps :func:`rpujax.tile.backward_with_state`).

        ``d``: ``[..., out_size]`` (``[out_size, ...]`` with ``out_trans``); returns
        ``[..., in_size]`` (``[in_size, ...]`` with ``in_trans``).
        """
        d = self._to_features_last(d, self.out_trans)
        dx, self.state = _tile.backward_with_state(self.state, d, self._next_key())
        return self._from_features_last(dx, self.in_trans)

    def update(self, x_input: Any, d_input: Any) -> None:
        """Update ``W ← W − lr·Σ d xᵀ`` with the tile's learning rate (wraps :func:`rpujax.tile.update`).

        ``x_input`` in the input layout (``in_trans``), ``d_input`` in the output layout
        (``out_trans``), same batch. Pulsed tiles apply the stochastic pulsed update sample by
        sample. A learning rate of exactly 0 makes this a no-op, as in aihwkit. In delta-weight mode
        the weights stay and the would-be change goes to the delta buffer.
        """
        if self._lr == 0.0:
            return
        x = self._to_features_last(x_input, self.in_trans)
        d = self._to_features_last(d_input, self.out_trans)
        self.state = _tile.update(self.state, x, d, self._lr, self._next_key())

    def set_learning_rate(self, learning_rate: float | None) -> None:
        """Set the tile learning rate used by :meth:`update` (None is ignored, as in aihwkit)."""
        if learning_rate is None:
            return
        lr = float(learning_rate)
        if not math.isfinite(lr):
            raise ValueError(f"set_learning_rate: learning_rate = {learning_rate!r}: expected a finite number")
        self._lr = lr

    def get_learning_rate(self) -> float:
        """The tile learning rate (0.1 after construction, as aihwkit's C++ tile)."""
        return self._lr

    # -----------------------------------------------------------------------------------------
    # weights

    def get_weights(self) -> tuple[Array, Array | None]:
        """``(weights [out_size, in_size], bias [out_size] or None)`` (wraps :func:`rpujax.tile.get_weights`).

        The bias is the analog bias column or the digital bias, whichever the tile has.
        """
        w, b = _tile.get_weights(self.state)
        if self.bias is not None:
            b = self.bias
        return w, b

    def set_weights(self, weight: Any, bias: Any | None = None) -> None:
        """Write the weights (wraps :func:`rpujax.tile.set_weights`): clipped to each device's
        bounds; with write noise the apparent weights are redrawn. ``bias`` goes to the analog bias
        column or the digital bias."""
        weight = jnp.asarray(weight, self.state.weights.dtype)
        if self.digital_bias:
            if bias is not None:
                b = jnp.asarray(bias, self.state.weights.dtype)
                if b.shape != (self.out_size,):
                    raise ValueError(f"set_weights: bias has shape {tuple(b.shape)}, expected {(self.out_size,)}")
                self.bias = b
            bias = None
        elif bias is not None and not self.analog_bias:
            raise ValueError("set_weights: bias given but the tile was built with bias=False")
        self.state = _tile.set_weights(self.state, weight, bias, key=self._next_key())

    def get_hidden_parameters(self) -> dict[str, Array]:
        """Per-device parameters by aihwkit's names and order (wraps
        :func:`rpujax.tile.parameters.get_hidden_parameters`)."""
        return _params.get_hidden_parameters(self.state)

    def set_hidden_parameters(self, params: Mapping[str, Any]) -> None:
        """Replace the per-device parameters (wraps :func:`rpujax.tile.parameters.set_hidden_parameters`)."""
        self.state = _params.set_hidden_parameters(self.state, params)

    # -----------------------------------------------------------------------------------------
    # weight operators

    def decay_weights(self, alpha: float = 1.0) -> None:
        """Decay the weights once (wraps :func:`rpujax.tile.lifecycle.decay_weights`)."""
        self.state = _life.decay_weights(self.state, alpha, key=self._next_key())

    def diffuse_weights(self) -> None:
        """Diffuse the weights once (wraps :func:`rpujax.tile.lifecycle.diffuse_weights`)."""
        self.state = _life.diffuse_weights(self.state, self._next_key())

    def drift_weights(self, delta_t: float = 1.0) -> None:
        """Drift the weights once by ``delta_t`` (wraps :func:`rpujax.tile.lifecycle.drift_weights`)."""
        self.state = _life.drift_weights(self.state, delta_t, self._next_key())

    def reset(self, reset_prob: float = 1.0) -> None:
        """Reset every column (wraps :func:`rpujax.tile.lifecycle.reset`)."""
        self.state = _life.reset(self.state, self._next_key(), reset_prob)

    def reset_columns(self, start_column_idx: int = 0, num_columns: int = 1, reset_prob: float = 1.0) -> None:
        """Reset columns with circular wrap (wraps :func:`rpujax.tile.lifecycle.reset_columns`)."""
        self.state = _life.reset_columns(self.state, self._next_key(), start_column_idx, num_columns, reset_prob)

    def post_update_step(self) -> None:
        """Diffusion then decay, as the analog optimizer calls once per mini-batch (wraps
        :func:`rpujax.tile.lifecycle.post_update_step`)."""
        self.state = _life.post_update_step(self.state, self._next_key())

    # -----------------------------------------------------------------------------------------
    # periphery and hidden index

    def get_forward_parameters(self) -> dict[str, Array]:
        """Forward periphery parameters (wraps :func:`rpujax.tile.parameters.get_forward_parameters`)."""
        return _params.get_forward_parameters(self.state)

    def set_forward_parameters(self, dic: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set forward periphery parameters (wraps :func:`rpujax.tile.parameters.set_forward_parameters`)."""
        self.state = _params.set_forward_parameters(self.state, dic, **kwargs)

    def get_backward_parameters(self) -> dict[str, Array]:
        """Backward periphery parameters (wraps :func:`rpujax.tile.parameters.get_backward_parameters`)."""
        return _params.get_backward_parameters(self.state)

    def set_backward_parameters(self, dic: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set backward periphery parameters (wraps :func:`rpujax.tile.parameters.set_backward_parameters`)."""
        self.state = _params.set_backward_parameters(self.state, dic, **kwargs)

    def get_forward_out_bound(self) -> float | None:
        """Output bound for the gradient mask (wraps :func:`rpujax.tile.parameters.get_forward_out_bound`)."""
        return _params.get_forward_out_bound(self.state)

    def get_hidden_update_index(self) -> int:
        """Sub-device updated next; 0 for single devices (wraps
        :func:`rpujax.tile.parameters.get_hidden_update_index`)."""
        return int(_params.get_hidden_update_index(self.state))

    def set_hidden_update_index(self, index: int) -> None:
        """Select the sub-device updated next; ignored by single devices (wraps
        :func:`rpujax.tile.parameters.set_hidden_update_index`)."""
        self.state = _params.set_hidden_update_index(self.state, index)

    # -----------------------------------------------------------------------------------------
    # shared weights and delta weights

    @property
    def shared_weights(self) -> Array | None:
        """The tile's weight array when the tile uses shared weights, else None."""
        return self.state.weights if self._shared else None

    def ensure_shared_weights(self, shared_weights: Any | None = None) -> None:
        """Make the tile use ``shared_weights`` as its weights (aihwkit ``ensure_shared_weights``).

        JAX arrays cannot alias a foreign buffer, so "sharing" means: the given ``(out_size, X)``
        array becomes the tile's weight array as is (no clipping, as aihwkit's storage swap), and
        :attr:`shared_weights` always returns the tile's current weights. No-op without an argument
        (the weights are already the shared ones). Raises ``ValueError`` on a tile built without
        shared weights.
        """
        if shared_weights is None:
            return
        if not self._shared:
            raise ValueError("ensure_shared_weights: this tile does not use shared weights (build it with shared_weights=True)")
        w = jnp.asarray(shared_weights, self.state.weights.dtype)
        if w.shape != self.state.weights.shape:
            raise ValueError(
                f"ensure_shared_weights: shared_weights has shape {tuple(w.shape)}, expected "
                f"{tuple(self.state.weights.shape)}"
            )
        self.state = self.state.replace(weights=w)

    def set_delta_weights(self, delta_weights: Any | None = None) -> None:
        """Enter delta-weight mode with ``delta_weights`` as the buffer (wraps
        :func:`rpujax.tile.parameters.set_delta_weights`).

        As in aihwkit a no-op unless the tile uses shared weights and a buffer is given. While on,
        :meth:`update` leaves the weights and writes the would-be change ``ΔW = W_new − W_old``
        into the buffer (read it with :meth:`get_delta_weights`; aihwkit's buffer holds ``−ΔW/lr``).
        """
        if not self._shared or delta_weights is None:
            return
        self.state = _params.set_delta_weights(self.state, delta_weights)

    def reset_delta_weights(self) -> None:
        """Leave delta-weight mode (wraps :func:`rpujax.tile.parameters.reset_delta_weights`);
        no-op without shared weights."""
        if not self._shared:
            return
        self.state = _params.reset_delta_weights(self.state)

    def get_delta_weights(self) -> Array | None:
        """The delta buffer ``ΔW`` of the last update in delta-weight mode, or None (rpujax addition:
        JAX arrays are not written in place)."""
        return _params.get_delta_weights(self.state)

    # -----------------------------------------------------------------------------------------
    # checkpoints

    def dump_extra(self) -> dict[str, Any]:
        """Everything beyond the weights (wraps :func:`rpujax.tile.checkpoint.dump_extra`), plus this
        object's learning rate, key and digital bias under ``"compat"``, so a reloaded tile continues
        bit-identically."""
        extra = _ckpt.dump_extra(self.state)
        compat: dict[str, Any] = {
            "learning_rate": self._lr,
            "key": _ckpt._encode_array(self._key, binary=False),
            "shared": self._shared,
        }
        if self.bias is not None:
            compat["bias"] = _ckpt._encode_array(self.bias, binary=False)
        extra[_COMPAT_KEY] = compat
        return extra

    def load_extra(self, extra: Mapping[str, Any], strict: bool = False) -> None:
        """Load the output of :meth:`dump_extra` (wraps :func:`rpujax.tile.checkpoint.load_extra`).

        The ``"compat"`` entry (learning rate, key, digital bias) is applied when present; a dict
        from the pure :func:`rpujax.tile.checkpoint.dump_extra` works too.
        """
        extra = dict(extra)
        compat = extra.pop(_COMPAT_KEY, None)
        self.state = _ckpt.load_extra(self.state, extra, strict=strict)
        if compat is None:
            return
        self._lr = float(compat.get("learning_rate", self._lr))
        if "key" in compat:
            self._key = _ckpt._decode_array(compat["key"])
        if "bias" in compat and self.bias is not None:
            bias = _ckpt._decode_array(compat["bias"])
            if bias.shape == self.bias.shape:
                self.bias = bias.astype(self.bias.dtype)
            elif strict:
                raise _ckpt.CheckpointError(f"compat.bias has shape {tuple(bias.shape)}, expected {tuple(self.bias.shape)}")

    # -----------------------------------------------------------------------------------------
    # devices

    def cuda(self, device: int | str | Any | None = None) -> "SimulatorTile":
        """Move the tile to a CUDA device with ``jax.device_put`` and return self (aihwkit ``cuda``).

        Args:
          device: ``None`` (first CUDA device), an index, ``"cuda"`` / ``"cuda:N"``, or a
            ``jax.Device``.

        Raises:
          CudaError: JAX sees no CUDA device, the requested one does not exist, or the config
            asks for the FFI update kernel (``update.backend == "ffi"``) and rpujax's CUDA kernel is
            not built (with ``"auto"`` the pure-JAX path runs on the GPU instead).
        """
        try:
            devices = jax.devices("cuda")
        except RuntimeError:
            devices = []
        if not devices:
            raise CudaError(
                "no CUDA device is visible to JAX (jax.devices('cuda') is empty): install a CUDA "
                "build of jaxlib (e.g. pip install 'jax[cuda12]') on a machine with an NVIDIA GPU"
            )
        target = self._pick_device(devices, device)
        update_cfg = getattr(self.rpu_config, "update", None)
        if getattr(update_cfg, "backend", "auto") == "ffi":
            from rpujax import _ffi

            if not _ffi.available("cuda"):
                raise CudaError(
                    "rpu_config.update.backend = 'ffi' but rpujax's CUDA kernel is not available "
                    f"({_ffi.unavailable_reason() or 'not built'}); use backend='auto' or 'jax'"
                )
        self.state = jax.device_put(self.state, target)
        self._key = jax.device_put(self._key, target)
        if self.bias is not None:
            self.bias = jax.device_put(self.bias, target)
        return self

    @staticmethod
    def _pick_device(devices: list[Any], device: Any) -> Any:
        if device is None:
            return devices[0]
        index: int | None = None
        if isinstance(device, int) and not isinstance(device, bool):
            index = device
        elif isinstance(device, str):
            name, _, num = device.partition(":")
            if name not in ("cuda", "gpu"):
                raise CudaError(f"cuda: device {device!r} is not a CUDA device name ('cuda' or 'cuda:N')")
            index = int(num) if num else 0
        elif device in devices:
            return device
        else:
            raise CudaError(f"cuda: {device!r} is not one of the CUDA devices {devices}")
        if not 0 <= index < len(devices):
            raise CudaError(f"cuda: device index {index} does not exist ({len(devices)} CUDA device(s))")
        return devices[index]

    def cpu(self) -> "SimulatorTile":
        """Move the tile to the first CPU device and return self."""
        target = jax.devices("cpu")[0]
        self.state = jax.device_put(self.state, target)
        self._key = jax.device_put(self._key, target)
        if self.bias is not None:
            self.bias = jax.device_put(self.bias, target)
        return self
