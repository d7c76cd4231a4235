"""From ``(x, d, lr)`` to the per-sample pulse inputs shared by both backends.

Spec tile-core §3.3 (BL, A, B and update management), §3.4 (probability quantisation) and §3.6
(deterministic pulse types); output format ``ffi/README.md`` §2:

- ``bl: int32[B]``: pulse-train length of each sample (0: the sample does nothing),
- ``px: f32[B, X]``, ``pd: f32[B, D]``: signed probabilities (mode 0), signed counts (mode 1,
  ``MEAN_COUNT``) or signed quantised probabilities (mode 2, ``DETERMINISTIC_IMPLICIT``).

Everything here is float32 arithmetic in aihwkit's order of operations (``calculateBlAB``,
``performUpdateManagement``, the bit-line makers), so that rounding decisions at ``ceil`` and
``rint`` boundaries match aihwkit's CPU tile.

Policies that differ from aihwkit (documented, tested):

- **Negative lr.** aihwkit aborts for the stochastic types and, for ``MEAN_COUNT`` /
  ``DETERMINISTIC_IMPLICIT``, negates both x and d, which leaves the update direction unchanged
  (spec §7.23). rpujax keeps the tile's sign convention for every lr: the update realises
  ``W <- W - lr * d x^T`` in expectation, so ``lr < 0`` moves the weights along ``+|lr| d x^T``. It
  is implemented by using ``|lr|`` and flipping the sign of d.
- **Non-finite inputs.** A sample whose x or d holds a NaN or an infinity is skipped (``bl = 0``,
  zero probabilities): the weights are never corrupted by NaN. A non-finite lr skips every sample.
  ``pulsed_update(..., debug_checks=True)`` also reports both through ``checkify`` checks.
- **Stochastic rounding** (``sto_round``) draws its uniforms from the update key with a purpose the
  kernels do not use (``STO_ROUND = 6``, at the level of the update key, see
  :func:`_rounding_uniforms`), so it never correlates with the pulse bits.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rpujax.configs.update import PulseType, UpdateParameters

Array = jax.Array

#: ``mode`` of the kernel call for each pulsed pulse type (``ffi/README.md`` §2).
MODE_STOCHASTIC = 0
MODE_MEAN_COUNT = 1
MODE_IMPLICIT = 2

#: Purpose of the stochastic-rounding uniforms; drawn from the *update* key (not a sample key) with
#: ``c0 = (STO_ROUND << 28) | (2 b + which)``, ``c1 = index``, ``which = 0`` for x and 1 for d.
#: The update key itself is only used by the kernels with ``c0 = 0`` (sample keys), so these
#: counters never collide with a kernel draw.
STO_ROUND = 6

_PULSED = (
    PulseType.STOCHASTIC_COMPRESSED,
    PulseType.STOCHASTIC,
    PulseType.MEAN_COUNT,
    PulseType.DETERMINISTIC_IMPLICIT,
)


def pulse_mode(pulse_type: PulseType) -> int:
    """The kernel ``mode`` of a pulsed pulse type (0 stochastic, 1 mean count, 2 implicit)."""
    if pulse_type in (PulseType.STOCHASTIC_COMPRESSED, PulseType.STOCHASTIC):
        return MODE_STOCHASTIC
    if pulse_type == PulseType.MEAN_COUNT:
        return MODE_MEAN_COUNT
    if pulse_type == PulseType.DETERMINISTIC_IMPLICIT:
        return MODE_IMPLICIT
    raise ValueError(f"pulse_type {pulse_type} is not a pulsed type (expected one of {_PULSED})")


def _opaque(value: float) -> Array:
    """A float32 scalar XLA cannot constant-fold.

    XLA rewrites ``x / c`` for a constant ``c`` into ``x * (1/c)``, which rounds differently; at
    the ``ceil`` / ``rint`` boundaries of BL and of the quantisation (e.g. ``lr = m * g`` exactly)
    that changes the result and departs from aihwkit's float32 division. Divisors go through this.
    """
    return jax.lax.optimization_barrier(jnp.float32(value))


def _fixed_bl(update: UpdateParameters) -> bool:
    return update.fixed_bl or update.update_bl_management


def bl_bound(update: UpdateParameters, lr: float | Array, granularity: float) -> int:
    """Static upper bound of the per-sample BL (the ``bl_max`` of the kernel call).

    It is ``desired_bl`` except with ``fixed_bl=False`` and update-BL management off, where aihwkit
    lets BL grow to ``ceil(|lr| / g)`` (spec §3.3, §7.22). That case needs a concrete lr, because
    the length of the pulse trains decides the shapes of the computation.

    Raises:
      ValueError: in that case, when lr is a traced value.
    """
    if _fixed_bl(update):
        return update.desired_bl
    try:
        lr_value = float(lr)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError) as err:
        raise ValueError(
            "UpdateParameters(fixed_bl=False, update_bl_management=False): the pulse-train length "
            "ceil(|lr| / granularity) depends on lr, so lr must be a concrete Python number, not a "
            "traced value (pass it as a static argument, or use fixed_bl=True)"
        ) from err
    lr32 = np.float32(abs(lr_value))
    g32 = np.float32(granularity)
    if not math.isfinite(lr32) or g32 * np.float32(update.desired_bl) >= lr32:
        return update.desired_bl
    return max(int(np.ceil(lr32 / g32)), update.desired_bl)


def bl_a_b(
    update: UpdateParameters,
    x_abs_max: Array,
    d_abs_max: Array,
    lr_abs: Array,
    granularity: float,
) -> tuple[Array, Array, Array]:
    """Per-sample BL, A, B (aihwkit ``calculateBlAB`` + ``performUpdateManagement``, spec §3.3).

    Args:
      update: the update parameters (static).
      x_abs_max: ``f32[B]``, ``max_j |x_bj|``.
      d_abs_max: ``f32[B]``, ``max_i |d_bi|``.
      lr_abs: ``f32[]``, ``|lr| >= 0``.
      granularity: the device's weight granularity g (weight units per pulse).

    Returns:
      ``(bl int32[B], A f32[B], B f32[B])``: probabilities are ``p_d = A |d|``, ``p_x = B |x|``.
      ``bl = 0`` where ``lr == 0`` or (with management) where x or d is all zero.
    """
    f32 = jnp.float32
    g = _opaque(granularity)
    lr_abs = jnp.asarray(lr_abs, f32)
    x_abs_max = jnp.asarray(x_abs_max, f32)
    d_abs_max = jnp.asarray(d_abs_max, f32)
    desired = update.desired_bl
    ones = jnp.ones_like(x_abs_max)

    # calculateBlAB
    if _fixed_bl(update):
        bl = jnp.full(x_abs_max.shape, desired, f32)
        a = jnp.sqrt(lr_abs / (g * f32(desired))) * ones
    else:
        grow = g * f32(desired) < lr_abs
        bl_grow = jnp.maximum(jnp.ceil(lr_abs / g), 1.0)
        bl = jnp.where(grow, bl_grow, f32(desired)) * ones
        a = jnp.where(grow, f32(1.0), jnp.sqrt(lr_abs / (g * f32(desired)))) * ones
    b = a

    if update.effective_update_management:
        x_v = x_abs_max
        d_v = f32(update.um_grad_scale) * d_abs_max
        k = lr_abs * x_v * d_v / g
        if update.update_bl_management:
            # ceil(k) can be 0 only if k underflows; aihwkit then returns BL = 0 (no update).
            bl = jnp.minimum(jnp.ceil(k), f32(desired))
            a = jnp.sqrt(lr_abs / (g * jnp.maximum(bl, 1.0)))
            b = a
        d_v = jnp.where(k > f32(desired), d_v * (f32(desired) / k), d_v)
        safe = (x_v > 0) & (d_v > 0)
        x_s = jnp.where(safe, x_v, 1.0)
        d_s = jnp.where(safe, d_v, 1.0)
        a = a * jnp.sqrt(x_s / d_s)
        b = b * jnp.sqrt(d_s / x_s)
        bl = jnp.where((x_abs_max == 0) | (d_abs_max == 0), 0.0, bl)

    bl = jnp.where(lr_abs > 0, bl, 0.0)
    return bl.astype(jnp.int32), a, b


def _quantize(v: Array, res: float, sto_round: bool, u: Array | None) -> Array:
    """aihwkit ``getDiscretizedValue`` on ``v >= 0``: ``Q(v; res)`` or ``Q_sr(v; res)`` (§0)."""
    if res <= 0:
        return v
    r = _opaque(res)
    if sto_round:
        return r * jnp.rint(v / r + u - jnp.float32(0.5))
    return r * jnp.rint(v / r)


def _rounding_uniforms(key_data: Array, batch: int, size: int, which: int) -> Array:
    """``f32[batch, size]`` uniforms in [0, 1) for stochastic rounding (purpose ``STO_ROUND``)."""
    from rpujax import _rng

    if 2 * batch > _rng.SUB_MASK:
        raise ValueError(f"sto_round: batch of {batch} samples exceeds the counter space (< 2**27 samples)")
    b = jnp.arange(batch, dtype=jnp.uint32)[:, None]
    c0 = _rng.stream_c0(STO_ROUND, jnp.uint32(2) * b + jnp.uint32(which))
    c1 = jnp.arange(size, dtype=jnp.uint32)[None, :]
    y0, _ = _rng.threefry(key_data[0], key_data[1], c0, c1)
    return _rng.uniform24(y0)


def key_to_data(key: Array) -> Array:
    """``uint32[2]`` key data ``(k0, k1)`` of a threefry key (typed ``jax.random.key`` or legacy
    ``PRNGKey``); ``ValueError`` for another PRNG implementation (see ``rpujax._rng.key_words``)."""
    from rpujax import _rng

    k0, k1 = _rng.key_words(key)
    if k0.shape != ():
        raise ValueError(f"update key: expected a single key, got a batch of keys of shape {k0.shape}")
    return jnp.stack([k0, k1])


def sample_valid(x: Array, d: Array, lr: Array) -> Array:
    """``bool[B]``: samples whose x and d are all finite (and lr finite); others are skipped."""
    return jnp.all(jnp.isfinite(x), axis=-1) & jnp.all(jnp.isfinite(d), axis=-1) & jnp.isfinite(lr)


def pulse_inputs(
    update: UpdateParameters,
    x: Array,
    d: Array,
    lr: float | Array,
    key_data: Array,
    granularity: float,
) -> tuple[Array, Array, Array]:
    """Per-sample pulse inputs ``(bl int32[B], px f32[B, X], pd f32[B, D])`` (ffi/README §2).

    Args:
      update: the update parameters (static); ``pulse_type`` must be a pulsed type.
      x: ``(B, X)`` inputs of the tile (analog-bias column included).
      d: ``(B, D)`` errors.
      lr: learning rate (any sign, see the module docstring); Python number or traced scalar.
      key_data: ``uint32[2]`` update key data; only used with ``sto_round``.
      granularity: the device's weight granularity g (static).

    Returns:
      ``bl``, ``px``, ``pd`` in the format of the kernel ``mode`` of ``update.pulse_type``.
    """
    mode = pulse_mode(update.pulse_type)
    f32 = jnp.float32
    x = jnp.asarray(x, f32)
    d = jnp.asarray(d, f32)
    lr = jnp.asarray(lr, f32)
    batch, x_size = x.shape
    d_size = d.shape[1]

    valid = sample_valid(x, d, lr)
    x = jnp.where(valid[:, None], x, 0.0)
    d = jnp.where(valid[:, None], d, 0.0)
    # Negative lr: same convention W <- W - lr d x^T, realised with |lr| and -d.
    d = jnp.where(lr < 0, -d, d)
    lr_abs = jnp.where(jnp.isfinite(lr), jnp.abs(lr), 0.0)

    bl, a, b = bl_a_b(update, jnp.max(jnp.abs(x), axis=1), jnp.max(jnp.abs(d), axis=1), lr_abs, granularity)
    bl = jnp.where(valid, bl, 0)

    if mode == MODE_IMPLICIT:
        res_x, res_d = update.x_res_implicit, update.d_res_implicit
    else:
        res_x = res_d = update.res
    ux = ud = None
    if update.sto_round and res_x > 0:
        ux = _rounding_uniforms(key_data, batch, x_size, 0)
    if update.sto_round and res_d > 0:
        ud = _rounding_uniforms(key_data, batch, d_size, 1)

    qx = _quantize(jnp.abs(x) * b[:, None], res_x, update.sto_round, ux)
    qd = _quantize(jnp.abs(d) * a[:, None], res_d, update.sto_round, ud)

    if mode == MODE_STOCHASTIC:
        px = jnp.sign(x) * qx
        pd = jnp.sign(d) * qd
    elif mode == MODE_MEAN_COUNT:
        blf = bl.astype(f32)[:, None]
        cx = jnp.clip(jnp.rint(blf * qx), 0.0, blf)
        cd = jnp.clip(jnp.rint(blf * qd), 0.0, blf)
        px = jnp.where(x >= 0, cx, -cx)
        pd = jnp.where(d >= 0, cd, -cd)
    else:
        qx = jnp.clip(qx, 0.0, 1.0)
        qd = jnp.clip(qd, 0.0, 1.0)
        px = jnp.where(x >= 0, qx, -qx)
        pd = jnp.where(d >= 0, qd, -qd)

    live = (bl > 0)[:, None]
    px = jnp.where(live, px, 0.0).astype(f32)
    pd = jnp.where(live, pd, 0.0).astype(f32)
    return bl, px, pd
