"""The pure tile functions (the seed page's API with the state as first argument).

Every function takes a :class:`TileState` and returns a new one (or an output); nothing is
mutated. All of them work under ``jax.jit`` and ``jax.vmap`` (over inputs and over a batch of tile
states).
"""

from rpujax.tile.core import effective_device, get_weights, init, set_weights
from rpujax.tile.mvm import backward, backward_with_state, forward, forward_with_state
from rpujax.tile.state import TileState
from rpujax.tile.update import update

__all__ = [
    "TileState",
    "backward",
    "backward_with_state",
    "effective_device",
    "forward",
    "forward_with_state",
    "get_weights",
    "init",
    "set_weights",
    "update",
]
