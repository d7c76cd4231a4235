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

# Heavier subpackages (Flax layers, optimizer, inference, compounds) load on first attribute access,
# so ``import rpujax`` stays cheap for users of the functional core.
_LAZY_SUBPACKAGES = ("cells", "compat", "inference", "nn", "optim", "presets")


def __getattr__(name: str):
    if name in _LAZY_SUBPACKAGES:
        import importlib

        return importlib.import_module(f"rpujax.{name}")
    raise AttributeError(f"module 'rpujax' has no attribute {name!r}")

__all__ = ["TileState", "configs", "load", "save", "tile", *configs.__all__]
