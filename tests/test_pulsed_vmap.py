"""vmap of the pure-JAX pulsed update: the same bits as one tile, without running every branch.

ConstantStep picks, per tile and sample, between no per-pulse fallback, per-pulse pulses on a
compacted buffer of one of a few static sizes, and per-pulse pulses on the whole array
(``jax_backend._bound_fallback``). A plain vmap would turn that choice into computing all of them
for every tile; its ``custom_vmap`` rule instead runs one choice for the failing elements of all
tiles together. These tests check that every tile still gets exactly the bits of a call of its
own, with tiles of the same batch taking different branches, under single, nested and partial
vmaps, and that the choice survives vmap as a real conditional.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core

from rpujax.pulsed import jax_backend

D, X, B, BL_MAX = 64, 64, 4, 31  # 4096 elements: compacted buffers of 256 and 1024, and the full array
SIGMA = 0.3
# Fraction of elements of tile t whose upper bound sits just above its weight, so that up pulses
# there may cross it (the summed form's guard fails): no fallback, the 256 buffer, the 1024 buffer,
# the whole array.
FRACTIONS = (0.0, 0.02, 0.15, 0.8)


def _case(t: int = len(FRACTIONS)):
    rng = np.random.default_rng(5)
    w = rng.uniform(-0.2, 0.2, (t, D, X)).astype(np.float32)
    b_max = np.full((t, D, X), 0.6, np.float32)
    for i in range(t):
        near = rng.random((D, X)) < FRACTIONS[i % len(FRACTIONS)]
        b_max[i][near] = w[i][near] + rng.uniform(0.0, 0.02, near.sum()).astype(np.float32)
    b_min = np.full((t, D, X), -0.6, np.float32)
    step = rng.uniform(0.0008, 0.0012, (2, t, D, X)).astype(np.float32)
    params = np.stack([b_max, b_min, step[0], step[1]], axis=1)  # [t, 4, D, X]
    # x > 0, d < 0: every coincidence is an up pulse (toward b_max)
    px = rng.uniform(0.3, 1.0, (B, X)).astype(np.float32)
    pd = -rng.uniform(0.3, 1.0, (B, D)).astype(np.float32)
    bl = np.full((B,), BL_MAX, np.int32)
    kd = np.asarray(jax.vmap(jax.random.key_data)(jax.random.split(jax.random.key(11), t)))
    return jnp.asarray(w), jnp.asarray(params), jnp.asarray(px), jnp.asarray(pd), jnp.asarray(bl), jnp.asarray(kd)


def _update(w, params, px, pd, bl, kd):
    return jax_backend.apply_pulses(w, None, params, px, pd, bl, kd, kind=0, scalars=(SIGMA,), mode=0,
                                    bl_max=BL_MAX)[0]


_single = jax.jit(_update)


def _fallback_counts(w, params, px, pd, bl, kd) -> int:
    """Elements failing the guard in the first sample of one tile (which fallback branch runs)."""
    s0, s1 = jax_backend._threefry(kd[0], kd[1], 0, 0)
    n, _ = jax_backend._counts(0, s0, s1, px[0], pd[0], bl[0], BL_MAX)
    reach = n * params[2] * (1.0 + jax_backend.XI_MAX * SIGMA)
    return int(jnp.sum((n > 0) & ((w + reach > params[0]) | (w - reach < params[1]))))


def test_tiles_of_one_batch_take_different_branches():
    """The case below really mixes branches: tile 0 none, then each buffer size, then all."""
    w, params, px, pd, bl, kd = _case()
    m = [_fallback_counts(w[i], params[i], px, pd, bl, kd[i]) for i in range(w.shape[0])]
    assert m[0] == 0 and 0 < m[1] <= 256 < m[2] <= 1024 < m[3], m


def test_vmap_over_tiles_equals_each_tile():
    w, params, px, pd, bl, kd = _case()
    out = jax.jit(jax.vmap(_update, in_axes=(0, 0, None, None, None, 0)))(w, params, px, pd, bl, kd)
    for i in range(w.shape[0]):
        ref = _single(w[i], params[i], px, pd, bl, kd[i])
        assert bool(jnp.any(ref != w[i]))
        np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(ref))


def test_vmap_over_keys_only_shares_weights_and_params():
    """Only the key is mapped: weights and parameters enter the rule unbatched."""
    w, params, px, pd, bl, kd = _case()
    out = jax.jit(jax.vmap(lambda k: _update(w[3], params[3], px, pd, bl, k)))(kd)
    for i in range(kd.shape[0]):
        np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(_single(w[3], params[3], px, pd, bl, kd[i])))


@pytest.mark.parametrize("params_axis", ["inner", "outer"])
def test_nested_vmap(params_axis):
    """vmap of vmap, with the parameters mapped by either level only."""
    w, params, px, pd, bl, kd = _case()
    w2 = jnp.stack([w, w[::-1]])
    kd2 = jnp.stack([kd, kd[::-1]])
    inner, outer = (0, None) if params_axis == "inner" else (None, 0)
    fn = jax.vmap(jax.vmap(_update, in_axes=(0, inner, None, None, None, 0)), in_axes=(0, outer, None, None, None, 0))
    if params_axis == "outer":
        params = params[1:3]  # one set per outer index
    p_of = (lambda a, i: params[i]) if params_axis == "inner" else (lambda a, i: params[a])  # noqa: E731
    out = jax.jit(fn)(w2, params, px, pd, bl, kd2)
    for a in range(w2.shape[0]):
        for i in range(w2.shape[1]):
            ref = _single(w2[a, i], p_of(a, i), px, pd, bl, kd2[a, i])
            np.testing.assert_array_equal(np.asarray(out[a, i]), np.asarray(ref))


def _primitives(jaxpr, acc):
    for eqn in jaxpr.eqns:
        acc.append(eqn.primitive.name)
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                if isinstance(sub, jex_core.ClosedJaxpr):
                    _primitives(sub.jaxpr, acc)
                elif isinstance(sub, jex_core.Jaxpr):
                    _primitives(sub, acc)
    return acc


def test_branch_choice_stays_a_conditional_under_vmap():
    """A batched index would make vmap evaluate every branch and select (no ``cond`` left); the
    rule keeps one unbatched choice for the whole batch."""
    w, params, px, pd, bl, kd = _case()
    batched = jax.make_jaxpr(jax.vmap(_update, in_axes=(0, 0, None, None, None, 0)))(w, params, px, pd, bl, kd)
    assert "cond" in _primitives(batched.jaxpr, [])


def test_jvp_still_traces():
    """Forward-mode through the update (the custom_vmap has a JVP rule) keeps working."""
    w, params, px, pd, bl, kd = _case()
    f = lambda w: _update(w, params[2], px, pd, bl, kd[2])  # noqa: E731
    out, tangent = jax.jit(lambda w, t: jax.jvp(f, (w,), (t,)))(w[2], jnp.ones_like(w[2]))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(_single(w[2], params[2], px, pd, bl, kd[2])))
    assert tangent.shape == w[2].shape
