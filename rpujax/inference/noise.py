"""Statistical noise models of programmed analog weights (spec cells-inference-api §4.5–§4.8).

Three stages, each a pure function of its inputs and an explicit key:

* :func:`apply_programming_noise` converts the target weights to conductances, adds programming
  noise and draws the per-device drift parameters (drift exponents ν for the PCM models, the
  target conductances for the ReRAM models); the parameters stay fixed afterwards.
* :func:`apply_drift_noise` re-converts the *programmed* weights to conductances (with their own
  abs-max) and applies drift and accumulated read noise at ``t_inference`` seconds after the end of
  programming. It always starts from the programmed weights: drift is not cumulative, and every
  call draws fresh read noise.
* :func:`apply_noise` is aihwkit's one-shot ``apply_noise`` (both stages with fresh draws).

Conductances are in µS, times in seconds. All functions act on one tile ``(D, X)``; use
``jax.vmap`` for batches of tiles or seeds. ``t_inference`` may be a Python number (checked: a
negative or non-finite time raises ``ValueError``) or a traced scalar (a negative value then yields
NaN weights, since it cannot raise inside ``jit``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.configs.inference import (
    CustomDriftPCMLikeNoiseModel,
    HermesNoiseModel,
    PCMLikeNoiseModel,
    ReRamCMONoiseModel,
    ReRamWan2022NoiseModel,
    StateIndependentNoiseModel,
)
from rpujax.inference import _random as _rnd
from rpujax.inference.converters import from_conductances, to_conductances

Array = jax.Array

_ZERO_CLIP = 1e-7

__all__ = [
    "apply_drift_noise",
    "apply_noise",
    "apply_programming_noise",
    "check_inference_time",
    "drift_coefficients",
    "drift_noise_to_conductance",
    "programming_noise_to_conductance",
]


def check_inference_time(t_inference: Any, name: str = "t_inference") -> Array | float:
    """Validate an inference time (s) and return it.

    A concrete value (Python number, NumPy or concrete JAX scalar) must be finite and ``>= 0``,
    else ``ValueError``. A traced value cannot be checked inside ``jit``; it is returned with
    negative values replaced by NaN so that the result is visibly invalid rather than plausible.
    """
    if isinstance(t_inference, (jax.Array, np.ndarray)) and np.ndim(t_inference) != 0:
        raise ValueError(f"{name} has shape {np.shape(t_inference)}, expected a scalar")
    try:
        value = float(t_inference)
    except (TypeError, jax.errors.ConcretizationTypeError):
        t = jnp.asarray(t_inference)
        return jnp.where(t >= 0, t, jnp.nan)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} = {t_inference!r}: expected a finite time >= 0 in seconds, measured from the end "
            "of programming"
        )
    return value


def _poly(coeffs: tuple[float, ...], x: Array) -> Array:
    """``Σ_i c_i x^i`` (lowest order first), evaluated as aihwkit does (running power)."""
    out = jnp.full_like(x, coeffs[0]) if coeffs else jnp.zeros_like(x)
    power = jnp.ones_like(x)
    for c in coeffs[1:]:
        power = power * x
        out = out + c * power
    return out


def _read_factor(t: Any, t_read: float) -> Any:
    """``sqrt(ln((t + t_read) / (2 t_read)))``: accumulated 1/f noise since programming."""
    if isinstance(t, float):
        return math.sqrt(math.log((t + t_read) / (2.0 * t_read)))
    return jnp.sqrt(jnp.log((t + t_read) / (2.0 * t_read)))


# ---------------------------------------------------------------------------------------------
# Per-conductance physics
# ---------------------------------------------------------------------------------------------


def programming_noise_to_conductance(model: Any, g_target: Array, key: Array) -> Array:
    """Programmed conductances (µS) for target conductances ``g_target`` (any shape)."""
    xi = _rnd.normal(key, g_target.shape, g_target.dtype)
    if isinstance(model, (PCMLikeNoiseModel, HermesNoiseModel)):
        sig = _poly(model.prog_coeff, g_target / model.g_max) * (model.g_max / model.prog_coeff_g_max_reference)
        return jnp.maximum(g_target + model.prog_noise_scale * sig * xi, 0.0)
    if isinstance(model, StateIndependentNoiseModel):
        sig = _poly(model.prog_coeff, g_target / model.g_max)
        return jnp.maximum(g_target + model.prog_noise_scale * sig * xi, 0.0)
    if isinstance(model, ReRamWan2022NoiseModel):
        return _wan2022_draw(model, g_target, model.coeff_dic[0][1], xi)
    if isinstance(model, ReRamCMONoiseModel):
        # Polynomial in g itself (not g/g_max), no clamp at 0, as aihwkit.
        sig = _poly(model.prog_coefficients, g_target)
        return g_target + sig * xi * model.prog_noise_scale
    raise ValueError(f"programming_noise_to_conductance: unknown noise model {model!r}")


def _wan2022_draw(model: ReRamWan2022NoiseModel, g_target: Array, coeffs: tuple[float, ...], xi: Array) -> Array:
    sig = _poly(coeffs, g_target / model.g_max) * (model.g_max / model.coeff_g_max_reference)
    return jnp.maximum(g_target + model.noise_scale * sig * xi, 0.0)


def drift_coefficients(model: Any, g_target: Array, key: Array) -> Array:
    """Per-device drift parameters drawn once at programming from the target conductances.

    PCM-like models: drift exponents ``ν >= 0``; ReRAM models: the target conductances themselves.
    """
    if isinstance(model, (ReRamWan2022NoiseModel, ReRamCMONoiseModel)):
        return g_target
    xi = _rnd.normal(key, g_target.shape, g_target.dtype)
    if isinstance(model, CustomDriftPCMLikeNoiseModel):
        table = model.drift_table()
        g_lst = jnp.asarray(table["g_lst"], g_target.dtype)
        g = jnp.clip(g_target, g_lst[0], g_lst[-1])
        mu = jnp.interp(g, g_lst, jnp.asarray(table["nu_mean_lst"], g_target.dtype))
        sig = jnp.interp(g, g_lst, jnp.asarray(table["nu_std_lst"], g_target.dtype))
        return jnp.abs(mu + sig * xi) * model.drift_scale
    if isinstance(model, PCMLikeNoiseModel):
        g_rel = jnp.maximum(jnp.abs(g_target / model.g_max), _ZERO_CLIP)
        log_g = jnp.log(g_rel)
        mu = jnp.clip(-0.0155 * log_g + 0.0244, 0.049, 0.1)
        sig = jnp.clip(-0.0125 * log_g - 0.0059, 0.008, 0.045)
        return jnp.abs(mu + sig * xi) * model.drift_scale
    if isinstance(model, HermesNoiseModel):
        g_rel = jnp.maximum(jnp.abs(g_target / model.g_max), _ZERO_CLIP)
        log_g = jnp.log(g_rel)
        mu = jnp.where(
            g_rel < 0.0945,
            jnp.clip(-0.0387 * log_g - 0.0182, 0.0720, 0.13),
            -0.0436 * g_rel**2 - 0.0126 * g_rel + 0.0736,
        )
        if model.num_devices == 1:
            sig = jnp.where(
                g_rel < 0.3039,
                jnp.clip(-0.0120 * log_g - 0.0023, 0.0124, 0.04),
                -0.0165 * g_rel**2 + 0.0116 * g_rel + 0.0104,
            )
        else:
            sig = jnp.where(
                g_rel < 0.3055,
                jnp.clip(-0.0117 * log_g - 0.0057, 0.0091, 0.04),
                -0.0118 * g_rel**2 + 0.0093 * g_rel + 0.0073,
            )
        return jnp.abs(mu + sig * xi) * model.drift_scale
    if isinstance(model, StateIndependentNoiseModel):
        return jnp.abs(model.drift_nu_mean + model.drift_nu_std * xi) * model.drift_scale
    raise ValueError(f"drift_coefficients: unknown noise model {model!r}")


def _hermes_read_q(model: HermesNoiseModel, g_rel: Array) -> Array:
    log_g = jnp.log(jnp.maximum(g_rel, 1e-30))
    if model.num_devices == 1:
        return jnp.where(
            g_rel < 0.1591,
            jnp.clip(-0.0078 * log_g + 0.0038, 0.0179, 0.04),
            0.0664 * g_rel**3 - 0.1352 * g_rel**2 + 0.0768 * g_rel + 0.0088,
        )
    return jnp.where(
        g_rel < 0.16,
        jnp.clip(-0.0117 * log_g - 0.0069, 0.015, 0.04),
        0.0069 * g_rel**3 - 0.0280 * g_rel**2 + 0.0211 * g_rel + 0.0123,
    )


def drift_noise_to_conductance(model: Any, g_prog: Array, drift_param: Array, t_inference: Any, key: Array) -> Array:
    """Conductances (µS) at ``t_inference`` s after programming, from programmed conductances.

    ``drift_param`` is what :func:`drift_coefficients` returned for the same devices.
    """
    t_inf = check_inference_time(t_inference)
    if isinstance(model, ReRamWan2022NoiseModel):
        coeffs = _wan2022_coeffs(model, t_inf)
        xi = _rnd.normal(key, g_prog.shape, g_prog.dtype)
        # Redrawn around the target: the programming noise is discarded (aihwkit semantics).
        return _wan2022_draw(model, drift_param, coeffs, xi)
    if isinstance(model, ReRamCMONoiseModel):
        return _cmo_drift(model, g_prog, t_inf, key)
    if isinstance(model, (PCMLikeNoiseModel, HermesNoiseModel, StateIndependentNoiseModel)):
        t = t_inf + model.t_0
        log_ratio = jnp.log(jnp.asarray(t / model.t_0, g_prog.dtype))
        # t > t_0 exactly when t_inference > 0; at t_inference = 0 only read noise acts.
        g_drift = jnp.where(t > model.t_0, g_prog * jnp.exp(-drift_param * log_ratio), g_prog)
        read = _read_factor(t, model.t_read)
        xi = _rnd.normal(key, g_prog.shape, g_prog.dtype)
        if isinstance(model, StateIndependentNoiseModel):
            noise = jnp.abs(g_drift / model.g_max) * model.read_noise_scale * read * xi
        else:
            g_rel = jnp.abs(g_prog) / model.g_max
            if isinstance(model, HermesNoiseModel):
                q_s = _hermes_read_q(model, g_rel)
            else:
                q_s = jnp.minimum(0.0088 / jnp.maximum(g_rel**0.65, 1e-3), 0.2)
            noise = jnp.abs(g_drift) * model.read_noise_scale * q_s * read * xi
        return jnp.maximum(g_drift + noise, 0.0)
    raise ValueError(f"drift_noise_to_conductance: unknown noise model {model!r}")


def _wan2022_coeffs(model: ReRamWan2022NoiseModel, t_inf: Any) -> tuple[float, ...]:
    if not isinstance(t_inf, float):
        raise ValueError(
            "ReRamWan2022NoiseModel: t_inference must be a concrete Python number (one of the model's "
            f"times {list(model.times)} s), not a traced value"
        )
    table = dict(model.coeff_dic)
    if t_inf not in table:
        raise ValueError(
            f"ReRamWan2022NoiseModel: t_inference = {t_inf!r} s is not one of the model's times "
            f"{list(model.times)} s"
        )
    return table[t_inf]


def _cmo_drift(model: ReRamCMONoiseModel, g_prog: Array, t: Any, key: Array) -> Array:
    decay = dict(model.decay_dict)
    read = dict(model.read_dict)
    k1, k2 = jax.random.split(key)
    xi1 = _rnd.normal(k1, g_prog.shape, g_prog.dtype)
    xi2 = _rnd.normal(k2, g_prog.shape, g_prog.dtype)
    # t = 0 returns the programmed conductances; a safe log keeps the unused branch finite.
    t_safe = jnp.where(t > 0, t, 1.0)
    log_t = jnp.log(t_safe)
    g_mean = g_prog + decay["mean"][0] * log_t * model.drift_scale
    sig_relax = decay["std"][0] * log_t + decay["std"][1]
    g_drift = g_mean + xi1 * sig_relax * model.drift_scale
    t_read = read["t_read"]
    sig_read = read["K"] * jnp.log10(g_drift) * jnp.sqrt(jnp.log((t_safe + t_read) / (2.0 * t_read)))
    g_final = jnp.clip(g_drift + sig_read * xi2 * model.read_noise_scale, model.g_min, model.g_max)
    return jnp.where(t > 0, g_final, g_prog)


# ---------------------------------------------------------------------------------------------
# Weight-level API
# ---------------------------------------------------------------------------------------------


def apply_programming_noise(model: Any, weights: Array, key: Array) -> tuple[Array, Array]:
    """Program ``weights`` (the targets) with ``model``'s programming noise.

    Args:
      model: a noise model config.
      weights: ``(D, X)`` target weights (raw tile weights, analog-bias column included).
      key: a ``jax.random`` key.

    Returns:
      ``(programmed weights (D, X), drift parameters (S, D, X))``, ``S`` the number of
      conductances per cross-point.
    """
    weights = jnp.asarray(weights)
    if weights.ndim != 2:
        raise ValueError(f"apply_programming_noise: weights have shape {weights.shape}, expected (D, X)")
    k_prog, k_nu = jax.random.split(key)
    g_target, params = to_conductances(model.g_converter, weights)
    g_prog = programming_noise_to_conductance(model, g_target, k_prog)
    nu = drift_coefficients(model, g_target, k_nu)
    return from_conductances(model.g_converter, g_prog, params).astype(weights.dtype), nu


def apply_drift_noise(model: Any, programmed: Array, drift_params: Array, t_inference: Any, key: Array) -> Array:
    """Drift and read noise at ``t_inference`` s, starting from the programmed weights.

    Args:
      model: the noise model used for programming.
      programmed: ``(D, X)`` programmed weights.
      drift_params: ``(S, D, X)`` from :func:`apply_programming_noise`.
      t_inference: seconds since the end of programming (``>= 0``).
      key: a ``jax.random`` key (fresh read noise for every key).

    Returns:
      ``(D, X)`` weights at ``t_inference``.
    """
    programmed = jnp.asarray(programmed)
    g_prog, params = to_conductances(model.g_converter, programmed)
    if drift_params.shape != g_prog.shape:
        raise ValueError(
            f"apply_drift_noise: drift parameters have shape {drift_params.shape}, expected {g_prog.shape} "
            f"for weights of shape {programmed.shape}"
        )
    g_final = drift_noise_to_conductance(model, g_prog, drift_params, t_inference, key)
    return from_conductances(model.g_converter, g_final, params).astype(programmed.dtype)


def apply_noise(model: Any, weights: Array, t_inference: Any, key: Array) -> Array:
    """aihwkit's one-shot ``apply_noise``: programming noise, fresh drift parameters, drift at ``t``.

    Unlike aihwkit (which fails for ``t_inference <= 0``, spec §7 item 13), ``t_inference = 0``
    returns programming plus read noise at ``t_0``. Every call re-samples everything.
    """
    t_inf = check_inference_time(t_inference)
    weights = jnp.asarray(weights)
    k_prog, k_nu, k_drift = jax.random.split(key, 3)
    g_target, params = to_conductances(model.g_converter, weights)
    g_prog = programming_noise_to_conductance(model, g_target, k_prog)
    nu = drift_coefficients(model, g_target, k_nu)
    g_final = drift_noise_to_conductance(model, g_prog, nu, t_inf, k_drift)
    return from_conductances(model.g_converter, g_final, params).astype(weights.dtype)
