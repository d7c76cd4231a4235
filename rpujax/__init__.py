"""rpujax: analog in-memory computing (RPU) tiles as pure JAX functions.

``rpujax.configs`` holds the configuration dataclasses (aihwkit's names and defaults),
``rpujax.tile`` the pure tile functions (``init``, ``forward``, ``backward``, ``update``, ...).
"""

# Subpackages are imported on first attribute access (PEP 562), so `import rpujax` stays cheap and
# never fails because one subpackage does; `rpujax.tile`, `rpujax.TileState` and the config classes
# (`rpujax.SingleRPUConfig`, ...) are still available as attributes. (Interim: the lead finalizes.)
import importlib as _importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("configs", "tile")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"rpujax.{name}")
    if name == "TileState":
        return _importlib.import_module("rpujax.tile").TileState
    if name == "__all__":
        return ["TileState", *_SUBPACKAGES, *_importlib.import_module("rpujax.configs").__all__]
    configs = _importlib.import_module("rpujax.configs")
    if name in configs.__all__:
        return getattr(configs, name)
    raise AttributeError(f"module 'rpujax' has no attribute {name!r}")
