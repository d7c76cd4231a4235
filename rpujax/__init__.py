"""rpujax: analog in-memory computing (RPU) tiles as pure JAX functions.

``rpujax.configs`` holds the configuration dataclasses (aihwkit's names and defaults),
``rpujax.tile`` the pure tile functions (``init``, ``forward``, ``backward``, ``update``, ...),
``rpujax.compat.SimulatorTile`` a stateful wrapper with aihwkit's method names, and
``rpujax.save`` / ``rpujax.load`` checkpoint files.
"""

from rpujax import configs, tile
from rpujax.configs import *  # noqa: F401,F403
from rpujax.tile import TileState
from rpujax.tile.checkpoint import load, save

__version__ = "0.1.0"

__all__ = ["TileState", "configs", "load", "save", "tile", *configs.__all__]
