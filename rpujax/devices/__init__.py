"""Device models: construction sampling (device-to-device) and single-pulse rules.

Public interface:

- :func:`sample_device_parameters` — the per-cross-point arrays of a device (spec tile-core §1.3).
- :func:`weight_granularity` — the granularity ``g`` used by update management (§4.3).
- :func:`kernel_layout` — ``(kind, param names, scalars)`` for the pulse rule (ffi/README.md §3).
- :func:`uses_persistent_weights` — whether pulses act on hidden persistent weights (§4.11).
- :func:`apply_pulse` — one pulse of every element for a device kind (§4.4–§4.10), the reference
  the C++/CUDA ``ffi/device_rules.h`` mirrors.
- :func:`summable` / :func:`apply_summed_pulses` — the exact summed ConstantStep form.
- :func:`pack_params` — the ``(P, D, X)`` parameter stack of the kernel call.

Units: weights and steps are in device (raw tile weight) units; ``xi`` is a standard normal.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from rpujax.configs.devices import (
    ConstantStepDevice,
    ExpStepDevice,
    FloatingPointDevice,
    IdealDevice,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    PowStepReferenceDevice,
    PulsedDevice,
    SoftBoundsDevice,
    SoftBoundsReferenceDevice,
)
from rpujax.devices import constant_step, exp_step, linear_step, piecewise, pow_step, soft_bounds_reference
from rpujax.devices.base import (
    BASE_NAMES,
    CONSTANT_STEP,
    EXP_STEP,
    KIND_NAMES,
    LINEAR_STEP,
    PIECEWISE_STEP,
    POW_STEP,
    POW_STEP_REFERENCE,
    SOFT_BOUNDS_REFERENCE,
    XI_MAX,
    clip_bounds,
    construction_key,
    sample_base,
    sample_simple,
)

Array = jax.Array

__all__ = [
    "BASE_NAMES",
    "CONSTANT_STEP",
    "EXP_STEP",
    "KIND_NAMES",
    "LINEAR_STEP",
    "PIECEWISE_STEP",
    "POW_STEP",
    "POW_STEP_REFERENCE",
    "SOFT_BOUNDS_REFERENCE",
    "XI_MAX",
    "apply_pulse",
    "apply_summed_pulses",
    "clip_bounds",
    "extra_parameter_names",
    "kernel_layout",
    "num_params",
    "pack_params",
    "sample_device_parameters",
    "summable",
    "uses_persistent_weights",
    "weight_granularity",
]

_PulseFn = Callable[[tuple, Array, tuple, Array, Array], Array]

_PULSE: dict[int, _PulseFn] = {
    CONSTANT_STEP: constant_step.pulse,
    LINEAR_STEP: linear_step.pulse,
    EXP_STEP: exp_step.pulse,
    POW_STEP: pow_step.pulse_pow,
    POW_STEP_REFERENCE: pow_step.pulse_reference,
    SOFT_BOUNDS_REFERENCE: soft_bounds_reference.pulse,
    PIECEWISE_STEP: piecewise.pulse,
}

_PARAM_NAMES: dict[int, tuple[str, ...]] = {
    CONSTANT_STEP: constant_step.PARAM_NAMES,
    LINEAR_STEP: linear_step.PARAM_NAMES,
    EXP_STEP: exp_step.PARAM_NAMES,
    POW_STEP: pow_step.POW_PARAM_NAMES,
    POW_STEP_REFERENCE: pow_step.REF_PARAM_NAMES,
    SOFT_BOUNDS_REFERENCE: soft_bounds_reference.PARAM_NAMES,
    PIECEWISE_STEP: piecewise.PARAM_NAMES,
}


def _kind(device: Any) -> int:
    # SoftBoundsPmaxDevice is a SoftBoundsDevice, so it lands on kind 1 as well.
    if isinstance(device, ConstantStepDevice):
        return CONSTANT_STEP
    if isinstance(device, (LinearStepDevice, SoftBoundsDevice)):
        return LINEAR_STEP
    if isinstance(device, ExpStepDevice):
        return EXP_STEP
    if isinstance(device, PowStepDevice):
        return POW_STEP
    if isinstance(device, PowStepReferenceDevice):
        return POW_STEP_REFERENCE
    if isinstance(device, SoftBoundsReferenceDevice):
        return SOFT_BOUNDS_REFERENCE
    if isinstance(device, PiecewiseStepDevice):
        return PIECEWISE_STEP
    if isinstance(device, PulsedDevice):
        raise TypeError(
            f"{type(device).__name__} is not a pulsed device model: use one of ConstantStepDevice, "
            "LinearStepDevice, SoftBoundsDevice, SoftBoundsPmaxDevice, SoftBoundsReferenceDevice, "
            "ExpStepDevice, PowStepDevice, PowStepReferenceDevice, PiecewiseStepDevice"
        )
    raise TypeError(f"{type(device).__name__} has no pulse rule (not a pulsed device)")


def extra_parameter_names(device: Any) -> tuple[str, ...]:
    """Names of the model-specific per-cross-point arrays (after the base names and
    ``persistent_weights`` in aihwkit's hidden-parameter order); () for ideal / FP devices."""
    if isinstance(device, (IdealDevice, FloatingPointDevice)):
        return ()
    kind = _kind(device)
    if kind == LINEAR_STEP:
        return linear_step.EXTRA_NAMES
    if kind == POW_STEP:
        return pow_step.POW_EXTRA_NAMES
    if kind == POW_STEP_REFERENCE:
        return pow_step.REF_EXTRA_NAMES
    if kind == SOFT_BOUNDS_REFERENCE:
        return soft_bounds_reference.EXTRA_NAMES
    return ()


def sample_device_parameters(
    device: Any, key: Array, d_size: int, x_size: int, *, dtype: Any = jnp.float32
) -> dict[str, Array]:
    """Draw the per-cross-point device parameters of a ``(d_size, x_size)`` tile (spec §1.3).

    ``x_size`` counts the analog bias column when there is one; ``perfect_bias`` applies to the
    last column ``x_size − 1``. Every random quantity has its own independent stream; aihwkit's
    draw order is not reproduced (its statistics are).

    Seeding: if ``device.construction_seed != 0`` the draws come from
    ``jax.random.key(construction_seed)`` and ``key`` is ignored, so the same seed gives the same
    devices for any init key (also under ``vmap`` over keys). With seed 0 (the default; aihwkit:
    "from the clock") the draws come from ``key``.

    Returns, each ``(d_size, x_size)`` of ``dtype``:

    - pulsed devices: ``max_bound``, ``min_bound``, ``dwmin_up``, ``dwmin_down`` (positive under
      ``enforce_consistency``), ``decay_scales``, ``diffusion_rates``, ``reset_bias``,
      ``drift_nu`` (zeros without drift), then the model extras: LinearStep/SoftBounds
      ``slope_up``, ``slope_down``; PowStep ``gamma_up``, ``gamma_down``; PowStepReference
      ``gamma_up``, ``gamma_down``, ``reference``; SoftBoundsReference ``reference`` (its bounds
      and reset bias include the §4.6 rescaling / symmetry shift). ``persistent_weights`` is not
      created here (the tile copies the weights into it).
    - ``IdealDevice``: ``decay_scales`` (``1 − 1/lifetime`` if ``lifetime > 1`` else 1),
      ``diffusion_rates`` (= ``diffusion``), ``reset_bias`` (0); ``FloatingPointDevice`` also
      ``drift_nu`` (= ``drift.nu``, or 0 when drift is off). Nothing random (spec §5.6).
    """
    if not (isinstance(d_size, int) and isinstance(x_size, int)) or d_size < 0 or x_size < 0:
        raise ValueError(f"d_size, x_size = {d_size!r}, {x_size!r}: expected non-negative ints")
    if isinstance(device, (IdealDevice, FloatingPointDevice)):
        return sample_simple(device, d_size, x_size, jnp.dtype(dtype))
    kind = _kind(device)
    dtype = jnp.dtype(dtype)
    ckey = construction_key(device, key)
    params = sample_base(device, ckey, d_size, x_size, dtype)
    if kind == LINEAR_STEP:
        params.update(linear_step.sample_extras(device, ckey, params, dtype))
    elif kind == POW_STEP:
        params.update(pow_step.sample_extras_pow(device, ckey, params, dtype))
    elif kind == POW_STEP_REFERENCE:
        params.update(pow_step.sample_extras_reference(device, ckey, params, dtype))
    elif kind == SOFT_BOUNDS_REFERENCE:
        params.update(soft_bounds_reference.sample_extras(device, ckey, params, dtype))
    return {name: params[name] for name in BASE_NAMES + extra_parameter_names(device)}


def weight_granularity(device: Any) -> float:
    """Weight granularity ``g`` of a pulsed device (spec §4.3), in weight units.

    ConstantStep, LinearStep, SoftBounds(+Pmax), SoftBoundsReference: ``dw_min``;
    PowStep(Reference): ``dw_min·0.5^pow_gamma``; ExpStep: the mean down step at ``w = 0``
    (falls back to ``dw_min``); PiecewiseStep: ``dw_min·piecewise_up[len // 2]``.
    Raises ``TypeError`` for ideal / floating-point devices (they have no pulses).
    """
    kind = _kind(device)
    if kind in (POW_STEP, POW_STEP_REFERENCE):
        return pow_step.granularity(device)
    if kind == EXP_STEP:
        return exp_step.granularity(device)
    if kind == PIECEWISE_STEP:
        return piecewise.granularity(device)
    return float(device.dw_min)


def kernel_layout(device: Any) -> tuple[int, tuple[str, ...], tuple[float, ...]]:
    """``(kind, per-element parameter names in packing order, scalars)`` of the pulse rule,
    exactly the ffi/README.md §3 table. The scalars are static Python floats."""
    kind = _kind(device)
    if kind == CONSTANT_STEP:
        scalars = constant_step.scalars(device)
    elif kind == LINEAR_STEP:
        scalars = linear_step.scalars(device)
    elif kind == EXP_STEP:
        scalars = exp_step.scalars(device)
    elif kind == POW_STEP:
        scalars = pow_step.scalars_pow(device)
    elif kind == POW_STEP_REFERENCE:
        scalars = pow_step.scalars_reference(device)
    elif kind == SOFT_BOUNDS_REFERENCE:
        scalars = soft_bounds_reference.scalars(device)
    else:
        scalars = piecewise.scalars(device)
    return kind, _PARAM_NAMES[kind], scalars


def pack_params(device: Any, params: dict[str, Array]) -> Array:
    """Stack a device's per-element arrays in :func:`kernel_layout` order: ``(P, *shape)``, the
    ``params`` operand of the pulsed-update kernel."""
    _, names, _ = kernel_layout(device)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"{type(device).__name__}: device parameters {missing} missing (have {sorted(params)})")
    return jnp.stack([params[n] for n in names])


def num_params(kind: int) -> int:
    """Number of per-element parameter arrays ``P`` of a device kind."""
    return len(_PARAM_NAMES[kind])


def uses_persistent_weights(device: Any) -> bool:
    """Whether the device keeps persistent weights (``write_noise_std > 0``, spec §4.11)."""
    return isinstance(device, PulsedDevice) and device.write_noise_std > 0.0


def summable(kind: int) -> bool:
    """Whether ``n`` pulses of a kind may be replaced by :func:`apply_summed_pulses` (only
    ConstantStep, under its guard)."""
    return kind == CONSTANT_STEP


def _check_args(kind: int, scalars: tuple, w: Array, params: tuple, down: Array, xi: Array,
                *extra: Array) -> None:
    if kind not in _PULSE:
        raise ValueError(f"kind = {kind!r}: expected one of {sorted(_PULSE)}")
    expected = len(_PARAM_NAMES[kind])
    if len(params) != expected:
        raise ValueError(
            f"kind {kind} ({KIND_NAMES[kind]}): got {len(params)} parameter arrays, expected "
            f"{expected} {_PARAM_NAMES[kind]}"
        )
    shapes = [jnp.shape(w), *(jnp.shape(p) for p in params), jnp.shape(down), jnp.shape(xi),
              *(jnp.shape(e) for e in extra)]
    try:
        jnp.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(
            f"kind {kind}: shapes do not broadcast: w {jnp.shape(w)}, params "
            f"{[jnp.shape(p) for p in params]}, down {jnp.shape(down)}, xi {jnp.shape(xi)}"
            + (f", n {[jnp.shape(e) for e in extra]}" if extra else "")
        ) from None


def apply_pulse(
    kind: int, scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array
) -> Array:
    """Apply ONE pulse to every element: the device rule of ``kind``, then the clip.

    Args:
      kind: device kind (:func:`kernel_layout`).
      scalars: the kind's static scalars (:func:`kernel_layout`), Python floats.
      w: weights (the persistent weights when write noise is on), any shape.
      params: the per-element arrays in :func:`kernel_layout` order, broadcastable with ``w``.
      down: bool, True for a down pulse (``w`` decreases), False for up.
      xi: the cycle-to-cycle standard normal of this pulse, per element.

    Returns the new weights (same dtype as ``w``). Write noise is not applied here.

    Rules (``σ = dw_min_std = scalars[0]``, ``s_up = dwmin_up``, ``s_down = dwmin_down``,
    ``clip(v) = MIN(MAX(v, b_min), b_max)`` with C's ``MAX(a,b) = a > b ? a : b`` and
    ``MIN(a,b) = a < b ? a : b`` — a NaN becomes ``b_min``):

    - 0 ConstantStep: up ``w + s_up(1 + σξ)``, down ``w − s_down(1 + σξ)``; clip.
    - 1 LinearStep/SoftBounds: mult (``scalars[1] = 1``) up ``w + (slope_up·w + s_up)(1 + σξ)``,
      down ``w − (slope_down·w + s_down)(1 + σξ)``; additive up ``w + slope_up·w + s_up(1 + σξ)``,
      down ``w − slope_down·w − s_down(1 + σξ)``; clip.
    - 2 ExpStep: if ``R = b_max − b_min ≤ 0`` unchanged (no clip). ``z = (2w/R)·a + b``; down
      ``Δ = −s_down·MAX(1 − A_down·e^{−γ_down z}, 0)``, up ``Δ = s_up·MAX(1 − A_up·e^{γ_up z}, 0)``;
      ``w + Δ(1 + σξ)``, or with complex noise (``σ > 0`` and ``add ≠ 0`` or ``slope ≠ 0``)
      ``w + Δ + σ(|Δ| + add + slope·|w|)ξ``; clip.
    - 3 PowStep: if ``R = b_max − b_min == 0`` unchanged (no clip). Up
      ``w + s_up((b_max − w)/R)^{γ⁺}(1 + σξ)``, down ``w − s_down((w − b_min)/R)^{γ⁻}(1 + σξ)``;
      clip.
    - 4 PowStepReference: ``c = w + ref``; if ``R == 0`` unchanged; PowStep rule on ``c``; clip
      ``c``; ``w = c − ref``.
    - 5 SoftBoundsReference: ``c = w + ref``; up ``a = c/b_max`` (0 if ``b_max ≤ 0``), mult
      ``c + s_up(1 − a)(1 + σξ)``, add ``c + s_up(1 − a + σξ)``; down ``a = c/b_min`` (0 if
      ``b_min ≥ 0``), ``c − s_down(1 − a)(1 + σξ)`` or ``c − s_down(1 − a + σξ)``; clip ``c``;
      ``w = c − ref``.
    - 6 PiecewiseStep: ``N`` nodes ``v`` of the direction, ``m = N − 1``; if ``m == 0`` or
      ``b_max ≤ b_min``: ``step = v[0]·s``; else ``u = MAX((w − b_min)/(b_max − b_min)·m, 0)``,
      ``k = MIN(floor(u), m − 1)``, ``t = MIN(u − k, 1)``, ``step = s((1 − t)v[k] + t·v[k+1])``;
      up ``w + step(1 + σξ)``, down ``w − step(1 + σξ)``; clip.
    """
    _check_args(kind, scalars, w, params, down, xi)
    w = jnp.asarray(w)
    down = jnp.asarray(down, bool)
    xi = jnp.asarray(xi, w.dtype)
    params = tuple(jnp.asarray(p, w.dtype) for p in params)
    return _PULSE[kind](tuple(scalars), w, params, down, xi).astype(w.dtype)


def apply_summed_pulses(
    kind: int, scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array,
    n: Array, xi: Array
) -> tuple[Array, Array]:
    """``n`` same-direction pulses as one normal draw, for :func:`summable` kinds (ffi/README §3).

    Returns ``(w_summed, ok)``: ``w_summed = w ∓ (n·s + s·σ·sqrt(n)·ξ)`` (``s = s_down`` for
    down, ``s_up`` for up, ``ξ`` the SUM_NORMAL draw) and the guard ``ok`` =
    ``w − n|s|(1 + XI_MAX·σ) ≥ b_min`` and ``w + n|s|(1 + XI_MAX·σ) ≤ b_max``. Where ``ok`` is
    False the result is not valid and the pulses must be applied one by one.
    """
    if not summable(kind):
        raise ValueError(f"kind {kind} ({KIND_NAMES.get(kind, '?')}) has no summed form")
    _check_args(kind, scalars, w, params, down, xi, n)
    w = jnp.asarray(w)
    params = tuple(jnp.asarray(p, w.dtype) for p in params)
    return constant_step.summed(tuple(scalars), w, params, jnp.asarray(down, bool), jnp.asarray(n),
                                jnp.asarray(xi, w.dtype))
