"""The pure tile functions (the seed page's API with the state as first argument).

Every function takes a :class:`TileState` and returns a new one (or an output); nothing is
mutated. All of them work under ``jax.jit`` and ``jax.vmap`` (over inputs and over a batch of tile
states).
"""

from rpujax.tile.checkpoint import dump_extra, load_extra
from rpujax.tile.core import effective_device, get_weights, init, set_weights
from rpujax.tile.lifecycle import (
    decay_weights,
    diffuse_weights,
    drift_weights,
    post_update_step,
    reset,
    reset_columns,
)
from rpujax.tile.mvm import backward, backward_with_state, forward, forward_with_state
from rpujax.tile.parameters import (
    get_backward_parameters,
    get_delta_weights,
    get_forward_out_bound,
    get_forward_parameters,
    get_hidden_parameters,
    get_hidden_update_index,
    reset_delta_weights,
    set_backward_parameters,
    set_delta_weights,
    set_forward_parameters,
    set_hidden_parameters,
    set_hidden_update_index,
)
from rpujax.tile.state import TileState
from rpujax.tile.update import update

__all__ = [
    "TileState",
    "backward",
    "backward_with_state",
    "decay_weights",
    "diffuse_weights",
    "drift_weights",
    "dump_extra",
    "effective_device",
    "forward",
    "forward_with_state",
    "get_backward_parameters",
    "get_delta_weights",
    "get_forward_out_bound",
    "get_forward_parameters",
    "get_hidden_parameters",
    "get_hidden_update_index",
    "get_weights",
    "init",
    "load_extra",
    "post_update_step",
    "reset",
    "reset_columns",
    "reset_delta_weights",
    "set_backward_parameters",
    "set_delta_weights",
    "set_forward_parameters",
    "set_hidden_parameters",
    "set_hidden_update_index",
    "set_weights",
    "update",
]
