"""Flax nnx analog layers and the mapping of logical layers onto tile grids.

Layers: :class:`AnalogLinear`, :class:`AnalogConv1d`, :class:`AnalogConv2d` (aihwkit semantics
for the periphery: mapping scales, learned out scales, digital/analog bias, tile grids). Train
them with :mod:`rpujax.optim` (``value_and_grad`` + ``AnalogOptimizer``); convert an existing
model with :func:`convert_to_analog`.

Example::

    from flax import nnx
    from rpujax.configs import SingleRPUConfig, ConstantStepDevice
    from rpujax.nn import AnalogLinear

    layer = AnalogLinear(64, 32, SingleRPUConfig(device=ConstantStepDevice()), rngs=nnx.Rngs(0))
    y = layer(x)                      # noisy analog forward; gradient to x = analog backward
"""

from typing import Any

from rpujax.nn.capture import tile_key
from rpujax.nn.convert import analog_layers, convert_to_analog
from rpujax.nn.layers import (
    AnalogConv,
    AnalogConv1d,
    AnalogConv2d,
    AnalogLayer,
    AnalogLinear,
    AnalogTiles,
    MappingScales,
    is_inference_config,
)
from rpujax.nn.mapping import split_sizes, tile_grid_sizes, uses_tile_array
from rpujax.tile.state import TileState

__all__ = [
    "AnalogConv",
    "AnalogConv1d",
    "AnalogConv2d",
    "AnalogLayer",
    "AnalogLinear",
    "AnalogTiles",
    "MappingScales",
    "analog_layers",
    "convert_to_analog",
    "get_tiles",
    "is_inference_config",
    "set_tiles",
    "split_sizes",
    "tile_grid_sizes",
    "tile_key",
    "uses_tile_array",
]


def get_tiles(model: Any) -> dict[str, TileState]:
    """Every tile of the model's analog layers, keyed by :func:`tile_key` (``"path/tiles[i,j]"``)."""
    out: dict[str, TileState] = {}
    for path, layer in analog_layers(model):
        grid = layer.tiles.get_value()
        for i, row in enumerate(grid):
            for j, state in enumerate(row):
                out[tile_key(path + ("tiles",), i, j)] = state
    return out


def set_tiles(model: Any, tiles: dict[str, TileState]) -> None:
    """Write tile states (keyed as by :func:`get_tiles`) back into the model's analog layers.

    Tiles missing from ``tiles`` are left as they are; an unknown key raises ``KeyError``.
    """
    used = set()
    for path, layer in analog_layers(model):
        grid = layer.tiles.get_value()
        new = []
        changed = False
        for i, row in enumerate(grid):
            new_row = []
            for j, state in enumerate(row):
                key = tile_key(path + ("tiles",), i, j)
                if key in tiles:
                    used.add(key)
                    changed = True
                    state = tiles[key]
                new_row.append(state)
            new.append(tuple(new_row))
        if changed:
            layer.tiles.set_value(tuple(new))
    unknown = set(tiles) - used
    if unknown:
        raise KeyError(f"set_tiles: no analog tile named {sorted(unknown)} in the model")
