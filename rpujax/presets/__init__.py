"""Presets of devices, IO/update parameters and rpu configs (aihwkit ``simulator/presets``).

Spec cells-inference-api §6. Device presets (:mod:`rpujax.presets.devices`), the PCM unit cell
(:mod:`rpujax.presets.compounds`), IO / update presets (:mod:`rpujax.presets.utils`) and rpu-config
presets (:mod:`rpujax.presets.configs`), all under aihwkit's class names::

    from rpujax.presets import TikiTakaReRamSBPreset
    state = rpujax.tile.init(key, 64, 128, TikiTakaReRamSBPreset())

``build_config(algorithm, device, ...)`` (aihwkit ``configs/helpers.py``) builds an rpu config
for an algorithm name ("sgd", "tiki-taka", "ttv2", "c-ttv2", "agad", "mp") and a device.

Inference presets (:mod:`rpujax.presets.inference`): ``StandardHWATrainingPreset``
(``InferenceRPUConfig`` for hardware-aware training, with a learned input range) and
``FloatingPointPreset`` (an exact ``TorchInferenceRPUConfig`` baseline).
"""

from rpujax.presets import configs as _configs
from rpujax.presets.compounds import PCMPresetUnitCell
from rpujax.presets.configs import *  # noqa: F401,F403
from rpujax.presets.devices import *  # noqa: F401,F403
from rpujax.presets.devices import __all__ as _devices_all
from rpujax.presets.helpers import build_config
from rpujax.presets.inference import FloatingPointPreset, StandardHWATrainingPreset
from rpujax.presets.utils import PresetIOParameters, PresetUpdateParameters, StandardIOParameters

__all__ = [
    *_configs.__all__,
    *_devices_all,
    "FloatingPointPreset",
    "PCMPresetUnitCell",
    "PresetIOParameters",
    "PresetUpdateParameters",
    "StandardHWATrainingPreset",
    "StandardIOParameters",
    "build_config",
]
