"""The shared RNG contract (rpujax/_rng.py <-> ffi/rng.h) and the guarded FFI registration.

Tests taking the ``ffi`` fixture need the compiled extension: they skip without it, and fail
under RPUJAX_REQUIRE_FFI=1 (CI), see conftest.py.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rpujax import _ffi, _rng

# Random123 known-answer vectors of Threefry-2x32-20 (kat_vectors; also in jax's random tests):
# (k0, k1), (c0, c1) -> (y0, y1). They pin the generator independently of jax.
KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

# C++ normals vs rpujax._rng.box_muller: both compute sqrt(-2 log u1) * cos(2pi u2) in float32 from
# the same u1, u2 (bit-identical words, exact int->float conversions, the same float constant 2pi),
# and sqrt and the products are correctly rounded in both. Only logf and cosf differ: glibc's
# (CUDA's on GPU) against XLA's own float32 approximations, each within about 1 ulp; the log error
# is halved by the sqrt, so the results may differ by about 2 ulp (2**20 samples on XLA:CPU: 93 %
# identical, max 2 ulp). 4 ulp leaves room for other libm/XLA versions and still catches any real
# difference in the transform (a wrong constant, a lost +1 or shift is thousands of ulp off).
NORMALS_MAX_ULP = 4


def _counters(seed, shape):
    rng = np.random.default_rng(seed)
    c0 = rng.integers(0, 2**32, shape, dtype=np.uint32)
    c1 = rng.integers(0, 2**32, shape, dtype=np.uint32)
    # edge values of both words
    c0.flat[:4] = [0, 0xFFFFFFFF, 0, 0xFFFFFFFF]
    c1.flat[:4] = [0, 0xFFFFFFFF, 0xFFFFFFFF, 0]
    return c0, c1


def _jax_threefry(key, c0, c1):
    k0, k1 = _rng.key_words(key)
    return _rng.threefry(k0, k1, c0, c1)


def _jax_normals(key, c0, c1):
    return _rng.box_muller(*_jax_threefry(key, c0, c1))


# ---- the pure-JAX half -------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "c", "y"), KAT)
def test_threefry_known_answers(k, c, y):
    y0, y1 = _rng.threefry(*k, *c)
    assert (int(y0), int(y1)) == y


def test_threefry_broadcasts():
    c1 = np.arange(5, dtype=np.uint32)
    y0, y1 = _rng.threefry(1, 2, 3, c1)
    assert y0.shape == y1.shape == (5,)
    for i in range(5):
        e0, e1 = _rng.threefry(1, 2, 3, i)
        assert (int(y0[i]), int(y1[i])) == (int(e0), int(e1))


def test_sample_key_and_streams():
    s0, s1 = _rng.sample_key(7, 9, 3)
    e0, e1 = _rng.threefry(7, 9, 0, 3)
    assert (int(s0), int(s1)) == (int(e0), int(e1))
    assert [_rng.XBIT, _rng.DBIT, _rng.PULSE_NORMAL, _rng.SUM_NORMAL, _rng.WRITE_NOISE] == [1, 2, 3, 4, 5]
    assert int(_rng.stream_c0(_rng.PULSE_NORMAL, 5)) == 0x30000005
    assert int(_rng.stream_c0(_rng.WRITE_NOISE, _rng.SUB_MASK)) == 0x5FFFFFFF
    assert _rng.stream_c0(_rng.XBIT, np.arange(3, dtype=np.uint32)).dtype == jnp.uint32


def test_uniform24_values():
    w = np.array([0, 0xFF, 0x100, 0xFFFFFFFF, 0x80000000], dtype=np.uint32)
    u = np.asarray(_rng.uniform24(w))
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u, np.array([0, 0, 2.0**-24, 1 - 2.0**-24, 0.5], np.float32))


def test_box_muller_edges_and_constant():
    assert _rng.TWO_PI.view(np.uint32) == 0x40C90FDB  # == the C++ literal 6.2831853f
    # u1 = 2^-24 (smallest), u2 = 0: the largest value, sqrt(48 ln 2)
    assert float(_rng.box_muller(0, 0)) == pytest.approx(math.sqrt(48 * math.log(2)), rel=1e-6)
    # u1 = 1: exactly zero
    assert float(_rng.box_muller(0xFFFFFFFF, 12345)) == 0.0
    # u2 = 1/2: cos(pi) = -1
    z = float(_rng.box_muller(0, 0x80000000))
    assert z == pytest.approx(-math.sqrt(48 * math.log(2)), rel=1e-6)


def test_box_muller_is_standard_normal():
    n = 1 << 16
    y0, y1 = _rng.threefry(11, 22, _rng.stream_c0(_rng.SUM_NORMAL, 0), np.arange(n, dtype=np.uint32))
    z = np.asarray(_rng.box_muller(y0, y1), dtype=np.float64)
    # KS test at alpha = 1e-6 (critical D ~ 0.0105 for n = 65536): a wrong constant or transform fails.
    assert stats.kstest(z, "norm").pvalue > 1e-6
    assert np.abs(z).max() <= math.sqrt(48 * math.log(2)) * (1 + 1e-6)


def test_key_words_accepts_typed_and_legacy_keys():
    typed = jax.random.key(5)
    legacy = jax.random.PRNGKey(5)
    for key in (typed, legacy):
        k0, k1 = _rng.key_words(key)
        assert k0.dtype == k1.dtype == jnp.uint32 and k0.shape == ()
        np.testing.assert_array_equal(np.array([k0, k1]), np.asarray(jax.random.key_data(typed)))
    k0, k1 = _rng.key_words(jax.random.split(typed, 3))
    assert k0.shape == k1.shape == (3,)


def test_key_words_rejects_other_keys():
    with pytest.raises(ValueError, match="threefry2x32"):
        _rng.key_words(jax.random.key(0, impl="rbg"))
    with pytest.raises(ValueError, match="uint32"):
        _rng.key_words(np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        _rng.key_words(np.zeros(4, dtype=np.uint32))


# ---- the C++ half against the JAX half ---------------------------------------------------------


@pytest.mark.parametrize(("k", "c", "y"), KAT)
def test_ffi_threefry_known_answers(ffi, k, c, y):
    y0, y1 = ffi.threefry2x32_ffi(np.array(k, np.uint32), *c)
    assert (int(y0), int(y1)) == y


@pytest.mark.parametrize("shape", [(1000,), (7, 13), (0,)])
def test_ffi_threefry_equals_jax(ffi, shape):
    key = jax.random.key(1234)
    c0, c1 = _counters(0, shape) if math.prod(shape) >= 4 else (np.zeros(shape, np.uint32),) * 2
    got = jax.jit(ffi.threefry2x32_ffi)(key, c0, c1)
    want = jax.jit(_jax_threefry)(key, c0, c1)
    for g, w in zip(got, want):
        assert g.shape == shape and g.dtype == jnp.uint32
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_ffi_threefry_vmap(ffi):
    keys = jax.random.split(jax.random.key(3), 5)
    c0, c1 = _counters(1, (5, 64))
    # batched keys and counters
    got = jax.jit(jax.vmap(ffi.threefry2x32_ffi))(keys, c0, c1)
    want = jax.vmap(_jax_threefry)(keys, c0, c1)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # one key, batched counters
    got = jax.vmap(ffi.threefry2x32_ffi, in_axes=(None, 0, 0))(keys[0], c0, c1)
    want = _jax_threefry(keys[0], c0, c1)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # batched keys, shared counters; nested vmap over a (2, 3) grid of keys
    grid = jax.random.split(jax.random.key(4), 6).reshape(2, 3)
    f = jax.vmap(jax.vmap(ffi.threefry2x32_ffi, in_axes=(0, None, None)), in_axes=(0, None, None))
    got = jax.jit(f)(grid, c0[0], c1[0])
    g_ref = jax.vmap(jax.vmap(_jax_threefry, in_axes=(0, None, None)), in_axes=(0, None, None))
    want = g_ref(grid, c0[0], c1[0])
    for g, w in zip(got, want):
        assert g.shape == (2, 3, 64)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_ffi_normals_equal_box_muller(ffi):
    key = jax.random.key(99)
    c0, c1 = _counters(2, (1 << 16,))
    got = np.asarray(jax.jit(ffi.normals_ffi)(key, c0, c1))
    want = np.asarray(jax.jit(_jax_normals)(key, c0, c1))
    assert got.dtype == np.float32
    np.testing.assert_array_max_ulp(got, want, maxulp=NORMALS_MAX_ULP)
    # vmap over keys
    keys = jax.random.split(key, 3)
    got = np.asarray(jax.vmap(ffi.normals_ffi, in_axes=(0, None, None))(keys, c0[:100], c1[:100]))
    want = np.asarray(jax.vmap(_jax_normals, in_axes=(0, None, None))(keys, c0[:100], c1[:100]))
    np.testing.assert_array_max_ulp(got, want, maxulp=NORMALS_MAX_ULP)


def test_ffi_module_interface(ffi):
    mod = importlib.import_module("rpujax._ffi_cpu")
    regs = mod.registrations()
    assert {"rpujax_threefry", "rpujax_box_muller_normals"} <= set(regs)
    runtime = ffi.runtime_ffi_api_version()
    assert runtime is not None, "the installed jaxlib should ship xla/ffi/api/c_api.h"
    built = tuple(mod.ffi_api_version())
    assert ffi._version_problem(built, runtime, ffi._jaxlib_version()) is None
    assert mod.build_info()["ffi_api_version"] == built


# ---- registration ------------------------------------------------------------------------------


def test_registration_is_idempotent(ffi, monkeypatch):
    calls = []
    real = jax.ffi.register_ffi_target
    monkeypatch.setattr(jax.ffi, "register_ffi_target", lambda *a, **k: calls.append(a) or real(*a, **k))
    platforms = ffi.ensure_registered()
    assert ffi.ensure_registered() is platforms and "cpu" in platforms
    monkeypatch.setattr(ffi, "_status", None)  # forget the status: registering again must be a no-op
    assert ffi.ensure_registered() == platforms
    assert calls == []
    np.testing.assert_array_equal(np.asarray(ffi.threefry2x32_ffi(np.zeros(2, np.uint32), 0, 0)[0]), 0x6B200159)


def _fresh_status(monkeypatch):
    monkeypatch.delenv("RPUJAX_DISABLE_FFI", raising=False)
    monkeypatch.setattr(_ffi, "_status", None)


def test_missing_extension_warns_once_and_falls_back(monkeypatch):
    _fresh_status(monkeypatch)
    monkeypatch.setitem(sys.modules, "rpujax._ffi_cpu", None)  # import rpujax._ffi_cpu now fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not _ffi.available()
        assert not _ffi.available("cpu")
        _ffi.ensure_registered()
        with pytest.raises(RuntimeError, match="not available"):
            _ffi.threefry2x32_ffi(np.zeros(2, np.uint32), 0, 0)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    message = str(runtime[0].message)
    assert "pure-JAX" in message and "rpujax._ffi_cpu" in message
    assert "rpujax._ffi_cpu" in _ffi.unavailable_reason()


def test_incompatible_ffi_version_warns_and_falls_back(ffi, monkeypatch):
    _fresh_status(monkeypatch)
    mod = importlib.import_module("rpujax._ffi_cpu")
    monkeypatch.setattr(mod, "ffi_api_version", lambda: (99, 0))
    calls = []
    monkeypatch.setattr(jax.ffi, "register_ffi_target", lambda *a, **k: calls.append(a))
    with pytest.warns(RuntimeWarning, match=r"XLA FFI API 99\.0"):
        assert not _ffi.available()
    assert calls == []  # nothing incompatible was handed to XLA


def test_disabled_by_environment(monkeypatch):
    _fresh_status(monkeypatch)
    monkeypatch.setenv("RPUJAX_DISABLE_FFI", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        assert not _ffi.available()
        assert _ffi.unavailable_reason() is None


def test_version_rule():
    problem = _ffi._version_problem
    assert problem((0, 2), (0, 3), (0, 10, 2)) is None  # older minor: accepted by XLA
    assert problem((0, 3), (0, 3), (0, 10, 2)) is None
    assert "0.4" in problem((0, 4), (0, 3), (0, 10, 2))  # newer minor: rejected by XLA
    assert problem((1, 0), (0, 3), (0, 10, 2)) is not None  # other major
    # without the runtime's header: the supported jaxlib range decides
    assert problem((0, 2), None, (0, 9, 0)) is None
    assert problem((0, 2), None, (0, 10, 7)) is None
    assert problem((0, 2), None, (0, 8, 1)) is not None
    assert problem((0, 2), None, (0, 11, 0)) is not None
