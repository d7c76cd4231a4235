"""Device configs: aihwkit's single-device classes with their field names and Python defaults.

Every class is a frozen, hashable dataclass validated on construction (spec tile-core §4, §5.3).
The per-cross-point sampling and the pulse rules that use these configs live in
:mod:`rpujax.devices`.

Deviations from aihwkit, all deliberate:

- ``write_noise_std`` / ``apply_write_noise_on_set`` exist on every pulsed device; on
  ``ConstantStepDevice`` and ``PowStepReferenceDevice`` (whose C++ models have no write noise and
  abort when asked for it) a positive ``write_noise_std`` raises ``ValueError``.
- Negative ``diffusion``, ``lifetime``, ``reset_dtod`` or ``reset_std`` raise ``ValueError``
  (aihwkit silently clamps them to 0). Negative device-to-device / cycle-to-cycle stds raise too.
- ``FloatingPointDevice`` carries a ``construction_seed`` (unused by aihwkit's FP tile), so every
  device config has one.
- ``PiecewiseStepDevice`` stores its node lists as tuples (lists are accepted and converted).
- ``SoftBoundsPmaxDevice`` computes ``w_min``, ``w_max``, ``dw_min`` and ``up_down`` from
  ``p_max``, ``alpha``, ``range_min``, ``range_max`` on construction (aihwkit does it in
  ``as_bindings``); values passed for those four fields are ignored, as in aihwkit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from rpujax.configs import _validation as v

__all__ = [
    "SimpleDriftParameter",
    "DriftParameter",
    "FloatingPointDevice",
    "IdealDevice",
    "PulsedDevice",
    "ConstantStepDevice",
    "LinearStepDevice",
    "SoftBoundsDevice",
    "SoftBoundsPmaxDevice",
    "SoftBoundsReferenceDevice",
    "ExpStepDevice",
    "PowStepDevice",
    "PowStepReferenceDevice",
    "PiecewiseStepDevice",
]


def _check_seed(obj: object) -> None:
    v.check_int(obj, "construction_seed", minimum=0)
    if obj.construction_seed >= 2**63:  # type: ignore[attr-defined]
        raise ValueError(
            f"{type(obj).__name__}.construction_seed = {obj.construction_seed!r}: "  # type: ignore[attr-defined]
            "expected an int in [0, 2**63)"
        )


# ---------------------------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimpleDriftParameter:
    """Power-law drift of a floating-point tile (aihwkit ``SimpleDriftParameter``, spec §5.3).

    Attributes:
      nu: drift exponent; drift is active only when ``nu > 0``.
      t_0: time unit; ``delta_t`` passed to ``drift_weights`` is divided by it.
      reset_tol: a weight change larger than this (since the last drift call) restarts the drift
        clock of that element.
    """

    nu: float = 0.0
    t_0: float = 1.0
    reset_tol: float = 1e-7

    def __post_init__(self) -> None:
        v.check_finite(self, "nu")
        v.check_positive(self, "t_0")
        v.check_non_negative(self, "reset_tol")

    def is_active(self) -> bool:
        """Whether this drift is switched on (``nu > 0``)."""
        return self.nu > 0.0


@dataclasses.dataclass(frozen=True)
class DriftParameter(SimpleDriftParameter):
    """Power-law drift of a pulsed device (aihwkit ``DriftParameter``, spec §5.3 table).

    Attributes (beyond :class:`SimpleDriftParameter`):
      nu_dtod: device-to-device std of ``nu``, relative to ``nu`` (sampled at construction).
      nu_std: cycle-to-cycle std of ``nu`` at every drift call, relative to the element's ``nu``.
      wg_ratio: ``(w_max - w_min) / (g_max - g_min)``.
      g_offset: ``g_min``.
      w_offset: weight at ``g_min``.
      nu_k: conductance dependence of ``nu``.
      log_g0: ``log G0`` of the conductance dependence.
      w_noise_std: additive read-noise std applied after each drift call.
    """

    nu_dtod: float = 0.0
    nu_std: float = 0.0
    wg_ratio: float = 1.0
    g_offset: float = 0.0
    w_offset: float = 0.0
    nu_k: float = 0.0
    log_g0: float = 0.0
    w_noise_std: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_non_negative(self, "nu_dtod")
        v.check_non_negative(self, "nu_std")
        v.check_finite(self, "wg_ratio")
        if self.wg_ratio == 0.0:
            raise ValueError(f"DriftParameter.wg_ratio = {self.wg_ratio!r}: expected a non-zero number")
        v.check_finite(self, "g_offset")
        v.check_finite(self, "w_offset")
        v.check_finite(self, "nu_k")
        v.check_finite(self, "log_g0")
        v.check_non_negative(self, "w_noise_std")


# ---------------------------------------------------------------------------------------------
# Floating point and ideal devices
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FloatingPointDevice:
    """Exact floating-point device (aihwkit ``FloatingPointDevice``, spec §4.2, §5.6).

    Attributes:
      construction_seed: seed of the construction draws (rpujax addition; nothing is random at
        construction for this device, kept for a uniform interface).
      diffusion: std of the additive diffusion per ``diffuse_weights`` call.
      lifetime: ``1 / decay rate``; decay is active when ``lifetime > 1`` (§5.6).
      drift: power-law drift with a scalar exponent.
    """

    construction_seed: int = 0
    diffusion: float = 0.0
    lifetime: float = 0.0
    drift: SimpleDriftParameter = dataclasses.field(default_factory=SimpleDriftParameter)

    def __post_init__(self) -> None:
        _check_seed(self)
        v.check_non_negative(self, "diffusion")
        v.check_non_negative(self, "lifetime")
        v.check_instance(self, "drift", SimpleDriftParameter)

    def requires_diffusion(self) -> bool:
        return self.diffusion > 0.0

    def requires_decay(self) -> bool:
        return self.lifetime > 0.0


@dataclasses.dataclass(frozen=True)
class IdealDevice:
    """Ideal (exact floating-point update) device (aihwkit ``IdealDevice``, spec §4.2, §5.6).

    Attributes:
      construction_seed: seed of the construction draws (nothing random is drawn for this device).
      diffusion: std of the additive diffusion per ``diffuse_weights`` call.
      lifetime: ``1 / decay rate``; decay is active when ``lifetime > 1``.
      reset_std: std of the value a reset sets (around 0).
    """

    construction_seed: int = 0
    diffusion: float = 0.0
    lifetime: float = 0.0
    reset_std: float = 0.01

    def __post_init__(self) -> None:
        _check_seed(self)
        v.check_non_negative(self, "diffusion")
        v.check_non_negative(self, "lifetime")
        v.check_non_negative(self, "reset_std")

    def requires_diffusion(self) -> bool:
        return self.diffusion > 0.0

    def requires_decay(self) -> bool:
        return self.lifetime > 0.0


# ---------------------------------------------------------------------------------------------
# Pulsed devices
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PulsedDevice:
    """Base of the pulsed device models (aihwkit ``PulsedDevice``, spec §4.1, §1.3).

    Not a device model by itself: use one of its subclasses. Units: weights in device units,
    ``dw_min`` in weight units per pulse; ``*_dtod`` are device-to-device stds (relative to their
    mean unless stated), ``dw_min_std`` the cycle-to-cycle std of one pulse relative to its step.

    Attributes:
      construction_seed: seed of the device-to-device draws. ``0``: draws come from the key given
        to ``init``; otherwise from ``jax.random.key(construction_seed)``, so the same seed gives
        the same devices whatever the init key (aihwkit: 0 = seeded from the clock).
      dw_min: mean step size of one pulse.
      dw_min_dtod: device-to-device std of the step gain (relative).
      dw_min_dtod_log_normal: gain ``exp(dw_min_dtod·ξ)`` instead of ``1 + dw_min_dtod·ξ``.
      dw_min_std: cycle-to-cycle std of one pulse (relative to the step).
      w_max, w_min: mean upper / lower hard bounds (``w_min <= 0 <= w_max``).
      w_max_dtod, w_min_dtod: device-to-device std of the bounds (relative).
      up_down: systematic up/down asymmetry in units of ``dw_min`` (> 0 shrinks the down step,
        < 0 the up step).
      up_down_dtod: device-to-device std of the asymmetry, absolute in units of ``dw_min``.
      enforce_consistency: take absolute step sizes and make the bounds straddle 0.
      perfect_bias: ideal steps and 100x wide bounds in the last weight column.
      lifetime: ``1 / decay rate`` (0: no decay).
      lifetime_dtod: device-to-device std of the lifetime (relative).
      diffusion: std of the diffusion per ``diffuse_weights`` call.
      diffusion_dtod: device-to-device std of the diffusion rate (relative).
      reset: mean value a reset sets (and decay pulls toward).
      reset_dtod: device-to-device std of the reset value (absolute).
      reset_std: cycle-to-cycle std of each reset.
      drift: power-law drift parameters (``nu = 0``: off).
      corrupt_devices_prob: probability that a device is stuck.
      corrupt_devices_range: stuck values lie in ``[-range, range]`` (and within the bounds).
      count_pulses: keep pulse counters (aihwkit GPU only; carried for compatibility).
      write_noise_std: write noise std in units of ``dw_min`` (> 0: the device keeps persistent
        weights, spec §4.11); only on models that support it.
      apply_write_noise_on_set: draw write noise when weights are set.
    """

    supports_write_noise: ClassVar[bool] = True

    construction_seed: int = 0
    dw_min: float = 0.001
    dw_min_dtod: float = 0.3
    dw_min_dtod_log_normal: bool = False
    dw_min_std: float = 0.3
    w_max: float = 0.6
    w_min: float = -0.6
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.01
    enforce_consistency: bool = True
    perfect_bias: bool = False
    lifetime: float = 0.0
    lifetime_dtod: float = 0.0
    diffusion: float = 0.0
    diffusion_dtod: float = 0.0
    reset: float = 0.0
    reset_dtod: float = 0.0
    reset_std: float = 0.01
    drift: DriftParameter = dataclasses.field(default_factory=DriftParameter)
    corrupt_devices_prob: float = 0.0
    corrupt_devices_range: float = 0.1
    count_pulses: bool = False
    write_noise_std: float = 0.0
    apply_write_noise_on_set: bool = True

    def __post_init__(self) -> None:
        _check_seed(self)
        v.check_positive(self, "dw_min")
        for name in ("dw_min_dtod", "dw_min_std", "w_max_dtod", "w_min_dtod", "up_down_dtod",
                     "lifetime", "lifetime_dtod", "diffusion", "diffusion_dtod", "reset_dtod",
                     "reset_std", "write_noise_std"):
            v.check_non_negative(self, name)
        for name in ("w_max", "w_min", "up_down", "reset", "corrupt_devices_range"):
            v.check_finite(self, name)
        if self.w_min > 0:
            raise ValueError(
                f"{type(self).__name__}.w_min = {self.w_min!r}: expected a number <= 0 "
                "([w_min, w_max] must contain 0)"
            )
        if self.w_max < 0:
            raise ValueError(
                f"{type(self).__name__}.w_max = {self.w_max!r}: expected a number >= 0 "
                "([w_min, w_max] must contain 0)"
            )
        v.check_range(self, "corrupt_devices_prob", 0.0, 1.0)
        for name in ("dw_min_dtod_log_normal", "enforce_consistency", "perfect_bias", "count_pulses",
                     "apply_write_noise_on_set"):
            v.check_bool(self, name)
        v.check_instance(self, "drift", DriftParameter)
        if not self.supports_write_noise and self.write_noise_std > 0:
            raise ValueError(
                f"{type(self).__name__}.write_noise_std = {self.write_noise_std!r}: this device "
                "model has no write noise (aihwkit aborts); expected 0"
            )

    def requires_diffusion(self) -> bool:
        return self.diffusion > 0.0

    def requires_decay(self) -> bool:
        return self.lifetime > 0.0

    def uses_persistent_weights(self) -> bool:
        """Whether pulses act on hidden persistent weights (``write_noise_std > 0``, spec §4.11)."""
        return self.write_noise_std > 0.0


@dataclasses.dataclass(frozen=True)
class ConstantStepDevice(PulsedDevice):
    """Constant step up to hard bounds (aihwkit ``ConstantStepDevice``, spec §4.4).

    No write noise: ``write_noise_std > 0`` raises ``ValueError``.
    """

    supports_write_noise: ClassVar[bool] = False


def _check_reverse(obj: PulsedDevice) -> None:
    for name in ("mult_noise", "reverse_up", "reverse_down"):
        v.check_bool(obj, name)
    v.check_finite(obj, "reverse_offset")
    if (obj.reverse_up or obj.reverse_down) and not obj.mult_noise:  # type: ignore[attr-defined]
        raise ValueError(
            f"{type(obj).__name__}.mult_noise = False: reverse_up / reverse_down require "
            "mult_noise=True (aihwkit aborts otherwise)"
        )


@dataclasses.dataclass(frozen=True)
class LinearStepDevice(PulsedDevice):
    """Step size linear in the weight (aihwkit ``LinearStepDevice``, spec §4.5).

    Attributes (beyond :class:`PulsedDevice`):
      gamma_up, gamma_down: relative decrease of the up / down step at the (mean) bound.
      gamma_up_dtod, gamma_down_dtod: device-to-device std of those (absolute).
      allow_increasing: allow negative gammas (growing steps); otherwise ``|gamma|``.
      mean_bound_reference: slopes relative to the mean bounds ``w_max``/``w_min`` (else to the
        device's own bounds).
      mult_noise: cycle-to-cycle noise on the full step (else only on the constant part).
      reverse_up, reverse_down: step grows toward the bound (reference at the opposite bound
        offset by ``reverse_offset``); requires ``mult_noise``.
      reverse_offset: offset of the reversed reference point.
    """

    gamma_up: float = 0.0
    gamma_down: float = 0.0
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    allow_increasing: bool = False
    mean_bound_reference: bool = True
    mult_noise: bool = True
    reverse_up: bool = False
    reverse_down: bool = False
    reverse_offset: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_finite(self, "gamma_up")
        v.check_finite(self, "gamma_down")
        v.check_non_negative(self, "gamma_up_dtod")
        v.check_non_negative(self, "gamma_down_dtod")
        v.check_bool(self, "allow_increasing")
        v.check_bool(self, "mean_bound_reference")
        _check_reverse(self)


@dataclasses.dataclass(frozen=True)
class SoftBoundsDevice(PulsedDevice):
    """Soft bounds: step shrinks linearly to 0 at the device's own bound (aihwkit
    ``SoftBoundsDevice``, spec §4.6). A LinearStep with ``gamma = 1``, no gamma dtod, no
    increasing slopes and per-device bound references.

    Attributes (beyond :class:`PulsedDevice`): ``mult_noise``, ``reverse_up``, ``reverse_down``,
    ``reverse_offset`` as in :class:`LinearStepDevice`.
    """

    mult_noise: bool = True
    reverse_up: bool = False
    reverse_down: bool = False
    reverse_offset: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_reverse(self)


@dataclasses.dataclass(frozen=True)
class SoftBoundsPmaxDevice(SoftBoundsDevice):
    """Soft bounds parameterised by the pulse response (aihwkit ``SoftBoundsPmaxDevice``, §4.6).

    On construction the SoftBounds parameters are derived (aihwkit does this in ``as_bindings``):
    ``B = (range_max - range_min) / (1 - exp(-p_max·alpha))``, ``w_min = range_min``,
    ``w_max = range_min + B``, ``dw_min = B·alpha``, ``up_down = 1 + 2·range_min/B``. Values
    passed for ``w_min``, ``w_max``, ``dw_min``, ``up_down`` are ignored (overwritten).

    Attributes (beyond :class:`SoftBoundsDevice`):
      p_max: number of up pulses that drive the device from ``range_min`` to ``range_max``.
      alpha: soft-bounds slope.
      range_min, range_max: weight at 0 and at ``p_max`` up pulses.
    """

    p_max: int = 1000
    alpha: float = 0.001 / 2
    range_min: float = -1.0
    range_max: float = 1.0
    w_min: float | None = None  # type: ignore[assignment]
    w_max: float | None = None  # type: ignore[assignment]
    dw_min: float | None = None  # type: ignore[assignment]
    up_down: float | None = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        v.check_int(self, "p_max", minimum=1)
        v.check_positive(self, "alpha")
        v.check_finite(self, "range_min")
        v.check_finite(self, "range_max")
        if self.range_max <= self.range_min:
            raise ValueError(
                f"SoftBoundsPmaxDevice.range_max = {self.range_max!r}: expected a number > "
                f"range_min = {self.range_min!r}"
            )
        b_factor = (self.range_max - self.range_min) / (1.0 - math.exp(-self.p_max * self.alpha))
        object.__setattr__(self, "w_min", float(self.range_min))
        object.__setattr__(self, "w_max", float(self.range_min + b_factor))
        object.__setattr__(self, "dw_min", float(b_factor * self.alpha))
        object.__setattr__(self, "up_down", float(1.0 + 2.0 * self.range_min / b_factor))
        super().__post_init__()

    def as_soft_bounds(self) -> SoftBoundsDevice:
        """The equivalent :class:`SoftBoundsDevice` (every other field copied)."""
        kwargs = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(SoftBoundsDevice)
        }
        return SoftBoundsDevice(**kwargs)


@dataclasses.dataclass(frozen=True)
class SoftBoundsReferenceDevice(PulsedDevice):
    """Soft bounds around a per-device reference (aihwkit ``SoftBoundsReferenceDevice``, §4.6).

    The visible weight is ``w = c - reference``; pulses act on the conductance ``c``.

    Attributes (beyond :class:`PulsedDevice`):
      mult_noise: multiplicative cycle-to-cycle noise (default additive).
      slope_up_dtod, slope_down_dtod: relative device-to-device std of the soft-bound slopes
        (rescales the bounds).
      reference_mean, reference_std: mean and device-to-device std of the reference.
      subtract_symmetry_point: shift reference and reset bias by the device's symmetry point.
    """

    mult_noise: bool = False
    slope_up_dtod: float = 0.0
    slope_down_dtod: float = 0.0
    reference_mean: float = 0.0
    reference_std: float = 0.0
    subtract_symmetry_point: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_bool(self, "mult_noise")
        v.check_non_negative(self, "slope_up_dtod")
        v.check_non_negative(self, "slope_down_dtod")
        v.check_finite(self, "reference_mean")
        v.check_non_negative(self, "reference_std")
        v.check_bool(self, "subtract_symmetry_point")


@dataclasses.dataclass(frozen=True)
class ExpStepDevice(PulsedDevice):
    """Exponential step-size dependence (aihwkit ``ExpStepDevice``, spec §4.7). All tile-wide.

    Attributes (beyond :class:`PulsedDevice`): ``A_up``, ``A_down``, ``gamma_up``, ``gamma_down``,
    ``a``, ``b`` (shape of the step curves), ``dw_min_std_add``, ``dw_min_std_slope`` (the
    "complex" cycle-to-cycle noise, active when ``dw_min_std > 0`` and either is non-zero).
    """

    A_up: float = 0.00081
    A_down: float = 0.36833
    gamma_up: float = 12.44625
    gamma_down: float = 12.78785
    a: float = 0.244
    b: float = 0.2425
    dw_min_std_add: float = 0.0
    dw_min_std_slope: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("A_up", "A_down", "gamma_up", "gamma_down", "a", "b", "dw_min_std_add",
                     "dw_min_std_slope"):
            v.check_finite(self, name)

    def has_complex_noise(self) -> bool:
        """aihwkit's ``hasComplexNoise``: the additive, weight-dependent noise form is used."""
        return self.dw_min_std > 0.0 and (self.dw_min_std_add != 0.0 or self.dw_min_std_slope != 0.0)


@dataclasses.dataclass(frozen=True)
class PowStepDevice(PulsedDevice):
    """Power-law step-size dependence (aihwkit ``PowStepDevice``, spec §4.8).

    Attributes (beyond :class:`PulsedDevice`):
      pow_gamma: mean exponent.
      pow_gamma_dtod: device-to-device std of the exponent gain (relative).
      pow_up_down: systematic up/down asymmetry of the exponent (same convention as ``up_down``).
      pow_up_down_dtod: device-to-device std of that asymmetry (absolute, relative to pow_gamma).
    """

    pow_gamma: float = 1.0
    pow_gamma_dtod: float = 0.1
    pow_up_down: float = 0.0
    pow_up_down_dtod: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_finite(self, "pow_gamma")
        v.check_non_negative(self, "pow_gamma_dtod")
        v.check_finite(self, "pow_up_down")
        v.check_non_negative(self, "pow_up_down_dtod")


@dataclasses.dataclass(frozen=True)
class PowStepReferenceDevice(PulsedDevice):
    """PowStep around a per-device reference (aihwkit ``PowStepReferenceDevice``, spec §4.9).

    No write noise: ``write_noise_std > 0`` raises ``ValueError``.

    Attributes (beyond :class:`PulsedDevice`): the PowStep exponent fields, and
      subtract_symmetry_point: shift reference and reset bias by the numerically estimated
        symmetry point.
      n_estimation_steps: iterations of that estimate (<= 0: ``min(round(10·R/min step), 10000)``).
      reference_mean, reference_std: mean and device-to-device std of the reference.
    """

    supports_write_noise: ClassVar[bool] = False

    pow_gamma: float = 1.0
    pow_gamma_dtod: float = 0.1
    pow_up_down: float = 0.0
    pow_up_down_dtod: float = 0.0
    subtract_symmetry_point: bool = False
    n_estimation_steps: int = -1
    reference_mean: float = 0.0
    reference_std: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_finite(self, "pow_gamma")
        v.check_non_negative(self, "pow_gamma_dtod")
        v.check_finite(self, "pow_up_down")
        v.check_non_negative(self, "pow_up_down_dtod")
        v.check_bool(self, "subtract_symmetry_point")
        v.check_int(self, "n_estimation_steps")
        v.check_finite(self, "reference_mean")
        v.check_non_negative(self, "reference_std")


@dataclasses.dataclass(frozen=True)
class PiecewiseStepDevice(PulsedDevice):
    """Step size interpolated piecewise-linearly over the bound range (aihwkit
    ``PiecewiseStepDevice``, spec §4.10).

    Attributes (beyond :class:`PulsedDevice`):
      piecewise_up, piecewise_down: node values (relative multipliers of the step), equally
        spaced from ``min_bound`` to ``max_bound``; same length >= 1. Lists are converted to
        tuples.
    """

    piecewise_up: tuple[float, ...] = (1.0,)
    piecewise_down: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("piecewise_up", "piecewise_down"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"PiecewiseStepDevice.{name} = {value!r}: expected a sequence of numbers")
            nodes = tuple(value)
            if len(nodes) < 1:
                raise ValueError(f"PiecewiseStepDevice.{name} = {value!r}: expected at least one node")
            for node in nodes:
                if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
                    raise ValueError(
                        f"PiecewiseStepDevice.{name} = {value!r}: expected finite numbers, got {node!r}"
                    )
            object.__setattr__(self, name, tuple(float(x) for x in nodes))
        if len(self.piecewise_up) != len(self.piecewise_down):
            raise ValueError(
                f"PiecewiseStepDevice.piecewise_down has {len(self.piecewise_down)} nodes: expected "
                f"the same number as piecewise_up ({len(self.piecewise_up)})"
            )
