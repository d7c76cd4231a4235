"""Replace the digital layers of an nnx model by analog ones (aihwkit ``convert_to_analog``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
from flax import nnx

from rpujax.nn.layers import AnalogConv, AnalogConv1d, AnalogConv2d, AnalogLayer, AnalogLinear

__all__ = ["analog_layers", "convert_to_analog"]


def analog_layers(model: Any) -> Iterator[tuple[tuple[Any, ...], AnalogLayer]]:
    """``(path, layer)`` of every analog layer of an nnx model (the model itself included)."""
    for path, module in nnx.iter_modules(model):
        if isinstance(module, AnalogLayer):
            yield tuple(path), module


def _ints(value: Any, n: int, default: int = 1) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _from_linear(layer: nnx.Linear, rpu_config: Any, rngs: nnx.Rngs) -> AnalogLinear:
    if not isinstance(layer.in_features, int) or not isinstance(layer.out_features, int):
        raise ValueError("convert_to_analog: only nnx.Linear with integer in/out features can be converted")
    new = AnalogLinear(layer.in_features, layer.out_features, rpu_config, bias=layer.use_bias, rngs=rngs)
    bias = None if layer.bias is None else layer.bias[...]
    new.set_weights(jnp.asarray(layer.kernel[...]).T, bias, key=rngs.params())
    return new


def _from_conv(layer: nnx.Conv, rpu_config: Any, rngs: nnx.Rngs) -> AnalogConv:
    kernel_size = tuple(layer.kernel_size)
    n = len(kernel_size)
    classes = {1: AnalogConv1d, 2: AnalogConv2d}
    problems = []
    if n not in classes:
        problems.append(f"{n} spatial axes (only 1-d and 2-d)")
    if layer.feature_group_count != 1:
        problems.append(f"feature_group_count={layer.feature_group_count}")
    if any(v != 1 for v in _ints(layer.input_dilation, n)):
        problems.append(f"input_dilation={layer.input_dilation}")
    if layer.mask is not None:
        problems.append("a kernel mask")
    if isinstance(layer.padding, str) and layer.padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
        problems.append(f"padding={layer.padding!r}")
    if problems:
        raise ValueError(f"convert_to_analog: cannot convert this nnx.Conv: {', '.join(problems)}")
    new = classes[n](
        layer.in_features, layer.out_features, kernel_size, rpu_config,
        strides=_ints(layer.strides, n), padding=layer.padding,
        kernel_dilation=_ints(layer.kernel_dilation, n), bias=layer.use_bias, rngs=rngs,
    )
    kernel = jnp.asarray(layer.kernel[...])  # (*k, C_in, C_out)
    weight = jnp.moveaxis(kernel, (-1, -2), (0, 1)).reshape((layer.out_features, -1))  # (C_out, C_in·k)
    bias = None if layer.bias is None else layer.bias[...]
    new.set_weights(weight, bias, key=rngs.params())
    return new


def _from_analog(layer: AnalogLayer, rpu_config: Any, rngs: nnx.Rngs) -> AnalogLayer:
    weight, bias = layer.get_weights()
    new = layer._like(rpu_config, rngs)
    new.set_weights(weight, bias, key=rngs.params())
    new.is_test = layer.is_test
    return new


def _convert(value: Any, rpu_config: Any, rngs: nnx.Rngs, convert_analog: bool) -> Any:
    if isinstance(value, nnx.Linear):
        return _from_linear(value, rpu_config, rngs)
    if isinstance(value, nnx.Conv):
        return _from_conv(value, rpu_config, rngs)
    if isinstance(value, AnalogLayer):
        return _from_analog(value, rpu_config, rngs) if convert_analog else value
    if isinstance(value, nnx.Module):
        for name, child in list(vars(value).items()):
            if name.startswith("_pytree__"):
                continue
            new = _convert(child, rpu_config, rngs, convert_analog)
            if new is not child:
                setattr(value, name, new)
        return value
    if isinstance(value, (list, tuple)):
        items = [_convert(v, rpu_config, rngs, convert_analog) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(items) if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        new = {k: _convert(v, rpu_config, rngs, convert_analog) for k, v in value.items()}
        return value if all(new[k] is value[k] for k in value) else type(value)(new)
    return value


def convert_to_analog(
    model: Any,
    rpu_config: Any,
    *,
    rngs: nnx.Rngs,
    inplace: bool = False,
    convert_analog: bool = True,
) -> Any:
    """Replace every ``nnx.Linear`` / ``nnx.Conv`` (1-d, 2-d) of ``model`` by an analog layer.

    The analog layer gets the digital layer's weights and bias through ``set_weights`` (so the
    mapping's weight scaling and the device's bounds apply). nnx kernels are ``(in, out)`` /
    ``(*k, C_in, C_out)``; tiles store ``(out, in)`` / ``(C_out, C_in·k)``.

    Args:
      model: an nnx module (or a single ``nnx.Linear`` / ``nnx.Conv``).
      rpu_config: the rpu config of every new layer.
      rngs: seeds the device-to-device draws and noise streams of the new layers (layers are
        converted in attribute order).
      inplace: modify ``model`` instead of a clone.
      convert_analog: also re-map existing analog layers to ``rpu_config`` (keeping their logical
        weights, ``get_weights()``), e.g. to deploy a trained model on inference tiles.

    Returns:
      The converted model (``model`` itself if ``inplace``, unless ``model`` is itself a layer).

    Raises:
      ValueError: for a convolution rpujax cannot map (grouped, input-dilated, masked, or
        circular / reflective padding).
    """
    if not inplace:
        model = nnx.clone(model)
    return _convert(model, rpu_config, rngs, convert_analog)
