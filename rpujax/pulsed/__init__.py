"""The weight update of a tile: dispatch between the exact FP update and the pulsed update.

Spec tile-core §3.2. ``pulsed_update`` realises ``W <- W - lr * sum_b d_b x_b^T`` (exactly for the
floating-point types, in expectation with the device's non-idealities for the pulsed ones), one
sample after the other. The pulsed path turns ``(x, d, lr)`` into per-sample pulse inputs
(:mod:`rpujax.pulsed.probabilities`, shared by both backends) and hands them to a backend:

- ``"jax"``: :mod:`rpujax.pulsed.jax_backend` (pure JAX, runs anywhere);
- ``"ffi"``: :mod:`rpujax.pulsed.ffi_backend` (the C++/CUDA kernels); an error if unavailable;
- ``"auto"``: the FFI kernels when ``rpujax._ffi.available()``, else pure JAX.

For the same key both backends draw the same random numbers (``ffi/README.md``).

Policies (see also :mod:`rpujax.pulsed.probabilities`):

- ``lr == 0``: nothing happens (as aihwkit); jit-safe for a traced lr.
- ``lr < 0``: the update still realises ``W <- W - lr d x^T``, i.e. moves along ``+|lr| d x^T``
  (aihwkit aborts for the stochastic pulse types).
- Samples whose x or d contain NaN or infinity are skipped (no update from that sample) in every
  pulse type; a non-finite lr skips the call. ``debug_checks=True`` also reports them through
  ``checkify`` checks (wrap the jitted function with ``jax.experimental.checkify.checkify``;
  without jit a failing check raises at once).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.configs.update import BACKENDS, PulseType, UpdateParameters
from rpujax.pulsed import probabilities

Array = jax.Array

__all__ = ["pulsed_update", "resolve_backend", "probabilities"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _ffi_available() -> bool:
    """Whether the FFI kernels are registered for the platform of JAX's default backend (a
    missing or broken extension counts as unavailable; ``rpujax._ffi`` reports why, once)."""
    try:
        from rpujax import _ffi  # noqa: PLC0415
    except ImportError:
        return False
    try:
        return bool(_ffi.available(jax.default_backend()))
    except Exception:  # noqa: BLE001
        return False


def resolve_backend(backend: str | None, update: UpdateParameters) -> str:
    """``"jax"`` or ``"ffi"`` for a call: ``backend`` if given, else ``update.backend``; ``"auto"``
    picks the FFI kernels when they are built and loadable."""
    choice = update.backend if backend is None else backend
    if choice not in BACKENDS:
        raise ValueError(f"backend = {choice!r}: expected one of {BACKENDS}")
    if choice == "auto":
        return "ffi" if _ffi_available() else "jax"
    return choice


def _backend_module(name: str) -> Any:
    if name == "jax":
        from rpujax.pulsed import jax_backend  # noqa: PLC0415

        return jax_backend
    if not _ffi_available():
        raise RuntimeError(
            "backend='ffi' was requested but the rpujax FFI kernels are not available (extension "
            "not built for this platform, or built against another jaxlib); use backend='jax' or "
            "'auto', or build the extension (pip install . builds ffi/)"
        )
    try:
        from rpujax.pulsed import ffi_backend  # noqa: PLC0415
    except ImportError as err:
        raise RuntimeError(f"backend='ffi': rpujax.pulsed.ffi_backend cannot be imported ({err})") from err
    return ffi_backend


def _is_fp_device(device: Any) -> bool:
    from rpujax.configs.devices import FloatingPointDevice, IdealDevice  # noqa: PLC0415

    return isinstance(device, (IdealDevice, FloatingPointDevice))


def _check_inputs(weights: Array, x: Array, d: Array, lr: Any) -> None:
    d_size, x_size = weights.shape[-2:]
    if x.ndim != 2 or d.ndim != 2:
        raise ValueError(
            f"pulsed_update: x has shape {tuple(x.shape)} and d {tuple(d.shape)}: expected (B, {x_size}) "
            f"and (B, {d_size})"
        )
    if x.shape[0] != d.shape[0]:
        raise ValueError(
            f"pulsed_update: batch sizes differ: x has shape {tuple(x.shape)}, d has shape {tuple(d.shape)}"
        )
    if x.shape[1] != x_size or d.shape[1] != d_size:
        raise ValueError(
            f"pulsed_update: x has shape {tuple(x.shape)} and d {tuple(d.shape)}, expected (B, {x_size}) "
            f"and (B, {d_size}) for weights of shape {tuple(weights.shape)}"
        )
    if jnp.ndim(lr) != 0:
        raise ValueError(f"pulsed_update: lr has shape {jnp.shape(lr)}, expected a scalar")
    for name, v in (("x", x), ("d", d)):
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"pulsed_update: {name} has dtype {v.dtype}, expected a floating dtype")


def _debug_checks(x: Array, d: Array, lr: Array) -> None:
    from jax.experimental import checkify  # noqa: PLC0415

    checkify.check(jnp.all(jnp.isfinite(x)), "pulsed_update: x contains NaN or infinity")
    checkify.check(jnp.all(jnp.isfinite(d)), "pulsed_update: d contains NaN or infinity")
    checkify.check(jnp.isfinite(lr), "pulsed_update: lr is NaN or infinite")


def _masked(x: Array, d: Array, lr: Array) -> tuple[Array, Array, Array]:
    valid = probabilities.sample_valid(x, d, lr)
    x = jnp.where(valid[:, None], x, 0.0)
    d = jnp.where(valid[:, None], d, 0.0)
    return x, d, valid


def _fp_update(weights: Array, x: Array, d: Array, lr: Array) -> Array:
    """``W - lr * sum_b d_b x_b^T`` (invalid samples contribute nothing)."""
    x, d, _ = _masked(x, d, lr)
    dw = jax.lax.dot_general(d, x, (((0,), (0,)), ((), ())), precision=_HIGHEST)
    return (weights - lr.astype(weights.dtype) * dw.astype(weights.dtype)).astype(weights.dtype)


def _none_with_device(
    weights: Array, persistent: Array | None, device_params: dict[str, Array], device_cfg: Any,
    x: Array, d: Array, lr: Array, key: Array,
) -> tuple[Array, Array | None]:
    """``NONE_WITH_DEVICE`` (spec §3.2): per sample an exact FP step, then clip to the bounds."""
    x, d, valid = _masked(x, d, lr)
    lo = device_params["min_bound"]
    hi = device_params["max_bound"]
    if persistent is not None:
        # aihwkit's clip acts on the persistent weights and redraws the apparent ones from them,
        # so the FP step on the apparent weights is lost (spec §3.2, §7.27). Every sample redraws
        # all elements; only the last redraw survives, so one draw has the same distribution.
        scale = np.float32(device_cfg.write_noise_std * device_cfg.dw_min)
        noise = jax.random.normal(key, weights.shape, weights.dtype)
        persistent = jnp.clip(persistent, lo, hi)
        redrawn = persistent + scale * noise
        return jnp.where(jnp.any(valid), redrawn, weights), persistent

    lr_w = lr.astype(weights.dtype)

    def step(w, xd):
        xb, db = xd
        w = w - lr_w * (db[:, None] * xb[None, :]).astype(w.dtype)
        return jnp.clip(w, lo, hi), None

    weights, _ = jax.lax.scan(step, weights, (x, d))
    return weights, persistent


def pulse_inputs(update: UpdateParameters, x: Array, d: Array, lr: Any, key: Array, g: float
                 ) -> tuple[Array, Array, Array, Array, int]:
    """``(bl, px, pd, key_data, bl_max)`` of one update call with weight granularity ``g``.

    The per-sample pulse inputs both backends consume (spec §3.3–§3.6, ``ffi/README.md`` §4):
    BL, the signed x and d probabilities, the key words, and the static bound of BL.
    """
    key_data = probabilities.key_to_data(key)
    bl_max = probabilities.bl_bound(update, lr, g)
    bl, px, pd = probabilities.pulse_inputs(update, x, d, lr, key_data, g)
    return bl, px, pd, key_data, bl_max


def kernel_operands(device_cfg: Any, device_params: dict[str, Array], persistent: Array | None, who: str
                    ) -> tuple[int, tuple[float, ...], Array]:
    """``(kind, scalars, params)`` of a pulsed device for the kernels: its kind, its tile-wide
    scalars and the stacked ``(P, D, X)`` per-cross-point parameters (float32).

    Raises ValueError (prefixed with ``who``) when the device has write noise but no persistent
    weights are given, or when ``device_params`` lacks one of the kind's parameters.
    """
    from rpujax.devices import kernel_layout, uses_persistent_weights  # noqa: PLC0415

    if uses_persistent_weights(device_cfg) and persistent is None:
        raise ValueError(
            f"{who}: {type(device_cfg).__name__} has write noise (write_noise_std > 0), so the "
            "persistent weights must be passed (TileState.device['persistent_weights'])"
        )
    kind, names, scalars = kernel_layout(device_cfg)
    missing = [n for n in names if n not in device_params]
    if missing:
        raise ValueError(
            f"{who}: device parameters {missing} missing for {type(device_cfg).__name__} "
            f"(have {sorted(device_params)})"
        )
    params = jnp.stack([jnp.asarray(device_params[n], jnp.float32) for n in names])
    return kind, tuple(scalars), params


def _pulsed(
    weights: Array, persistent: Array | None, device_params: dict[str, Array], device_cfg: Any,
    update: UpdateParameters, x: Array, d: Array, lr: Any, key: Array, backend: str,
) -> tuple[Array, Array | None]:
    from rpujax.devices import weight_granularity  # noqa: PLC0415

    kind, scalars, params = kernel_operands(device_cfg, device_params, persistent, "pulsed_update")
    bl, px, pd, key_data, bl_max = pulse_inputs(update, x, d, lr, key, weight_granularity(device_cfg))
    module = _backend_module(backend)
    w32 = weights.astype(jnp.float32)
    p32 = None if persistent is None else persistent.astype(jnp.float32)
    w_new, p_new = module.apply_pulses(
        w32, p32, params, px, pd, bl, key_data,
        kind=kind, scalars=scalars, mode=probabilities.pulse_mode(update.pulse_type), bl_max=bl_max,
    )
    w_new = w_new.astype(weights.dtype)
    if persistent is not None:
        p_new = p_new.astype(persistent.dtype)
    return w_new, p_new


def pulsed_update(
    weights: Array,
    persistent: Array | None,
    device_params: dict[str, Array],
    device_cfg: Any,
    update_cfg: UpdateParameters,
    x: Array,
    d: Array,
    lr: float | Array,
    key: Array,
    *,
    backend: str | None = None,
    debug_checks: bool = False,
) -> tuple[Array, Array | None]:
    """One update call of a tile: ``W <- W - lr * sum_b d_b x_b^T``, sample after sample.

    Args:
      weights: ``(D, X)`` apparent weights (device units).
      persistent: ``(D, X)`` persistent weights when the device has write noise, else None.
      device_params: the per-cross-point device arrays (``TileState.device``).
      device_cfg: the device config (static); ``IdealDevice`` / ``FloatingPointDevice`` update
        exactly.
      update_cfg: the update parameters (static).
      x: ``(B, X)`` tile inputs (analog-bias column included).
      d: ``(B, D)`` errors (gradients w.r.t. the tile outputs).
      lr: learning rate; a Python number or a traced scalar (``fixed_bl=False`` without update-BL
        management needs a concrete one).
      key: a threefry ``jax.random`` key (typed or legacy); every random draw derives from it.
      backend: ``"auto"``, ``"ffi"`` or ``"jax"``; None uses ``update_cfg.backend``.
      debug_checks: add ``checkify`` checks that x, d and lr are finite.

    Returns:
      ``(weights, persistent)`` after the update (``persistent`` None iff it was None).

    Raises:
      ValueError: at trace time, for shapes that do not fit the weights (both shapes named).
      RuntimeError: ``backend="ffi"`` without the kernels.
    """
    x = jnp.asarray(x)
    d = jnp.asarray(d)
    _check_inputs(weights, x, d, lr)
    pulse_type = update_cfg.pulse_type
    fp = pulse_type == PulseType.NONE or _is_fp_device(device_cfg)
    if not fp and pulse_type != PulseType.NONE_WITH_DEVICE:
        backend_name = resolve_backend(backend, update_cfg)
    else:
        backend_name = "jax"

    lr_concrete = None
    try:
        lr_concrete = float(lr)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        pass
    lr_arr = jnp.asarray(lr, jnp.float32)
    if debug_checks:
        _debug_checks(x, d, lr_arr)
    if lr_concrete is not None and (lr_concrete == 0.0 or not np.isfinite(lr_concrete)):
        return weights, persistent
    x32 = x.astype(jnp.float32)
    d32 = d.astype(jnp.float32)

    def run(_: None) -> tuple[Array, Array | None]:
        if fp:
            return _fp_update(weights, x32, d32, lr_arr), persistent
        if pulse_type == PulseType.NONE_WITH_DEVICE:
            return _none_with_device(weights, persistent, device_params, device_cfg, x32, d32, lr_arr, key)
        lr_in = lr_concrete if lr_concrete is not None else lr_arr
        return _pulsed(weights, persistent, device_params, device_cfg, update_cfg, x32, d32, lr_in, key, backend_name)

    if lr_concrete is not None:
        return run(None)
    skip = (lr_arr == 0) | ~jnp.isfinite(lr_arr)
    return jax.lax.cond(skip, lambda _: (weights, persistent), run, None)
