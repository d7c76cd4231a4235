"""Configuration dataclasses with aihwkit's class names, field names and defaults.

All configs are frozen and hashable (they are static parts of a compiled program) and validate on
construction: a bad value raises ``ValueError`` naming the field, the value and the allowed range.
"""

from rpujax.configs.compounds import *  # noqa: F401,F403
from rpujax.configs.compounds import __all__ as _compounds_all
from rpujax.configs.devices import *  # noqa: F401,F403
from rpujax.configs.devices import __all__ as _devices_all
from rpujax.configs.inference import *  # noqa: F401,F403
from rpujax.configs.inference import __all__ as _inference_all
from rpujax.configs.io import *  # noqa: F401,F403
from rpujax.configs.io import __all__ as _io_all
from rpujax.configs.mapping import MappingParameter
from rpujax.configs.pre_post import InputRangeParameter, PrePostProcessingParameter
from rpujax.configs.rpu_configs import FloatingPointRPUConfig, SingleRPUConfig
from rpujax.configs.update import *  # noqa: F401,F403
from rpujax.configs.update import __all__ as _update_all

__all__ = [
    *_compounds_all,
    *_devices_all,
    *_inference_all,
    *_io_all,
    *_update_all,
    "FloatingPointRPUConfig",
    "InputRangeParameter",
    "MappingParameter",
    "PrePostProcessingParameter",
    "SingleRPUConfig",
]
