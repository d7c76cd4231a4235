"""The pulsed update in pure JAX: the executable specification of the kernel call.

Implements ``apply_pulses`` of ``ffi/README.md`` §4 with the random streams of §1 and the device
rules of §3, so that for the same key it agrees with the C++/CUDA kernels to float rounding.

Structure (per sample ``b``, ``lax.scan`` over the batch, everything inside vectorised over the
``D×X`` array):

1. sample key ``(s0, s1) = threefry(k0, k1; 0, b)``;
2. coincidence counts ``n_ij``: mode 0 draws the x and d bit lines (``XBIT``, ``DBIT``), packs the
   positions of each line into uint32 words and counts ``popcount(d_word_i & x_word_j)``; modes 1
   and 2 compute the deterministic counts;
3. ConstantStep: the summed form with its exactness guard (one ``SUM_NORMAL`` per element); the
   per-pulse loop runs only if some element fails the guard, on those elements only (gathered
   into the smallest of a few static buffer sizes that holds them, ``lax.switch``; under vmap one
   switch serves the failing elements of all tiles, see :func:`_bound_fallback`);
   other devices: ``lax.while_loop`` over pulse numbers ``t < max n`` with ``PULSE_NORMAL(t)``,
   calling :func:`rpujax.devices.apply_pulse`, each element changing only while ``t < n_ij``;
4. write noise: pulses act on the persistent weights, then every element with ``n > 0`` gets
   ``apparent = persistent + write_noise · WRITE_NOISE``.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rpujax import _rng

Array = jax.Array

#: Largest |normal| of ``_rng.box_muller``: sqrt(-2 ln 2^-24) (24-bit uniforms).
XI_MAX = math.sqrt(-2.0 * math.log(2.0**-24))

CONSTANT_STEP = 0

#: Index of ``write_noise`` (= write_noise_std · dw_min) in the scalars of each kind that has it
#: (ffi/README.md §3 table).
WRITE_NOISE_INDEX = {1: 2, 2: 9, 3: 1, 5: 2, 6: 1}


def _rotl(v: Array, r: int) -> Array:
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def _threefry(k0: Array, k1: Array, c0: Array, c1: Array) -> tuple[Array, Array]:
    """Threefry-2x32-20, bit-identical to ``_rng.threefry`` (``threefry2x32_p``).

    Written out with scalar keys because XLA:CPU's lowering of ``threefry2x32_p`` runs the rounds in
    a rolled loop over key arrays broadcast to the counters' shape, about 9x slower here.
    """
    k0 = jnp.asarray(k0, jnp.uint32)
    k1 = jnp.asarray(k1, jnp.uint32)
    c0, c1 = jnp.broadcast_arrays(jnp.asarray(c0, jnp.uint32), jnp.asarray(c1, jnp.uint32))
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x0 = c0 + ks[0]
    x1 = c1 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


# Cody-Waite split of pi/2 (the first two parts have trailing zero bits, so k * part is exact for
# the small k used here) and minimax coefficients of sin and cos on [-pi/4, pi/4].
_PIO2 = (np.float32(1.5703125), np.float32(4.837512969970703125e-4), np.float32(7.54978995489188216e-8))
_TWO_OVER_PI = np.float32(2.0 / np.pi)
_COS_C = (np.float32(2.443315711809948e-05), np.float32(-1.388731625493765e-03), np.float32(4.166664568298827e-02))
_SIN_C = (np.float32(-1.9515295891e-4), np.float32(8.3321608736e-3), np.float32(-1.6666654611e-1))


def _cos(a: Array) -> Array:
    """float32 ``cos(a)`` for ``0 <= a < 2 pi``, within 1.3 ulp of 1 of the exact value.

    XLA:CPU calls a scalar ``cos`` (about 8 ns per element here); this vectorises (about 1 ns). It
    can differ from ``cosf`` in the last bit, so normals agree with the kernels to float rounding.
    """
    k = jnp.rint(a * _TWO_OVER_PI)
    r = ((a - k * _PIO2[0]) - k * _PIO2[1]) - k * _PIO2[2]
    z = r * r
    c = ((_COS_C[0] * z + _COS_C[1]) * z + _COS_C[2]) * z * z - np.float32(0.5) * z + np.float32(1.0)
    s = ((_SIN_C[0] * z + _SIN_C[1]) * z + _SIN_C[2]) * z * r + r
    q = k.astype(jnp.int32) & 3
    return jnp.where(q == 0, c, jnp.where(q == 1, -s, jnp.where(q == 2, -c, s)))


def _box_muller(y0: Array, y1: Array) -> Array:
    """``_rng.box_muller`` with the vectorised :func:`_cos` (same to float rounding)."""
    u1 = ((y0 >> np.uint32(8)) + np.uint32(1)).astype(jnp.int32).astype(jnp.float32) * np.float32(2.0**-24)
    u2 = (y1 >> np.uint32(8)).astype(jnp.int32).astype(jnp.float32) * np.float32(2.0**-24)
    return jnp.sqrt(np.float32(-2.0) * jnp.log(u1)) * _cos(_rng.TWO_PI * u2)


def _write_noise(kind: int, scalars: Sequence[float]) -> float:
    idx = WRITE_NOISE_INDEX.get(kind)
    return float(scalars[idx]) if idx is not None else 0.0


def _apply_pulse(
    kind: int, scalars: tuple[float, ...], w: Array, params: tuple[Array, ...], down: Array, xi: Array
) -> Array:
    from rpujax.devices import apply_pulse  # noqa: PLC0415 - devices imports configs, keep import light

    return apply_pulse(kind, scalars, w, params, down, xi)


def _coincidences(
    s0: Array, s1: Array, px: Array, pd: Array, bl: Array, bl_max: int, row_offset: Array | int = 0
) -> Array:
    """``n_ij = Σ_{k < bl} D_ki X_kj`` (int32 ``[D, X]``) of one stochastic sample.

    ``X_kj = uniform24(y0) < |px_j|`` with ``y0`` of ``threefry(s0, s1; (XBIT << 28) | k, j)``,
    ``D_ki`` likewise with ``DBIT`` and global row ``i = row_offset + local row``. The bits of positions ``32 w .. 32 w + 31`` of
    each line are packed into word ``w``, and ``n_ij = Σ_w popcount(d_word_wi & x_word_wj)``.
    """
    x_size, d_size = px.shape[0], pd.shape[0]
    words = -(-bl_max // 32)
    # x and d lines in one threefry call (one copy of the unrolled rounds in the program)
    k = jnp.arange(bl_max, dtype=jnp.uint32)[:, None]
    col = jnp.arange(x_size + d_size, dtype=jnp.uint32)[None, :]
    is_x = col < x_size
    c0 = jnp.where(is_x, _rng.stream_c0(_rng.XBIT, k), _rng.stream_c0(_rng.DBIT, k))
    c1 = jnp.where(is_x, col, col - np.uint32(x_size) + jnp.asarray(row_offset, jnp.uint32))
    y0, _ = _threefry(s0, s1, c0, c1)
    p = jnp.concatenate([jnp.abs(px), jnp.abs(pd)])
    fire = (_rng.uniform24(y0) < p[None, :]) & (k < bl.astype(jnp.uint32))
    pad = words * 32 - bl_max
    if pad:
        fire = jnp.concatenate([fire, jnp.zeros((pad, x_size + d_size), bool)], axis=0)
    shifts = jnp.arange(32, dtype=jnp.uint32)[None, :, None]
    packed = jnp.sum(fire.reshape(words, 32, -1).astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32)
    xw, dw = packed[:, :x_size], packed[:, x_size:]
    n = jnp.zeros((d_size, x_size), jnp.int32)
    for w in range(words):
        n = n + jax.lax.population_count(dw[w][:, None] & xw[w][None, :]).astype(jnp.int32)
    return n


def _counts(
    mode: int, s0: Array, s1: Array, px: Array, pd: Array, bl: Array, bl_max: int, row_offset: Array | int = 0
) -> tuple[Array, Array]:
    """``(n int32[D, X] >= 0, down bool[D, X])`` of one sample (ffi/README.md §2)."""
    if mode == 0:
        n = _coincidences(s0, s1, px, pd, bl, bl_max, row_offset)
        down = (pd[:, None] > 0) == (px[None, :] > 0)
        return n, down
    blf = bl.astype(jnp.float32)
    if mode == 1:
        # aihwkit: coincidence = rint((cd_i / BL) * cx_j), signed. The divisor is made elementwise
        # (pd == pd is always true here) because XLA rewrites division by a broadcast scalar into
        # multiplication by its reciprocal, which changes rint's result at ties (x.5).
        c = jnp.rint((pd / jnp.where(pd == pd, jnp.maximum(blf, 1.0), 1.0))[:, None] * px[None, :])
        c = jnp.where(bl > 0, c, 0.0)
        return jnp.abs(c).astype(jnp.int32), c > 0
    if mode == 2:
        # aihwkit: rint((BL * |pd_i|) * |px_j|), direction sign(px_j) sign(pd_i).
        c = jnp.rint((blf * jnp.abs(pd))[:, None] * jnp.abs(px)[None, :])
        down = (pd[:, None] > 0) == (px[None, :] > 0)
        return c.astype(jnp.int32), down
    raise ValueError(f"apply_pulses: mode = {mode!r}: expected 0, 1 or 2")


def _element_index(d_size: int, x_size: int, base: Array | int = 0) -> Array:
    return (jnp.arange(d_size * x_size, dtype=jnp.uint32) + jnp.asarray(base, jnp.uint32)).reshape(d_size, x_size)


def _normals(s0: Array, s1: Array, purpose: int, sub: Array | int, idx: Array) -> Array:
    y0, y1 = _threefry(s0, s1, _rng.stream_c0(purpose, sub), idx)
    return _box_muller(y0, y1)


def _true_indices(mask: Array, cap: int) -> Array:
    """Flat indices of the first ``cap`` True entries of a 1-d mask, in order, padded with
    ``mask.size`` (the result of ``jnp.nonzero(mask, size=cap, fill_value=mask.size)``).

    ``jnp.nonzero`` runs a prefix sum over the whole mask, which XLA:CPU lowers to a slow
    reduce-window (~7 ns per element). Here the mask is packed into 32-bit words, only the
    per-word counts get a prefix sum, and each output slot finds its word by binary search and
    its bit by a popcount select.
    """
    size = mask.shape[0]
    nw = -(-size // 32)
    if nw * 32 != size:
        mask = jnp.concatenate([mask, jnp.zeros(nw * 32 - size, bool)])
    shifts = jnp.arange(32, dtype=jnp.uint32)
    words = jnp.sum(mask.reshape(nw, 32).astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32)
    count = jax.lax.population_count(words).astype(jnp.int32)
    cum = jnp.cumsum(count)
    k = jnp.arange(cap, dtype=jnp.int32)
    word_idx = jnp.minimum(jnp.searchsorted(cum, k, side="right").astype(jnp.int32), nw - 1)
    rank = k - (cum[word_idx] - count[word_idx])  # which set bit of that word
    word = words[word_idx]
    pos = jnp.zeros(cap, jnp.int32)
    for width in (16, 8, 4, 2, 1):
        low = jax.lax.population_count((word >> pos.astype(jnp.uint32)) & np.uint32((1 << width) - 1))
        low = low.astype(jnp.int32)
        skip = rank >= low
        pos = jnp.where(skip, pos + width, pos)
        rank = jnp.where(skip, rank - low, rank)
    return jnp.where(k < cum[-1], word_idx * 32 + pos, size)


def _per_pulse(
    kind: int,
    scalars: tuple[float, ...],
    w: Array,
    params: tuple[Array, ...],
    down: Array,
    n: Array,
    s0: Array,
    s1: Array,
    idx: Array,
) -> Array:
    """Apply ``n_ij`` single pulses to each element, pulse ``t`` with ``ξ = PULSE_NORMAL(t)``."""
    noisy = float(scalars[0]) != 0.0  # every rule multiplies its noise by dw_min_std = scalars[0]
    t_max = jnp.max(n)

    def body(t, w):
        xi = _normals(s0, s1, _rng.PULSE_NORMAL, t.astype(jnp.uint32), idx) if noisy else jnp.zeros_like(w)
        w_new = _apply_pulse(kind, scalars, w, params, down, xi.astype(w.dtype))
        return jnp.where(t < n, w_new, w)

    return jax.lax.fori_loop(jnp.int32(0), t_max, body, w)


def _constant_step(
    scalars: tuple[float, ...],
    w: Array,
    params: tuple[Array, ...],
    down: Array,
    n: Array,
    s0: Array,
    s1: Array,
    idx: Array,
) -> Array:
    """ConstantStep: summed form where the guard holds, per-pulse where it does not."""
    b_max, b_min, s_up, s_down = params[:4]
    sigma = float(scalars[0])
    s = jnp.where(down, s_down, s_up)
    nf = n.astype(w.dtype)
    if sigma != 0.0:
        xi = _normals(s0, s1, _rng.SUM_NORMAL, 0, idx).astype(w.dtype)
        delta = nf * s + s * sigma * jnp.sqrt(nf) * xi
    else:
        delta = nf * s
    w_sum = jnp.where(down, w - delta, w + delta)
    reach = nf * jnp.abs(s) * (1.0 + XI_MAX * sigma)
    ok = (w - reach >= b_min) & (w + reach <= b_max)
    active = n > 0
    fallback = active & ~ok
    w_new = jnp.where(active, w_sum, w)

    # rows of one element each; the fallback works on (rows, elements) so that a vmap over tiles
    # can hand it every tile's failing elements at once (see _bound_fallback)
    row = lambda a: jnp.reshape(a, (1, -1))  # noqa: E731
    out = _bound_fallback(scalars)(
        row(w_new), row(w), tuple(row(p) for p in params[:4]), row(down), row(jnp.where(fallback, n, 0)),
        jnp.reshape(s0, (1,)), jnp.reshape(s1, (1,)), row(jnp.broadcast_to(idx, w.shape)),
    )
    return out.reshape(w.shape)


def _fallback_caps(size: int) -> list[int]:
    """Static sizes of the compacted fallback buffers, smallest first: the per-pulse loop costs
    (buffer size) x (max count), so a handful of failing elements should not pay for a large
    buffer. Empty for small arrays."""
    return sorted({c for c in (size // 256, size // 64, size // 16, size // 4) if 256 <= c < size})


@functools.lru_cache(maxsize=None)
def _bound_fallback(scalars: tuple[float, ...]):
    """The per-pulse ConstantStep fallback of the elements where the summed form's guard fails.

    ``f(w_new, w, params, down, n, s0, s1, idx) -> w_new'`` on ``(R, L)`` arrays: ``R`` rows of
    ``L`` elements, row ``r`` drawing with sample key ``(s0[r], s1[r])`` (``[R]`` or ``[1]``)
    and element counters ``idx``; ``params`` (four arrays) and ``idx`` may have one row shared by
    all. ``n`` is the pulse count of the failing elements, 0 elsewhere; they get ``n`` single
    pulses applied to ``w``, every other element keeps ``w_new``.

    Which of the static buffer sizes runs is a ``lax.switch`` on the number of failing elements.
    Under a plain ``vmap`` that index would be batched, and vmap turns a switch with a batched
    index into evaluating *every* branch (the per-pulse loop over the whole array included) for
    every tile, then selecting: about 10x the cost of one tile. Hence the ``custom_vmap`` rule:
    it folds the vmapped axis into the rows and calls this function again, so one unbatched
    switch picks a buffer for the failing elements of all tiles together. That changes no
    tile's bits although an element may now land in a different buffer than in a call of its
    own: its pulses depend only on its own operands, key and counter, not on where it sits, and
    the extra trips of a shared loop (``t`` up to the largest count in the buffer) leave an
    element with ``t >= n`` unchanged. Calling this function again (rather than inlining the
    unbatched body) makes a nested vmap fold each level the same way.
    """
    @jax.custom_batching.custom_vmap
    def fallback(w_new, w, params, down, n, s0, s1, idx):
        rows, length = w.shape
        size = rows * length
        m = jnp.sum(n > 0, dtype=jnp.int32)
        keys_per_row = s0.shape[0] != 1

        def compact(cap, w_new):
            # Gather the failing elements into a buffer of static size, run the per-pulse loop
            # there, scatter back. Counters come from idx (the element's flat index i*X + j),
            # so the draws are those of the full array.
            flat = _true_indices((n > 0).ravel(), cap)
            safe = jnp.minimum(flat, size - 1)
            col = safe % length if rows > 1 else safe

            def take(a):
                return a.ravel()[safe] if a.shape[0] != 1 else a[0][col]

            k0, k1 = (s0[safe // length], s1[safe // length]) if keys_per_row else (s0[0], s1[0])
            n_c = jnp.where(flat < size, take(n), 0)
            w_pp = _per_pulse(CONSTANT_STEP, scalars, take(w), tuple(take(p) for p in params), take(down), n_c,
                              k0, k1, take(idx))
            return w_new.ravel().at[flat].set(w_pp, mode="drop").reshape(w.shape)

        def full(w_new):
            k0, k1 = (s0[:, None], s1[:, None]) if keys_per_row else (s0[0], s1[0])
            w_pp = _per_pulse(CONSTANT_STEP, scalars, w, params, down, n, k0, k1, idx)
            return jnp.where(n > 0, w_pp, w_new)

        caps = _fallback_caps(size)
        if not caps:
            return jax.lax.cond(m > 0, full, lambda w_new: w_new, w_new)
        branches = [lambda w_new: w_new] + [functools.partial(compact, c) for c in caps] + [full]
        # 0: nothing fails; i: the i-th buffer is the smallest that holds them all; last: all rows
        branch = jnp.where(m == 0, 0, 1 + sum((m > c).astype(jnp.int32) for c in caps))
        return jax.lax.switch(branch, branches, w_new)

    @fallback.def_vmap
    def _rule(axis_size, in_batched, w_new, w, params, down, n, s0, s1, idx):
        rows = w_new.shape[-2] if in_batched[0] else w_new.shape[0]

        def fold(a, batched, shareable):
            # batched (B, R?, ...) -> (B*R, ...); an unbatched single row stays shared if allowed
            lead = a.shape[1] if batched else a.shape[0]
            if not batched and lead == 1 and shareable:
                return a
            if not batched:
                a = jnp.broadcast_to(a, (axis_size, *a.shape))
            if lead != rows:
                a = jnp.broadcast_to(a, (axis_size, rows, *a.shape[2:]))
            return a.reshape(axis_size * rows, *a.shape[2:])

        b_w_new, b_w, b_params, b_down, b_n, b_s0, b_s1, b_idx = in_batched
        out = fallback(
            fold(w_new, b_w_new, False), fold(w, b_w, False),
            tuple(fold(p, b, True) for p, b in zip(params, b_params)),
            fold(down, b_down, False), fold(n, b_n, False),
            fold(s0, b_s0, True), fold(s1, b_s1, True), fold(idx, b_idx, True),
        )
        return out.reshape(axis_size, rows, -1), True

    return fallback


def apply_pulses(
    weights: Array,
    persistent: Array | None,
    params: Array,
    px: Array,
    pd: Array,
    bl: Array,
    key_data: Array,
    *,
    kind: int,
    scalars: Sequence[float],
    mode: int,
    bl_max: int,
    per_pulse_only: bool = False,
    row_offset: Array | int = 0,
) -> tuple[Array, Array | None]:
    """Apply the pulses of a batch of samples to one tile (ffi/README.md §4), in pure JAX.

    Args:
      weights: ``f32[D, X]`` apparent weights.
      persistent: ``f32[D, X]`` persistent weights when the device has write noise, else None.
      params: ``f32[P, D, X]`` per-element device parameters in the kind's order (§3 table).
      px: ``f32[B, X]``, pd: ``f32[B, D]``, bl: ``int32[B]``: the pulse inputs of
        :func:`rpujax.pulsed.probabilities.pulse_inputs` (format by ``mode``).
      key_data: ``uint32[2]``, the update key's data ``(k0, k1)``.
      kind: device kind (static). scalars: tile-wide device scalars (static).
      mode: 0 stochastic, 1 mean count, 2 deterministic implicit (static).
      bl_max: static upper bound of ``bl`` (sets the number of bit-line positions drawn).
      per_pulse_only: test-only switch: apply ConstantStep pulses one by one instead of the summed
        form (same distribution, different random numbers).
      row_offset: global index of the first row of ``weights`` (a Python int or a traced int32):
        nonzero when ``weights`` is a row shard of a larger tile (:mod:`rpujax.parallel`). The d
        bits and per-element normals use global rows (``DBIT`` counter ``row_offset + i``, element
        counter ``(row_offset + i)·X + j``), so a shard draws exactly what the whole tile would.

    Returns:
      ``(weights, persistent)`` after all samples, applied in order.
    """
    scalars = tuple(float(s) for s in scalars)
    d_size, x_size = weights.shape
    if params.shape[1:] != (d_size, x_size):
        raise ValueError(f"apply_pulses: params have shape {params.shape}, expected (P, {d_size}, {x_size})")
    if px.shape[1] != x_size or pd.shape[1] != d_size or not (px.shape[0] == pd.shape[0] == bl.shape[0]):
        raise ValueError(
            f"apply_pulses: px {px.shape}, pd {pd.shape}, bl {bl.shape} do not match weights {weights.shape}"
        )
    ptuple = tuple(params[p] for p in range(params.shape[0]))
    k0, k1 = key_data[0].astype(jnp.uint32), key_data[1].astype(jnp.uint32)
    wn = _write_noise(kind, scalars)
    use_persistent = persistent is not None
    summed = kind == CONSTANT_STEP and not per_pulse_only
    idx_base = jnp.asarray(row_offset, jnp.uint32) * np.uint32(x_size)

    def step(carry, inputs):
        w, p = carry
        px_b, pd_b, bl_b, s0, s1 = inputs
        idx = _element_index(d_size, x_size, idx_base)  # counter c1 = i * X + j (global rows)
        n, down = _counts(mode, s0, s1, px_b, pd_b, bl_b, bl_max, row_offset)
        target = p if use_persistent else w
        if summed:
            target = _constant_step(scalars, target, ptuple, down, n, s0, s1, idx)
        else:
            target = _per_pulse(kind, scalars, target, ptuple, down, n, s0, s1, idx)
        if use_persistent:
            noise = _normals(s0, s1, _rng.WRITE_NOISE, 0, idx).astype(w.dtype)
            w = jnp.where(n > 0, target + np.float32(wn) * noise, w)
            return (w, target), None
        return (target, p), None

    batch = px.shape[0]
    # all sample keys at once (one vectorised threefry) instead of a scalar one per scan step
    s0, s1 = _threefry(k0, k1, jnp.uint32(0), jnp.arange(batch, dtype=jnp.uint32))
    xs = (px, pd, bl.astype(jnp.int32), s0, s1)
    (weights, persistent), _ = jax.lax.scan(step, (weights, persistent), xs)
    return weights, persistent
