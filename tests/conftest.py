"""Shared pytest set-up for rpujax.

* Which rpujax is tested. ``python -m pytest`` puts the current directory first on ``sys.path``, so
  from the repository root ``import rpujax`` would load the source tree, which has no compiled
  extension. When rpujax is installed as a regular package (``pip install .``, as the README and
  ``.ci/run`` do), the repository root is dropped from ``sys.path`` so that the installed package,
  extension included, is tested, and ``PYTHONSAFEPATH=1`` is set so that Python subprocesses the
  tests start (``python -c ...`` from the repository root) do the same. With no installation
  (pure-Python work on the source tree) or an editable one (its import hook maps ``rpujax`` to the
  source tree and the built extension), nothing is changed. The header of the pytest report names
  the rpujax that was imported.
* ``ffi`` fixture: ``rpujax._ffi`` with the CPU handlers registered. Where the extension is missing
  the test is skipped, except under ``RPUJAX_REQUIRE_FFI=1`` (set by CI), where it fails.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRE_FFI = os.environ.get("RPUJAX_REQUIRE_FFI", "").strip().lower() in ("1", "true", "yes", "on")


def _prefer_installed_rpujax() -> None:
    try:
        dist = importlib.metadata.distribution("rpujax")
    except importlib.metadata.PackageNotFoundError:
        return
    installed = Path(dist.locate_file("rpujax/__init__.py"))
    if not installed.is_file() or installed.resolve().parent == REPO / "rpujax":
        return  # editable install, or installed in place: the source tree is the package
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO]
    os.environ["PYTHONSAFEPATH"] = "1"  # child interpreters: no current directory on sys.path


_prefer_installed_rpujax()


def pytest_report_header(config):
    spec = importlib.util.find_spec("rpujax")
    ext = importlib.util.find_spec("rpujax._ffi_cpu") if spec is not None else None
    where = spec.origin if spec is not None else "not importable"
    built = "built" if ext is not None else "NOT built"
    return f"rpujax: {where} (CPU FFI extension {built}; RPUJAX_REQUIRE_FFI={'1' if REQUIRE_FFI else '0'})"


@pytest.fixture(scope="session")
def ffi():
    """``rpujax._ffi`` with the CPU FFI handlers registered (skip, or fail under RPUJAX_REQUIRE_FFI=1)."""
    from rpujax import _ffi

    if not _ffi.available("cpu"):
        reason = _ffi.unavailable_reason() or "disabled by RPUJAX_DISABLE_FFI"
        message = f"rpujax CPU FFI extension unavailable: {reason}"
        if REQUIRE_FFI:
            pytest.fail(f"{message} (RPUJAX_REQUIRE_FFI=1 requires it)", pytrace=False)
        pytest.skip(message)
    return _ffi
