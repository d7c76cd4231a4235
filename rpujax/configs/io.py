"""Forward/backward IO configuration of an analog tile (aihwkit ``IOParameters``).

Field names and Python defaults follow aihwkit 1.2.0 (``aihwkit/simulator/parameters/io.py``);
semantics follow the C++ tile (spec tile-core §2). Three fields exist only in aihwkit's C++
``IOMetaParameter`` (``nm_assumed_wmax``, ``nm_decay``, ``r_series_max_total``); they are exposed
here with the C++ defaults so that the behaviour they control can be configured.

Conventions that differ from aihwkit (stricter, same physics):

* Bounds: aihwkit reads ``inp_bound <= 0`` / ``out_bound <= 0`` as "no bound and no quantiser".
  Here an unbounded range is spelled ``math.inf`` (which also switches that quantiser off, as in
  aihwkit); zero or negative bounds raise ``ValueError``.
* Resolutions: aihwkit reads ``res < 0`` as "off"; here ``0`` means off and a negative resolution
  raises ``ValueError``. ``res > 1`` means a number of steps, as in aihwkit.
* ``BoundManagementType.SHIFT`` exists in aihwkit's Python enum but not in its C++ tile; using it
  raises ``ValueError`` at construction.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np

from rpujax.configs import _validation as v

__all__ = [
    "AnalogMVType",
    "BoundManagementType",
    "IOParameters",
    "NoiseManagementType",
    "WeightNoiseType",
    "backward_io",
]


class NoiseManagementType(enum.Enum):
    """How the input vector is scaled into the DAC range before each MVM (spec §2.4)."""

    NONE = "None"
    ABS_MAX = "AbsMax"
    MAX = "Max"
    CONSTANT = "Constant"
    ABS_MAX_NP_SUM = "AbsMaxNPSum"
    AVERAGE_ABS_MAX = "AverageAbsMax"


class BoundManagementType(enum.Enum):
    """How an output that saturates the ADC is retried with a smaller input scale (spec §2.5)."""

    NONE = "None"
    ITERATIVE = "Iterative"
    ITERATIVE_WORST_CASE = "IterativeWorstCase"
    SHIFT = "Shift"  # in aihwkit's Python enum only; rejected here as by aihwkit's C++ tile


class WeightNoiseType(enum.Enum):
    """Output-referred read noise of the weights, fresh at every MVM (spec §2.7 item 3)."""

    NONE = "None"
    ADDITIVE_CONSTANT = "AdditiveConstant"
    PCM_READ = "PCMRead"


class AnalogMVType(enum.Enum):
    """How the analog MAC is carried out (spec §2.8)."""

    IDEAL = "Ideal"
    ONE_PASS = "OnePass"
    POS_NEG_SEPARATE = "PosNegSeparate"
    POS_NEG_SEPARATE_DIGITAL_SUM = "PosNegSeparateDigitalSum"


def _check_bound(obj: object, name: str, convention: str = "") -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{type(obj).__name__}.{name} = {value!r}: expected a number > 0 or math.inf")
    if value <= 0:
        raise ValueError(
            f"{type(obj).__name__}.{name} = {value!r}: expected a number > 0; use math.inf for no limit"
            + convention
        )


_BOUND_CONVENTION = " (aihwkit's <= 0 convention for an unbounded range, which also switches the quantiser off)"


def _check_res(obj: object, name: str) -> None:
    v.check_finite(obj, name)
    value = getattr(obj, name)
    if value < 0:
        raise ValueError(
            f"{type(obj).__name__}.{name} = {value!r}: expected a number >= 0 (a bin width <= 1 as a "
            "fraction of the full range, or a number of steps > 1); use 0 to switch the quantiser "
            "off (aihwkit's res < 0 convention)"
        )


def _bin_width(res: float, bound: float) -> float:
    """Quantiser bin width in physical units (spec §2.2); 0 means the quantiser is off.

    Computed in float32 exactly as aihwkit's C++ tile does (``res' · (2·bound)`` with float32
    operands). It matters: with the default ADC the float32 step is 0.04705883, so the top level
    ``255·step`` is 12.000001 > ``out_bound`` and an output quantised to it fails the bound test
    (a float64-derived step would give exactly 12.0 and change bound-management retry rates).
    """
    if math.isinf(bound):
        return 0.0
    r = np.float32(res)
    if r > 1:
        r = np.float32(1.0) / r
    return float(r * (np.float32(2.0) * np.float32(bound)))


@dataclasses.dataclass(frozen=True)
class IOParameters:
    """Non-idealities of the analog forward or backward matrix-vector product (spec §2.1).

    Units: inputs are normalised to ``[-inp_bound, inp_bound]`` by noise management, weights are in
    device units, outputs are in the ADC range ``[-out_bound, out_bound]``; noise levels are
    absolute standard deviations in that normalised domain unless stated otherwise.

    Attributes:
      is_perfect: exact floating-point MVM (only ``out_scale`` is applied).
      mv_type: analog MAC variant (``AnalogMVType``); ``IDEAL`` is the same as ``is_perfect``.
      inp_bound: DAC range ``[-inp_bound, inp_bound]``; ``math.inf`` for unbounded (DAC
        quantisation then off). Must be exactly 1 when noise management is on.
      inp_noise: std of Gaussian noise added to each DAC output (after the clip).
      inp_res: DAC bin width as a fraction of ``2 * inp_bound``; > 1 means a number of steps; 0 off.
      inp_sto_round: stochastic rounding in the DAC.
      inp_asymmetry: negative DAC outputs are multiplied by ``1 - inp_asymmetry``.
      out_bound: ADC range ``[-out_bound, out_bound]``; ``math.inf`` for unbounded (ADC
        quantisation then off).
      out_noise: std of Gaussian noise added to each output before the ADC.
      out_noise_std: relative output-to-output variation of ``out_noise``, fixed at construction.
      out_res: ADC bin width as a fraction of ``2 * out_bound``; > 1 means a number of steps; 0 off.
      out_sto_round: stochastic rounding in the ADC.
      out_scale: fixed digital factor applied to the output.
      out_asymmetry: negative outputs are multiplied by ``1 - out_asymmetry`` (only if > 0, as on
        aihwkit's CPU tile).
      bound_management: ``BoundManagementType`` (ignored in the backward pass).
      noise_management: ``NoiseManagementType``.
      w_noise: output-referred weight-noise scale (weight units).
      w_noise_type: ``WeightNoiseType``.
      ir_drop: IR-drop scale (0 off).
      ir_drop_g_ratio: wire conductance divided by the maximal device conductance.
      out_nonlinearity: strength of the S-shaped output non-linearity.
      out_nonlinearity_std: output-to-output variation of ``out_nonlinearity``.
      slope_calibration: calibrated slope point (fraction of the output range) of the non-linearity.
      v_offset_std: std of the per-output voltage offsets.
      v_offset_w_min: implicit reference weight of the voltage offsets.
      r_series: series resistance (fraction of the output current).
      w_read_asymmetry_dtod: per-device read asymmetry for negative inputs (pos/neg modes only).
      max_bm_factor: largest bound-management reduction factor.
      max_bm_res: largest bound-management reduction in units of the DAC step count.
      bm_test_negative_bound: a negative saturation also triggers a bound-management retry.
      nm_thres: constant NM value, or the saturation threshold of the NM scale (0 off).
      nm_assumed_wmax: (C++ only, not in aihwkit's Python) assumed max weight of ``ABS_MAX_NP_SUM``.
      nm_decay: (C++ only) momentum of ``AVERAGE_ABS_MAX``.
      r_series_max_total: (C++ only) cap of the series-resistance term.
    """

    is_perfect: bool = False
    mv_type: AnalogMVType = AnalogMVType.ONE_PASS
    inp_bound: float = 1.0
    inp_noise: float = 0.0
    inp_res: float = 1.0 / (2**7 - 2)
    inp_sto_round: bool = False
    inp_asymmetry: float = 0.0
    out_bound: float = 12.0
    out_noise: float = 0.06
    out_noise_std: float = 0.0
    out_res: float = 1.0 / (2**9 - 2)
    out_sto_round: bool = False
    out_scale: float = 1.0
    out_asymmetry: float = 0.0
    bound_management: BoundManagementType = BoundManagementType.ITERATIVE
    noise_management: NoiseManagementType = NoiseManagementType.ABS_MAX
    w_noise: float = 0.0
    w_noise_type: WeightNoiseType = WeightNoiseType.NONE
    ir_drop: float = 0.0
    ir_drop_g_ratio: float = 1.0 / 0.35 / 5e-6
    out_nonlinearity: float = 0.0
    out_nonlinearity_std: float = 0.0
    slope_calibration: float = 0.0
    v_offset_std: float = 0.0
    v_offset_w_min: float = -1.0
    r_series: float = 0.0
    w_read_asymmetry_dtod: float = 0.0
    max_bm_factor: int = 1000
    max_bm_res: float = 0.25
    bm_test_negative_bound: bool = True
    nm_thres: float = 0.0
    # Not in aihwkit's Python dataclass; C++ IOMetaParameter defaults.
    nm_assumed_wmax: float = 0.6
    nm_decay: float = 1e-3
    r_series_max_total: float = math.inf

    def __post_init__(self) -> None:
        v.coerce_enum(self, "mv_type", AnalogMVType)
        v.coerce_enum(self, "bound_management", BoundManagementType)
        v.coerce_enum(self, "noise_management", NoiseManagementType)
        v.coerce_enum(self, "w_noise_type", WeightNoiseType)
        for name in ("is_perfect", "inp_sto_round", "out_sto_round", "bm_test_negative_bound"):
            v.check_bool(self, name)
        _check_bound(self, "inp_bound", _BOUND_CONVENTION)
        _check_bound(self, "out_bound", _BOUND_CONVENTION)
        _check_res(self, "inp_res")
        _check_res(self, "out_res")
        for name in (
            "inp_noise",
            "out_noise",
            "out_noise_std",
            "w_noise",
            "ir_drop",
            "out_nonlinearity",
            "out_nonlinearity_std",
            "slope_calibration",
            "v_offset_std",
            "r_series",
            "w_read_asymmetry_dtod",
            "max_bm_res",
            "nm_thres",
        ):
            v.check_non_negative(self, name)
        for name in ("inp_asymmetry", "out_asymmetry", "out_scale", "v_offset_w_min"):
            v.check_finite(self, name)
        v.check_positive(self, "ir_drop_g_ratio")
        v.check_positive(self, "nm_assumed_wmax")
        v.check_range(self, "nm_decay", 0.0, 1.0)
        v.check_int(self, "max_bm_factor", minimum=1)
        _check_bound(self, "r_series_max_total")
        if self.bound_management is BoundManagementType.SHIFT:
            raise ValueError(
                "IOParameters.bound_management = BoundManagementType.SHIFT: not supported by aihwkit's "
                "C++ tile (it has no binding); use NONE, ITERATIVE or ITERATIVE_WORST_CASE"
            )
        if (
            not self.perfect
            and self.noise_management is not NoiseManagementType.NONE
            and self.inp_bound != 1.0
        ):
            raise ValueError(
                f"IOParameters.inp_bound = {self.inp_bound!r}: must be exactly 1.0 when "
                f"noise_management = {self.noise_management.name} (fatal in aihwkit); set "
                "noise_management = NONE to use another input bound"
            )

    # Derived values (spec §2.2), computed from the fields so the config stays hashable/static.

    @property
    def perfect(self) -> bool:
        """True if the MVM is the exact floating-point product (``is_perfect`` or ``mv_type`` IDEAL)."""
        return self.is_perfect or self.mv_type is AnalogMVType.IDEAL

    @property
    def inp_res_eff(self) -> float:
        """DAC bin width in normalised input units; 0 when the DAC quantiser is off."""
        return _bin_width(self.inp_res, self.inp_bound)

    @property
    def out_res_eff(self) -> float:
        """ADC bin width in output units; 0 when the ADC quantiser is off."""
        return _bin_width(self.out_res, self.out_bound)

    @property
    def nm_thres_eff(self) -> float:
        """``nm_thres`` as the tile uses it (forced to 0 when noise management is NONE)."""
        return 0.0 if self.noise_management is NoiseManagementType.NONE else float(self.nm_thres)

    @property
    def has_voltage_offsets(self) -> bool:
        """Whether per-output voltage offsets / series resistance act (spec §2.7 item 2)."""
        return self.v_offset_std > 0 or self.r_series > 0

    @property
    def has_nl_calibration(self) -> bool:
        """Whether the output non-linearity acts (spec §1.5, §2.9 step 1).

        As aihwkit's ``hasNLCalibration``: ``out_nonlinearity > 0`` on a non-perfect tile, or any
        ``r_series > 0`` (a perfect MVM never applies it).
        """
        return (self.out_nonlinearity > 0 and not self.perfect) or self.r_series > 0


def backward_io(io: IOParameters) -> IOParameters:
    """The IO parameters as the backward pass applies them: bound management forced to NONE.

    aihwkit silently ignores ``bound_management`` in the backward direction (spec §2.2); the
    backward MVM of :mod:`rpujax.tile.mvm` never reads it, so this helper is only for display.
    """
    return dataclasses.replace(io, bound_management=BoundManagementType.NONE)
