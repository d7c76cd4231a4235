"""Parameters of the pulsed (stochastic) weight update (aihwkit ``UpdateParameters``).

Names and Python defaults follow aihwkit 1.2.0 (``src/aihwkit/simulator/parameters/training.py``);
semantics are spec tile-core §3. One field is rpujax's own: ``backend`` picks the implementation of
the pulsed update (FFI kernel or pure JAX); it never changes the distribution of the result.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings

from rpujax.configs._validation import (
    check_bool,
    check_finite,
    check_int,
    check_positive,
    coerce_enum,
)

__all__ = ["PulseType", "UpdateParameters"]

BACKENDS = ("auto", "ffi", "jax")


class PulseType(enum.Enum):
    """How ``x`` and ``d`` are turned into pulses (spec tile-core §3.2, §3.5, §3.6)."""

    NONE = "None"
    """Exact floating-point update ``W <- W - lr * sum_b d_b x_b^T``; the device is ignored."""

    STOCHASTIC_COMPRESSED = "StochasticCompressed"
    """Stochastic pulse trains; coincidences of x and d bits fire the device (default)."""

    STOCHASTIC = "Stochastic"
    """Like ``STOCHASTIC_COMPRESSED`` (identical in distribution on aihwkit's CPU tile)."""

    NONE_WITH_DEVICE = "NoneWithDevice"
    """Exact floating-point step per sample, then clip to the device's hard bounds."""

    MEAN_COUNT = "MeanCount"
    """Deterministic: the expected pulse counts, rounded (no randomness in the counts)."""

    DETERMINISTIC_IMPLICIT = "DeterministicImplicit"
    """Deterministic: ``rint(BL * p_d * p_x)`` pulses per cross point."""


@dataclasses.dataclass(frozen=True)
class UpdateParameters:
    """Parameters of the pulsed update (aihwkit ``UpdateParameters``), spec tile-core §3.1.

    Attributes:
      desired_bl: pulse-train length BL (>= 1); with ``update_bl_management`` the maximum BL.
      fixed_bl: keep ``BL = desired_bl``; if False and ``update_bl_management`` is off, BL grows
        to ``ceil(lr / g)`` when ``lr > g * desired_bl`` (spec §3.3, §7.22).
      pulse_type: a :class:`PulseType` (or its name).
      res: bin width of the pulse probabilities, in probability units (0..1); ``<= 0`` disables the
        quantisation. **Warning:** as in aihwkit 1.2.0, a value > 1 is *not* read as a number of
        steps: it is used as a bin width larger than any probability, so (with deterministic
        rounding) no pulse ever fires. rpujax reproduces that and emits a ``UserWarning``; write
        ``1 / n_steps`` for ``n_steps`` levels.
      sto_round: stochastic rounding of the probability quantisation (``res``, and of
        ``x_res_implicit`` / ``d_res_implicit`` for ``DETERMINISTIC_IMPLICIT``).
      x_res_implicit: bin width of the x probabilities of ``DETERMINISTIC_IMPLICIT`` (same caveat
        as ``res`` for values > 1).
      d_res_implicit: bin width of the d probabilities of ``DETERMINISTIC_IMPLICIT``.
      d_sparsity: aihwkit records the fraction of zero d probabilities (only used by compound
        devices); accepted for compatibility, it does not change the update.
      update_bl_management: per-sample BL from the input magnitudes (UBLM).
      update_management: per-sample balancing of the x and d probabilities (UM). As in aihwkit's
        C++ ``initialize``, UM is effectively on whenever UBLM is on, whatever this field says.
      um_grad_scale: bias of the UM balancing toward d (> 0).
      backend: rpujax only. ``"auto"`` (the FFI kernel where it is built, else pure JAX),
        ``"ffi"`` (the kernel; an error if it is unavailable) or ``"jax"`` (pure JAX). Both
        backends draw the same random numbers for the same key.
    """

    desired_bl: int = 31
    fixed_bl: bool = True
    pulse_type: PulseType = PulseType.STOCHASTIC_COMPRESSED
    res: float = 0
    x_res_implicit: float = 0
    d_res_implicit: float = 0
    d_sparsity: bool = False
    sto_round: bool = False
    update_bl_management: bool = True
    update_management: bool = True
    um_grad_scale: float = 1.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_int(self, "desired_bl", minimum=1)
        check_bool(self, "fixed_bl")
        coerce_enum(self, "pulse_type", PulseType)
        for name in ("res", "x_res_implicit", "d_res_implicit"):
            check_finite(self, name)
            value = getattr(self, name)
            if value > 1:
                warnings.warn(
                    f"{type(self).__name__}.{name} = {value!r} > 1 is used as a bin width larger "
                    "than any pulse probability (aihwkit 1.2.0 does not convert it to 1/value), so "
                    "it suppresses pulses; use a bin width <= 1 (e.g. 1/n_steps)",
                    UserWarning,
                    stacklevel=3,
                )
        check_bool(self, "d_sparsity")
        check_bool(self, "sto_round")
        check_bool(self, "update_bl_management")
        check_bool(self, "update_management")
        check_positive(self, "um_grad_scale")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"{type(self).__name__}.backend = {self.backend!r}: expected one of {BACKENDS}"
            )

    @property
    def effective_update_management(self) -> bool:
        """Whether UM is active (aihwkit forces it on when UBLM is on)."""
        return self.update_management or self.update_bl_management
