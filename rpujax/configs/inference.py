"""Configuration of inference tiles: rpu configs, noise models, drift compensation, modifiers.

Names, fields and Python defaults follow aihwkit 1.2.0
(``simulator/configs/configs.py``, ``simulator/parameters/inference.py``,
``inference/noise/*.py``, ``inference/converter/conductance.py``,
``inference/compensation/drift.py``); the behaviour is spec cells-inference-api §4. The functions
that act on these configs live in :mod:`rpujax.inference`.

aihwkit's noise models and converters are plain Python objects with ``None`` arguments resolved in
``__init__``; here they are frozen, hashable dataclasses (they are static parts of a compiled
program) whose ``None`` fields are resolved in ``__post_init__`` to the value aihwkit would use.
Lists become tuples and dictionaries become tuples of pairs, so that configs hash.

Deliberate differences from aihwkit (all about construction, none about the physics):

* ``g_max <= 0`` and other impossible values raise ``ValueError`` at construction (aihwkit accepts
  ``g_max = 0`` and fails later, or silently produces NaN).
* ``prog_coeff_g_max_reference`` (PCM-like, Hermes) and ``coeff_g_max_reference`` (ReRAM Wan 2022)
  are honoured when given. aihwkit 1.2.0 ignores them with the default coefficients and raises
  ``AttributeError`` with explicit coefficients (spec §7 item 13).
* ``ReRamWan2022NoiseModel``: aihwkit intends to rescale the default coefficients by
  ``g_max / 40`` but never does (spec §7 item 13); we reproduce what it does (no rescaling).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Union

from rpujax.configs import _validation as v
from rpujax.configs.devices import IdealDevice
from rpujax.configs.io import IOParameters
from rpujax.configs.mapping import MappingParameter
from rpujax.configs.pre_post import PrePostProcessingParameter
from rpujax.configs.update import PulseType, UpdateParameters

__all__ = [
    "CustomDriftPCMLikeNoiseModel",
    "DualPairConductanceConverter",
    "GlobalDriftCompensation",
    "GlobalDriftCompensationWithExactReference",
    "HermesNoiseModel",
    "InferenceRPUConfig",
    "NPairConductanceConverter",
    "PCMLikeNoiseModel",
    "PerColumnDriftCompensation",
    "ReRamCMONoiseModel",
    "ReRamWan2022NoiseModel",
    "SingleDeviceConductanceConverter",
    "SinglePairConductanceConverter",
    "StateIndependentNoiseModel",
    "TorchInferenceRPUConfig",
    "WeightClipParameter",
    "WeightClipType",
    "WeightModifierParameter",
    "WeightModifierType",
    "WeightRemapParameter",
    "WeightRemapType",
]


# ---------------------------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------------------------


class WeightModifierType(enum.Enum):
    """How the forward/backward weights are perturbed in hardware-aware training (spec §4.2)."""

    NONE = "None"
    DISCRETIZE = "Discretize"
    MULT_NORMAL = "MultNormal"
    ADD_NORMAL = "AddNormal"
    DISCRETIZE_ADD_NORMAL = "DiscretizeAddNormal"
    DOREFA = "DoReFa"
    POLY = "Poly"
    PCM_NOISE = "PCMNoise"
    PROG_NOISE = "ProgNoise"
    DROP_CONNECT = "DropConnect"
    COPY = "Copy"


class WeightClipType(enum.Enum):
    """How the weights are clipped after each optimizer step (spec §4.3)."""

    NONE = "None"
    FIXED_VALUE = "FixedValue"
    LAYER_GAUSSIAN = "LayerGaussian"
    AVERAGE_CHANNEL_MAX = "AverageChannelMax"


class WeightRemapType(enum.Enum):
    """How the weights are re-scaled into the conductance range after each step (spec §4.4)."""

    NONE = "None"
    LAYERWISE_SYMMETRIC = "LayerwiseSymmetric"
    CHANNELWISE_SYMMETRIC = "ChannelwiseSymmetric"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _float_tuple(obj: Any, name: str, min_len: int = 1) -> None:
    """Store a sequence of finite numbers as a tuple of floats (hashable)."""
    value = getattr(obj, name)
    where = f"{type(obj).__name__}.{name}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{where} = {value!r}: expected a sequence of numbers")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ValueError(f"{where} = {value!r}: expected finite numbers, got {item!r}")
        out.append(float(item))
    if len(out) < min_len:
        raise ValueError(f"{where} = {value!r}: expected at least {min_len} value(s)")
    _set(obj, name, tuple(out))


def _check_g_range(obj: Any) -> None:
    v.check_positive(obj, "g_max")
    v.check_non_negative(obj, "g_min")
    if obj.g_min >= obj.g_max:
        raise ValueError(
            f"{type(obj).__name__}.g_min = {obj.g_min!r}: expected a number < g_max = {obj.g_max!r}"
        )


# ---------------------------------------------------------------------------------------------
# Conductance converters (spec §4.6)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SinglePairConductanceConverter:
    """One pair of devices per cross-point: ``g+`` for positive and ``g-`` for negative weights.

    ``max|W|`` of the tile is mapped to ``g_max`` (µS), zero to ``g_min``; the device not carrying
    the weight sits at ``g_min``.
    """

    g_max: float | None = None
    g_min: float | None = None

    def __post_init__(self) -> None:
        _set(self, "g_max", 25.0 if self.g_max is None else self.g_max)
        _set(self, "g_min", 0.0 if self.g_min is None else self.g_min)
        _check_g_range(self)

    @property
    def n_slices(self) -> int:
        """Number of conductances per cross-point."""
        return 2


@dataclasses.dataclass(frozen=True)
class NPairConductanceConverter:
    """``len(f_lst)`` pairs of devices per cross-point with significance factors ``f_lst``.

    The lowest-significance pair fills first; the next pair takes over once its range is used up.
    """

    f_lst: tuple[float, ...] = ()
    g_max: float | None = None
    g_min: float | None = None

    def __post_init__(self) -> None:
        _float_tuple(self, "f_lst", min_len=1)
        if any(f <= 0 for f in self.f_lst):
            raise ValueError(f"{type(self).__name__}.f_lst = {self.f_lst!r}: expected factors > 0")
        _set(self, "g_max", 25.0 if self.g_max is None else self.g_max)
        _set(self, "g_min", 0.0 if self.g_min is None else self.g_min)
        _check_g_range(self)

    @property
    def n_slices(self) -> int:
        """Number of conductances per cross-point."""
        return 2 * len(self.f_lst)


@dataclasses.dataclass(frozen=True)
class DualPairConductanceConverter(NPairConductanceConverter):
    """Two pairs of devices per cross-point (``NPairConductanceConverter`` with two factors)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.f_lst) != 2:
            raise ValueError(f"DualPairConductanceConverter.f_lst = {self.f_lst!r}: expected two factors")


@dataclasses.dataclass(frozen=True)
class SingleDeviceConductanceConverter:
    """One bidirectional device per cross-point: ``[min W, max W]`` maps onto ``[g_min, g_max]``.

    Defaults 88.199997 / 9.0 µS (aihwkit's CMO/HfOx ReRAM values).
    """

    g_max: float | None = None
    g_min: float | None = None

    def __post_init__(self) -> None:
        _set(self, "g_max", 88.199997 if self.g_max is None else self.g_max)
        _set(self, "g_min", 9.0 if self.g_min is None else self.g_min)
        _check_g_range(self)

    @property
    def n_slices(self) -> int:
        """Number of conductances per cross-point."""
        return 1


ConductanceConverter = Union[
    SinglePairConductanceConverter,
    NPairConductanceConverter,
    SingleDeviceConductanceConverter,
]
_PAIR_CONVERTERS = (SinglePairConductanceConverter, NPairConductanceConverter)


def _resolve_converter(obj: Any, allowed: tuple[type, ...] = _PAIR_CONVERTERS) -> None:
    """aihwkit: ``g_converter or SinglePairConductanceConverter(g_max)``; ``g_max`` from the converter."""
    where = type(obj).__name__
    if obj.g_max is not None:
        v.check_positive(obj, "g_max")
    if obj.g_converter is None:
        _set(obj, "g_converter", SinglePairConductanceConverter(g_max=obj.g_max))
    elif not isinstance(obj.g_converter, allowed):
        names = " or ".join(c.__name__ for c in allowed)
        raise ValueError(f"{where}.g_converter = {obj.g_converter!r}: expected an instance of {names}")
    elif obj.g_max is not None and obj.g_max != obj.g_converter.g_max:
        raise ValueError(
            f"{where}.g_max = {obj.g_max!r} differs from g_converter.g_max = "
            f"{obj.g_converter.g_max!r}; aihwkit silently uses the converter's value, give only one"
        )
    _set(obj, "g_max", float(obj.g_converter.g_max))


# ---------------------------------------------------------------------------------------------
# Noise models (spec §4.7, §4.8)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PCMLikeNoiseModel:
    """Statistical PCM model (Nandakumar et al. 2019): programming noise, drift, 1/f read noise.

    Conductances in µS, times in seconds. ``t_inference`` counts from the end of programming; the
    drift reference time is ``t_0`` (effective time ``t = t_inference + t_0``).

    Attributes:
      prog_coeff: programming-noise polynomial ``Σ c_i (g_T/g_max)^i`` in µS at
        ``prog_coeff_g_max_reference``; default ``(0.26348, 1.9650, -1.1731)`` at 25 µS.
      g_converter: weight ↔ conductance converter (default single pair with ``g_max``).
      g_max: conductance the tile's ``max|W|`` maps to (default: the converter's, 25 µS).
      t_read: 1/f-noise read time (s).
      t_0: first-read (drift reference) time (s).
      prog_noise_scale, read_noise_scale, drift_scale: multipliers of the three effects.
      prog_coeff_g_max_reference: ``g_max`` at which ``prog_coeff`` was fitted (default 25 µS for
        the default coefficients, else ``g_max``).
    """

    prog_coeff: tuple[float, ...] | None = None
    g_converter: ConductanceConverter | None = None
    g_max: float | None = None
    t_read: float = 250.0e-9
    t_0: float = 20.0
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    prog_coeff_g_max_reference: float | None = None

    _DEFAULT_COEFF = (0.26348, 1.9650, -1.1731)
    _DEFAULT_REFERENCE = 25.0

    def __post_init__(self) -> None:
        _resolve_converter(self)
        if self.prog_coeff is None:
            _set(self, "prog_coeff", self._DEFAULT_COEFF)
            if self.prog_coeff_g_max_reference is None:
                _set(self, "prog_coeff_g_max_reference", self._DEFAULT_REFERENCE)
        else:
            _float_tuple(self, "prog_coeff")
        if self.prog_coeff_g_max_reference is None:
            _set(self, "prog_coeff_g_max_reference", self.g_max)
        v.check_positive(self, "prog_coeff_g_max_reference")
        v.check_positive(self, "t_read")
        v.check_positive(self, "t_0")
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            v.check_non_negative(self, name)


@dataclasses.dataclass(frozen=True)
class CustomDriftPCMLikeNoiseModel(PCMLikeNoiseModel):
    """PCM-like model whose drift exponent statistics are tabulated by the user (Li et al. 2023).

    ``custom_drift_model`` gives ``g_lst`` (µS, ascending), ``nu_mean_lst`` and ``nu_std_lst``;
    ``μ_ν`` and ``σ_ν`` are linear interpolations over ``g_lst`` of the target conductance
    (clipped into ``[min g_lst, max g_lst]``). Accepts a dict (as aihwkit) and stores it as a tuple
    of ``(name, values)`` pairs.
    """

    custom_drift_model: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "CustomDriftPCMLikeNoiseModel.custom_drift_model"
        model = self.custom_drift_model
        if isinstance(model, tuple):
            model = dict(model)
        if not isinstance(model, Mapping):
            raise ValueError(f"{where} = {model!r}: expected a dict with g_lst, nu_mean_lst, nu_std_lst")
        keys = ("g_lst", "nu_mean_lst", "nu_std_lst")
        if set(model) != set(keys):
            raise ValueError(f"{where}: keys {sorted(model)}; expected exactly {list(keys)}")
        lists = {}
        for k in keys:
            vals = model[k]
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) < 2:
                raise ValueError(f"{where}[{k!r}] = {vals!r}: expected a list of at least 2 numbers")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vals):
                raise ValueError(f"{where}[{k!r}] = {vals!r}: expected finite numbers")
            lists[k] = tuple(float(x) for x in vals)
        if len({len(x) for x in lists.values()}) != 1:
            raise ValueError(f"{where}: g_lst, nu_mean_lst and nu_std_lst must have the same length")
        g_lst = lists["g_lst"]
        if list(g_lst) != sorted(g_lst) or min(g_lst) < 0:
            raise ValueError(f"{where}['g_lst'] = {g_lst!r}: expected ascending values >= 0")
        if min(lists["nu_std_lst"]) < 0:
            raise ValueError(f"{where}['nu_std_lst'] = {lists['nu_std_lst']!r}: expected values >= 0")
        conv = self.g_converter
        if conv.g_min < g_lst[0] or conv.g_max > g_lst[-1]:
            raise ValueError(
                f"{where}: g_converter produces conductances in [{conv.g_min}, {conv.g_max}] µS, outside "
                f"the range of the custom drift model [{g_lst[0]}, {g_lst[-1]}] µS"
            )
        _set(self, "custom_drift_model", tuple((k, lists[k]) for k in keys))

    def drift_table(self) -> dict[str, tuple[float, ...]]:
        """The custom drift model as a dict of tuples."""
        return dict(self.custom_drift_model)


@dataclasses.dataclass(frozen=True)
class StateIndependentNoiseModel:
    """Conductance-independent drift and multiplicative 1/f read noise (aihwkit ``custom.py``).

    ``σ_prog = γ (c0 + c1 g/g_max + c2 (g/g_max)²)`` in µS (no reference rescaling),
    ``ν = ζ |ν_mean + ν_std ξ|``, read noise ``ρ |g_D / g_max| sqrt(ln((t + t_read)/(2 t_read)))``.
    """

    g_converter: ConductanceConverter | None = None
    g_max: float | None = None
    prog_coeff: tuple[float, ...] | None = None
    prog_noise_scale: float = 1.0
    drift_nu_mean: float = 0.1
    drift_nu_std: float = 0.05
    drift_scale: float = 1.0
    t_0: float = 20.0
    read_noise_scale: float = 1.0
    t_read: float = 250.0e-9

    def __post_init__(self) -> None:
        _resolve_converter(self)
        if self.prog_coeff is None:
            _set(self, "prog_coeff", (0.2, 0.0, 0.0))
        else:
            _float_tuple(self, "prog_coeff")
        for name in ("prog_noise_scale", "drift_nu_std", "drift_scale", "read_noise_scale"):
            v.check_non_negative(self, name)
        v.check_finite(self, "drift_nu_mean")
        v.check_positive(self, "t_0")
        v.check_positive(self, "t_read")


_WAN2022_COEFF = (
    (1.0, (0.348, 16.030, -43.853, 45.393, -16.815)),
    (86400.0, (0.701, 22.086, -50.773, 47.095, -16.458)),
    (172800.0, (0.782, 20.274, -43.507, 37.062, -11.934)),
)


def _time_table(obj: Any, name: str, min_coeffs: int = 1) -> None:
    """A ``{key: [c0, c1, ...]}`` dict (or tuple of pairs) → sorted tuple of ``(float, tuple)``."""
    where = f"{type(obj).__name__}.{name}"
    table = getattr(obj, name)
    items = table.items() if isinstance(table, Mapping) else table
    out = []
    try:
        for k, coeffs in items:
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k):
                raise ValueError(f"{where}: key {k!r} is not a finite number")
            vals = tuple(float(c) for c in coeffs)
            if len(vals) < min_coeffs or not all(math.isfinite(c) for c in vals):
                raise ValueError(f"{where}[{k!r}] = {coeffs!r}: expected >= {min_coeffs} finite numbers")
            out.append((float(k), vals))
    except TypeError as err:
        raise ValueError(f"{where} = {table!r}: expected a dict of lists of numbers") from err
    if not out:
        raise ValueError(f"{where} = {table!r}: expected at least one entry")
    _set(obj, name, tuple(sorted(out)))


@dataclasses.dataclass(frozen=True)
class ReRamWan2022NoiseModel:
    """ReRAM model from Wan et al. (Nature 2022): time-keyed 4th-order noise polynomials.

    ``coeff_dic`` maps an inference time (s) to ``[c0, …, c4]`` of ``σ(g) = Σ c_i (g/g_max)^i`` µS
    (lowest order first, as aihwkit stores it after reversal). Programming uses the smallest time
    key; ``drift`` at ``t_inference`` (which must be one of the keys) redraws the conductance
    around the *target* with that key's polynomial.
    """

    coeff_dic: Any = None
    g_converter: ConductanceConverter | None = None
    g_max: float | None = None
    noise_scale: float = 1.0
    coeff_g_max_reference: float | None = None

    def __post_init__(self) -> None:
        _resolve_converter(self)
        _set(self, "coeff_dic", _WAN2022_COEFF if self.coeff_dic is None else self.coeff_dic)
        _time_table(self, "coeff_dic")
        if self.coeff_g_max_reference is None:
            _set(self, "coeff_g_max_reference", self.g_max)
        v.check_positive(self, "coeff_g_max_reference")
        v.check_non_negative(self, "noise_scale")

    @property
    def times(self) -> tuple[float, ...]:
        """The inference times (s) at which the model is defined."""
        return tuple(k for k, _ in self.coeff_dic)


@dataclasses.dataclass(frozen=True)
class ReRamCMONoiseModel:
    """CMO/HfOx ReRAM model (Falcone et al.): linear programming noise, log-time relaxation.

    Single device per cross-point (``SingleDeviceConductanceConverter(g_max, g_min)``, defaults
    88.2 / 9.0 µS). ``coeff_dict`` maps an acceptance range (%) to ``[a0, a1]`` of
    ``σ_prog = a0 + a1 g`` (µS); an ``acceptance_range`` that is not a key falls back to the
    smallest key, as in aihwkit (so the default 0.02 uses the 0.2 % coefficients).
    """

    coeff_dict: Any = None
    g_max: float | None = None
    g_min: float | None = None
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    decay_dict: Any = None
    read_dict: Any = None
    acceptance_range: float = 2e-2
    g_converter: SingleDeviceConductanceConverter | None = dataclasses.field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.g_max is not None:
            v.check_positive(self, "g_max")
        conv = SingleDeviceConductanceConverter(g_max=self.g_max, g_min=self.g_min)
        _set(self, "g_converter", conv)
        _set(self, "g_max", conv.g_max)
        _set(self, "g_min", conv.g_min)
        if self.coeff_dict is None:
            _set(self, "coeff_dict", ((0.2, (0.00081107, 0.00106879)), (2.0, (0.0112185391, 0.01129027418))))
        _time_table(self, "coeff_dict")
        decay = {"mean": (-0.08900206,), "std": (0.04201137, 0.41183342)} if self.decay_dict is None else self.decay_dict
        decay = dict(decay)
        if set(decay) != {"mean", "std"} or len(decay["mean"]) < 1 or len(decay["std"]) < 2:
            raise ValueError(f"ReRamCMONoiseModel.decay_dict = {self.decay_dict!r}: expected {{'mean': [m], 'std': [s1, s0]}}")
        _set(self, "decay_dict", (("mean", tuple(float(x) for x in decay["mean"])), ("std", tuple(float(x) for x in decay["std"]))))
        read = {"K": 0.0277316483, "t_read": 1e-6} if self.read_dict is None else self.read_dict
        read = dict(read)
        if set(read) != {"K", "t_read"}:
            raise ValueError(f"ReRamCMONoiseModel.read_dict = {self.read_dict!r}: expected keys K and t_read")
        if not float(read["t_read"]) > 0:
            raise ValueError(f"ReRamCMONoiseModel.read_dict['t_read'] = {read['t_read']!r}: expected > 0")
        _set(self, "read_dict", (("K", float(read["K"])), ("t_read", float(read["t_read"]))))
        v.check_finite(self, "acceptance_range")
        keys = [k for k, _ in self.coeff_dict]
        if self.acceptance_range not in keys:
            _set(self, "acceptance_range", min(keys))
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            v.check_non_negative(self, name)

    @property
    def prog_coefficients(self) -> tuple[float, ...]:
        """``(a0, a1, …)`` of the programming noise for the resolved acceptance range."""
        return dict(self.coeff_dict)[self.acceptance_range]


@dataclasses.dataclass(frozen=True)
class HermesNoiseModel:
    """PCM model of the IBM HERMES chip (Le Gallo et al. 2023), one or two devices per weight.

    Same structure as :class:`PCMLikeNoiseModel` with a cubic programming polynomial and piecewise
    drift / read-noise fits. Defaults depend on ``num_devices``: ``g_max`` 20.7 / 10.35 µS,
    ``t_0`` 300 / 200 s.
    """

    prog_coeff: tuple[float, ...] | None = None
    g_converter: ConductanceConverter | None = None
    num_devices: int = 2
    g_max: float | None = None
    t_read: float = 512.0e-9
    t_0: float | None = None
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    prog_coeff_g_max_reference: float | None = None

    def __post_init__(self) -> None:
        if self.num_devices not in (1, 2) or isinstance(self.num_devices, bool):
            raise ValueError(f"HermesNoiseModel.num_devices = {self.num_devices!r}: expected 1 or 2")
        limit = 20.7 if self.num_devices == 2 else 10.35
        if self.t_0 is None:
            _set(self, "t_0", 300.0 if self.num_devices == 2 else 200.0)
        if self.g_max is None and self.g_converter is None:
            _set(self, "g_max", limit)
        _resolve_converter(self)
        if self.g_max > limit:
            raise ValueError(
                f"HermesNoiseModel.g_max = {self.g_max!r}: the maximum conductance characterised for "
                f"num_devices={self.num_devices} is {limit} µS"
            )
        if self.prog_coeff is None:
            if self.num_devices == 2:
                _set(self, "prog_coeff", (0.16603222, 4.71806468, -8.48101252, 4.68961419))
            else:
                _set(self, "prog_coeff", (0.15781817, 2.32443916, -2.16310839, 0.68841818))
            if self.prog_coeff_g_max_reference is None:
                _set(self, "prog_coeff_g_max_reference", limit)
        else:
            _float_tuple(self, "prog_coeff")
        if self.prog_coeff_g_max_reference is None:
            _set(self, "prog_coeff_g_max_reference", self.g_max)
        v.check_positive(self, "prog_coeff_g_max_reference")
        v.check_positive(self, "t_read")
        v.check_positive(self, "t_0")
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            v.check_non_negative(self, name)


NoiseModel = Union[
    PCMLikeNoiseModel,
    CustomDriftPCMLikeNoiseModel,
    StateIndependentNoiseModel,
    ReRamWan2022NoiseModel,
    ReRamCMONoiseModel,
    HermesNoiseModel,
]
_NOISE_MODELS = (
    PCMLikeNoiseModel,
    StateIndependentNoiseModel,
    ReRamWan2022NoiseModel,
    ReRamCMONoiseModel,
    HermesNoiseModel,
)


# ---------------------------------------------------------------------------------------------
# Drift compensation (spec §4.9)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GlobalDriftCompensation:
    """One output factor ``alpha = baseline / max(mean|R|, 1e-4)`` per tile.

    ``R`` is the tile's (noisy, eval-mode) forward response to the one-hot read vectors; the
    baseline is measured right after programming.
    """


@dataclasses.dataclass(frozen=True)
class GlobalDriftCompensationWithExactReference(GlobalDriftCompensation):
    """As :class:`GlobalDriftCompensation`, with the baseline from the exact unprogrammed weights."""


@dataclasses.dataclass(frozen=True)
class PerColumnDriftCompensation:
    """One factor per output: ``alpha_i = baseline_i / max(mean_j |R_ji|, 1e-4)``."""


DriftCompensation = Union[GlobalDriftCompensation, PerColumnDriftCompensation]


# ---------------------------------------------------------------------------------------------
# Modifier, clip, remap parameters (spec §4.2–§4.4)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WeightModifierParameter:
    """Perturbation of the forward/backward weights for hardware-aware training (spec §4.2).

    ``a_max`` below is ``max|W|`` (``rel_to_actual_wmax``) or ``assumed_wmax``.

    Attributes:
      std_dev: noise std relative to ``a_max`` (ADD/MULT_NORMAL, POLY, PROG_NOISE scale,
        PCM_NOISE overall noise scale).
      per_batch_sample: draw one modified matrix per batch sample (torch tile only).
      res: discretisation step in units of ``a_max`` (DISCRETIZE*, DOREFA); 0 = off.
      sto_round: stochastic rounding for the discretisation.
      dorefa_clip: DoReFa clip value.
      pdrop: drop-connect probability (combinable with every type except NONE).
      enable_during_test: also use the modified weights in eval mode.
      rel_to_actual_wmax: ``a_max = max|W|`` instead of ``assumed_wmax``.
      assumed_wmax: ``a_max`` when not ``rel_to_actual_wmax``.
      copy_last_column: leave the last (analog bias) column unmodified and out of ``a_max``.
      coeffs: POLY / PROG_NOISE polynomial coefficients (lowest order first).
      type: a :class:`WeightModifierType` (or its name).
      g_max: PCM_NOISE / PROG_NOISE conductance scale (µS).
      pcm_zero_thres: PCM_NOISE zero threshold, in units of ``std_dev · 0.26348`` µS.
      pcm_t_inference: PCM_NOISE inference time (s).
      pcm_prob_at_reset, pcm_prob_at_gmax, pcm_prob_at_random: PCM_NOISE failure probabilities.
      pcm_t0: PCM_NOISE drift reference time (s).
    """

    std_dev: float = 0.0
    per_batch_sample: bool = False
    res: float = 0.0
    sto_round: bool = False
    dorefa_clip: float = 0.6
    pdrop: float = 0.0
    enable_during_test: bool = False
    rel_to_actual_wmax: bool = True
    assumed_wmax: float = 1.0
    copy_last_column: bool = False
    coeffs: tuple[float, ...] = (0.0105392, 0.0768, -0.046925)
    type: WeightModifierType = WeightModifierType.NONE
    g_max: float = 25.0
    pcm_zero_thres: float = 0.0
    pcm_t_inference: float = 0.0
    pcm_prob_at_reset: float = 0.0
    pcm_prob_at_gmax: float = 0.0
    pcm_prob_at_random: float = 0.0
    pcm_t0: float = 20.0

    def __post_init__(self) -> None:
        v.coerce_enum(self, "type", WeightModifierType)
        for name in ("per_batch_sample", "sto_round", "enable_during_test", "rel_to_actual_wmax", "copy_last_column"):
            v.check_bool(self, name)
        for name in ("std_dev", "res", "pcm_zero_thres", "pcm_t_inference"):
            v.check_non_negative(self, name)
        v.check_finite(self, "dorefa_clip")
        for name in ("pdrop", "pcm_prob_at_reset", "pcm_prob_at_gmax", "pcm_prob_at_random"):
            v.check_range(self, name, 0.0, 1.0)
        v.check_positive(self, "assumed_wmax")
        v.check_positive(self, "g_max")
        v.check_positive(self, "pcm_t0")
        _float_tuple(self, "coeffs", min_len=0)

    @property
    def active(self) -> bool:
        """Whether an InferenceRPUConfig tile modifies its weights at all (aihwkit skips NONE and
        COPY without drop-connect)."""
        if self.type is WeightModifierType.NONE:
            return False
        return not (self.type is WeightModifierType.COPY and self.pdrop <= 0.0)


@dataclasses.dataclass(frozen=True)
class WeightClipParameter:
    """Clipping of the weights after each optimizer step (spec §4.3).

    Attributes:
      fixed_value: FIXED_VALUE clip value; for the other types an upper cap if > 0.
      sigma: LAYER_GAUSSIAN multiplier of the (N−1) std of all weights.
      type: a :class:`WeightClipType` (or its name).
    """

    fixed_value: float = -1.0
    sigma: float = 2.5
    type: WeightClipType = WeightClipType.NONE

    def __post_init__(self) -> None:
        v.coerce_enum(self, "type", WeightClipType)
        v.check_finite(self, "fixed_value")
        v.check_non_negative(self, "sigma")


@dataclasses.dataclass(frozen=True)
class WeightRemapParameter:
    """Re-scaling of the weights into ``[-remapped_wmax, remapped_wmax]`` after each step (§4.4).

    The factor moves into the tile's digital mapping scales, so the logical weights do not change.

    Attributes:
      remapped_wmax: target abs-max of the tile weights.
      max_scale_range: channel-wise: bound on the ratio of scales (0 = off; needs
        ``remapped_wmax == 1``).
      max_scale_ref: channel-wise bounded: minimum reference scale.
      type: a :class:`WeightRemapType` (or its name).
    """

    remapped_wmax: float = 1.0
    max_scale_range: float = 0.0
    max_scale_ref: float = 0.0
    type: WeightRemapType = WeightRemapType.NONE

    def __post_init__(self) -> None:
        v.coerce_enum(self, "type", WeightRemapType)
        v.check_positive(self, "remapped_wmax")
        v.check_non_negative(self, "max_scale_range")
        v.check_non_negative(self, "max_scale_ref")
        if (
            self.type is WeightRemapType.CHANNELWISE_SYMMETRIC
            and self.max_scale_range > 0
            and self.remapped_wmax != 1.0
        ):
            raise ValueError(
                f"WeightRemapParameter.remapped_wmax = {self.remapped_wmax!r}: must be 1.0 when "
                f"max_scale_range = {self.max_scale_range!r} > 0 (fatal in aihwkit)"
            )


# ---------------------------------------------------------------------------------------------
# rpu configs
# ---------------------------------------------------------------------------------------------

_PERFECT_IO = IOParameters(is_perfect=True)
_FP_UPDATE = UpdateParameters(pulse_type=PulseType.NONE)
_IDEAL_DEVICE = IdealDevice()


@dataclasses.dataclass(frozen=True)
class InferenceRPUConfig:
    """Tile for hardware-aware training and inference (aihwkit ``InferenceRPUConfig``, spec §4.1).

    Training: the forward pass is the non-ideal analog MVM (``forward``) on the modified weights,
    the backward pass is exact, the weight gradient is the ordinary dense one (any optax optimizer
    applies it). After each optimizer step :func:`rpujax.inference.post_update_step` clips,
    remaps and draws the modified weights used by the *next* forward/backward (aihwkit's RPUCuda
    timing; before the first step the weights are used unmodified).

    Inference: :func:`rpujax.inference.program_weights` applies programming noise and draws the
    drift exponents; :func:`rpujax.inference.drift_weights` applies drift and read noise at
    ``t_inference`` and updates the drift-compensation factor ``alpha`` (applied in eval mode).

    Attributes:
      forward: IO of the forward MVM (used in training and inference).
      noise_model: programming / drift / read-noise model.
      drift_compensation: ``GlobalDriftCompensation()`` (default), ``PerColumnDriftCompensation()``,
        ``GlobalDriftCompensationWithExactReference()`` or ``None`` (off).
      clip: weight clipping after each optimizer step.
      remap: weight remapping after each optimizer step.
      modifier: weight modifier for hardware-aware training.
      mapping: layer-to-tile mapping.
      pre_post: digital pre/post-processing (input range) of each tile.

    ``backward`` (``IOParameters(is_perfect=True)``), ``update`` (``pulse_type=NONE``) and
    ``device`` (``IdealDevice()``) are fixed, read-only properties, as in aihwkit.
    """

    forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    noise_model: Any = dataclasses.field(default_factory=PCMLikeNoiseModel)
    drift_compensation: Any = dataclasses.field(default_factory=GlobalDriftCompensation)
    clip: WeightClipParameter = dataclasses.field(default_factory=WeightClipParameter)
    remap: WeightRemapParameter = dataclasses.field(default_factory=WeightRemapParameter)
    modifier: WeightModifierParameter = dataclasses.field(default_factory=WeightModifierParameter)
    mapping: MappingParameter = dataclasses.field(default_factory=MappingParameter)
    pre_post: PrePostProcessingParameter = dataclasses.field(default_factory=PrePostProcessingParameter)

    def __post_init__(self) -> None:
        v.check_instance(self, "forward", IOParameters)
        v.check_instance(self, "noise_model", _NOISE_MODELS)
        if self.drift_compensation is not None:
            v.check_instance(self, "drift_compensation", (GlobalDriftCompensation, PerColumnDriftCompensation))
        v.check_instance(self, "clip", WeightClipParameter)
        v.check_instance(self, "remap", WeightRemapParameter)
        v.check_instance(self, "modifier", WeightModifierParameter)
        v.check_instance(self, "mapping", MappingParameter)
        v.check_instance(self, "pre_post", PrePostProcessingParameter)
        self._check_modifier()

    def _check_modifier(self) -> None:
        mod = self.modifier
        if mod.per_batch_sample and mod.type is not WeightModifierType.COPY:
            raise ValueError(
                f"{type(self).__name__}.modifier.per_batch_sample = True: not implemented by aihwkit's "
                "RPUCuda inference tile (fatal there); use TorchInferenceRPUConfig"
            )
        if mod.res > 1 and mod.type in (
            WeightModifierType.DISCRETIZE,
            WeightModifierType.DISCRETIZE_ADD_NORMAL,
            WeightModifierType.DOREFA,
        ):
            warnings.warn(
                f"{type(self).__name__}.modifier.res = {mod.res!r} > 1 is used literally as a step of "
                "res·a_max (aihwkit's RPUCuda tile does not read it as a number of steps); "
                "write 1/n_steps",
                UserWarning,
                stacklevel=3,
            )

    @property
    def backward(self) -> IOParameters:
        """Exact backward MVM (``IOParameters(is_perfect=True)``), fixed."""
        return _PERFECT_IO

    @property
    def update(self) -> UpdateParameters:
        """Exact floating-point update (``pulse_type=NONE``), fixed."""
        return _FP_UPDATE

    @property
    def device(self) -> IdealDevice:
        """``IdealDevice()``, fixed."""
        return _IDEAL_DEVICE


_TORCH_MODIFIER_TYPES = (
    WeightModifierType.NONE,
    WeightModifierType.COPY,
    WeightModifierType.MULT_NORMAL,
    WeightModifierType.ADD_NORMAL,
    WeightModifierType.DISCRETIZE,
)


@dataclasses.dataclass(frozen=True)
class TorchInferenceRPUConfig(InferenceRPUConfig):
    """The inference tile of aihwkit's pure-torch simulator (``TorchInferenceRPUConfig``, §4.10).

    Same forward IO, noise models, programming, drift and drift compensation as
    :class:`InferenceRPUConfig`. Differences, as in aihwkit's torch tile:

    * the modifier is re-sampled at every training-mode forward (never in eval mode), with a
      straight-through gradient; ``per_batch_sample`` draws one matrix per sample;
    * only NONE/COPY, MULT_NORMAL, ADD_NORMAL and DISCRETIZE, with the torch-tile formulas:
      MULT_NORMAL ``w + w·std_dev·ξ`` (no ``a_max``), ADD_NORMAL ``w + std_dev·a_max·ξ``,
      DISCRETIZE with step ``2·a_max·res`` (``res > 1`` read as ``1/res``) and round-half-even;
    * no ``enable_during_test``, ``copy_last_column``, ``pdrop``; no analog bias;
    * clip: FIXED_VALUE (value > 0) and LAYER_GAUSSIAN only; remap: LAYERWISE / CHANNELWISE with
      ``remapped_wmax = 1`` and no scale range; the new scale is the abs-max of ``scale·W``.
    """

    def _check_modifier(self) -> None:
        mod = self.modifier
        name = type(self).__name__
        if mod.type not in _TORCH_MODIFIER_TYPES:
            allowed = ", ".join(t.name for t in _TORCH_MODIFIER_TYPES)
            raise ValueError(f"{name}.modifier.type = {mod.type.name}: the torch tile supports only {allowed}")
        for field in ("enable_during_test", "copy_last_column"):
            if getattr(mod, field):
                raise ValueError(f"{name}.modifier.{field} = True: not supported by the torch tile")
        if mod.pdrop > 0:
            raise ValueError(f"{name}.modifier.pdrop = {mod.pdrop!r}: drop-connect is not supported by the torch tile")
        if mod.type is WeightModifierType.DISCRETIZE and mod.res <= 0:
            raise ValueError(f"{name}.modifier.res = {mod.res!r}: DISCRETIZE needs res > 0 in the torch tile")
        if self.clip.type is WeightClipType.AVERAGE_CHANNEL_MAX:
            raise ValueError(f"{name}.clip.type = AVERAGE_CHANNEL_MAX: not supported by the torch tile")
        if self.clip.type is WeightClipType.FIXED_VALUE and self.clip.fixed_value <= 0:
            raise ValueError(
                f"{name}.clip.fixed_value = {self.clip.fixed_value!r}: FIXED_VALUE needs a value > 0 "
                "in the torch tile"
            )
        remap = self.remap
        if remap.type is not WeightRemapType.NONE and (
            remap.remapped_wmax != 1.0 or remap.max_scale_range != 0.0 or remap.max_scale_ref != 0.0
        ):
            raise ValueError(
                f"{name}.remap: the torch tile needs remapped_wmax = 1.0, max_scale_range = 0.0 and "
                f"max_scale_ref = 0.0 (got {remap.remapped_wmax}, {remap.max_scale_range}, {remap.max_scale_ref})"
            )


def is_inference_config(rpu_config: Any) -> bool:
    """Whether ``rpu_config`` describes an inference tile (InferenceRPUConfig or its torch variant)."""
    return isinstance(rpu_config, InferenceRPUConfig)
