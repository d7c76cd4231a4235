"""Lazy, guarded registration of rpujax's XLA FFI handlers (the fast path).

Importing rpujax never touches the extension. The first use (``available()``, ``ensure_registered()``
or a kernel wrapper) imports ``rpujax._ffi_cpu`` (and ``rpujax._ffi_cuda`` when it was built and a
CUDA backend exists), checks that the XLA FFI API version the module was compiled against is one the
running jaxlib accepts, and registers every handler of the module with ``jax.ffi.register_ffi_target``
(platform ``"cpu"`` / ``"CUDA"``). If anything goes wrong, rpujax warns once (``RuntimeWarning``,
with the reason) and ``available()`` is False: callers then use the pure-JAX path.

Environment: ``RPUJAX_DISABLE_FFI=1`` turns the FFI path off (silently: it was asked for).

Version check. XLA FFI handlers carry the API version of the headers they were compiled with and
XLA accepts a handler whose major version equals its own and whose minor version is not newer
(down to a minimum it keeps for about a year). rpujax builds against the oldest supported jaxlib
(pyproject.toml pins it), so one build serves every newer jaxlib. jaxlib does not expose its FFI
API version to Python, but it ships the matching ``xla/ffi/api/c_api.h`` (``jax.ffi.include_dir()``),
whose ``XLA_FFI_API_MAJOR/MINOR`` are the running version; when that header is missing, the jaxlib
version is checked against the supported range instead. Before registering, the backend is
initialised: XLA then validates each handler at registration, so anything the pre-check missed
raises here (and is caught) instead of failing the backend's initialisation later.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from rpujax import _rng

__all__ = [
    "available",
    "ensure_registered",
    "unavailable_reason",
    "runtime_ffi_api_version",
    "threefry2x32_ffi",
    "normals_ffi",
]

# jaxlib versions (major, minor) this release supports: [low, high).
SUPPORTED_JAXLIB = ((0, 9), (0, 11))

# (module, jax platform name, register_ffi_target platform name, whether its absence is a problem)
_MODULES = (
    ("rpujax._ffi_cpu", "cpu", "cpu", True),
    ("rpujax._ffi_cuda", "cuda", "CUDA", False),
)


@dataclass(frozen=True)
class _Status:
    platforms: frozenset[str]  # jax platform names with registered handlers ("cpu", "cuda")
    reason: str | None  # why (part of) the FFI path is unavailable; None if nothing failed


_lock = threading.Lock()
_status: _Status | None = None
# (name, platform) pairs already handed to jax; kept even if _status is reset (tests do that), since
# a registration cannot be undone.
_registered: set[tuple[str, str]] = set()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def runtime_ffi_api_version() -> tuple[int, int] | None:
    """``(major, minor)`` XLA FFI API version of the running jaxlib, or None if it cannot be read."""
    try:
        path = os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, AttributeError, TypeError):
        return None
    major = re.search(r"^#define XLA_FFI_API_MAJOR (\d+)", text, re.MULTILINE)
    minor = re.search(r"^#define XLA_FFI_API_MINOR (\d+)", text, re.MULTILINE)
    if major is None or minor is None:
        return None
    return int(major[1]), int(minor[1])


def _jaxlib_version() -> tuple[int, ...]:
    import jaxlib.version

    return tuple(int(p) for p in re.findall(r"\d+", jaxlib.version.__version__)[:3])


def _version_problem(
    module: tuple[int, int], runtime: tuple[int, int] | None, jaxlib_version: tuple[int, ...]
) -> str | None:
    """Why a module built against FFI API ``module`` cannot run here, or None if it can."""
    jl = ".".join(map(str, jaxlib_version))
    if runtime is not None:
        if module[0] != runtime[0] or module[1] > runtime[1]:
            return (
                f"the extension was built against XLA FFI API {module[0]}.{module[1]}, which jaxlib {jl} "
                f"(XLA FFI API {runtime[0]}.{runtime[1]}) does not accept; reinstall rpujax from source "
                "against a supported jaxlib"
            )
        return None
    (lo, hi) = SUPPORTED_JAXLIB
    if not lo <= tuple(jaxlib_version[:2]) < hi:
        return (
            f"jaxlib {jl} does not ship its FFI headers and is outside the supported range "
            f"{lo[0]}.{lo[1]} <= jaxlib < {hi[0]}.{hi[1]}"
        )
    return None


def _has_backend(platform: str) -> bool:
    try:
        return len(jax.devices(platform)) > 0
    except Exception:  # noqa: BLE001 - unknown or failing backend: nothing to register for
        return False


def _register_module(mod, ffi_platform: str) -> str | None:
    """Register all handlers of ``mod`` (backend initialised); returns the reason on failure, or None."""
    try:
        version = tuple(mod.ffi_api_version())
        problem = _version_problem(version, runtime_ffi_api_version(), _jaxlib_version())
        if problem is not None:
            return f"{mod.__name__}: {problem}"
        for name, capsule in mod.registrations().items():
            if (name, ffi_platform) not in _registered:
                jax.ffi.register_ffi_target(name, capsule, platform=ffi_platform)
                _registered.add((name, ffi_platform))
    except Exception as e:  # noqa: BLE001 - any failure means: use the pure-JAX path
        return f"registering {mod.__name__} for {ffi_platform} failed: {type(e).__name__}: {e}"
    return None


def _register_all() -> _Status:
    if _env_flag("RPUJAX_DISABLE_FFI"):
        return _Status(frozenset(), None)
    platforms: set[str] = set()
    problems: list[str] = []
    for module_name, jax_platform, ffi_platform, required in _MODULES:
        try:
            mod = importlib.import_module(module_name)
        except ImportError as e:
            if required or not (isinstance(e, ModuleNotFoundError) and e.name == module_name):
                problems.append(f"{module_name} cannot be imported ({e})")
            continue  # an optional module that was not built is no problem
        # Initialising the backend before registering makes XLA validate each handler right away
        # (see above). A platform without a backend (no GPU, JAX_PLATFORMS) needs no handlers.
        if not _has_backend(jax_platform):
            continue
        problem = _register_module(mod, ffi_platform)
        if problem is None:
            platforms.add(jax_platform)
        else:
            problems.append(problem)
    return _Status(frozenset(platforms), "; ".join(problems) or None)


def ensure_registered() -> frozenset[str]:
    """Register the FFI handlers once; returns the platforms (``"cpu"``, ``"cuda"``) that have them."""
    global _status
    if _status is None:
        with _lock:
            if _status is None:
                status = _register_all()
                if status.reason is not None:
                    warnings.warn(
                        f"rpujax: FFI kernels unavailable, the pure-JAX path is used instead: {status.reason}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                _status = status
    return _status.platforms


def _platform(platform: str) -> str:
    p = platform.lower()
    return "cuda" if p == "gpu" else p


def available(platform: str = "cpu") -> bool:
    """Whether rpujax's FFI handlers are registered for ``platform`` ("cpu", "cuda" or "gpu")."""
    return _platform(platform) in ensure_registered()


def unavailable_reason() -> str | None:
    """Why (part of) the FFI path is unavailable, or None (also when disabled by RPUJAX_DISABLE_FFI)."""
    ensure_registered()
    return _status.reason if _status is not None else None


# ---- thin wrappers over the RNG handlers (used by the tests to pin ffi/rng.h to rpujax._rng) ----


def _rng_call(target: str, key, c0, c1, dtypes):
    if not ensure_registered():
        raise RuntimeError(f"rpujax FFI kernels are not available: {unavailable_reason() or 'disabled'}")
    k0, k1 = _rng.key_words(key)
    if k0.ndim != 0:
        raise ValueError(f"{target}: expected one key (use jax.vmap for a batch), got key words of shape {k0.shape}")
    c0, c1 = jnp.broadcast_arrays(jnp.asarray(c0, jnp.uint32), jnp.asarray(c1, jnp.uint32))
    results = tuple(jax.ShapeDtypeStruct(c0.shape, dt) for dt in dtypes)
    # broadcast_all: under vmap every operand gets the same leading batch dims, and the handler uses
    # key block b for the b-th block of counters (ffi/rng_ffi.h), i.e. each batch element's own key.
    return jax.ffi.ffi_call(target, results, vmap_method="broadcast_all")(jnp.stack([k0, k1]), c0, c1)


def threefry2x32_ffi(key, c0, c1) -> tuple[jax.Array, jax.Array]:
    """``threefry(k0, k1, c0, c1)`` computed by the C++/CUDA handler; ``key``: one threefry key."""
    return _rng_call("rpujax_threefry", key, c0, c1, (np.uint32, np.uint32))


def normals_ffi(key, c0, c1) -> jax.Array:
    """``box_muller(*threefry(k0, k1, c0, c1))`` computed by the C++/CUDA handler, float32."""
    return _rng_call("rpujax_box_muller_normals", key, c0, c1, (np.float32,))[0]
