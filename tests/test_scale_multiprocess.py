"""Multi-process data-parallel training (``jax.distributed``, gloo CPU collectives).

Starts ``examples/multiprocess_train.py --launch 2 --compare``: two processes on 127.0.0.1 (one
CPU device each) train the demo MLP for 3 steps with the batch split between them, then one
process trains alone; the launcher exits non-zero unless the tile weights are bit-identical. The
whole run is bounded (``--timeout`` per launch, ``TIMEOUT_S`` overall).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 400


def test_two_processes_on_localhost_match_a_single_process(tmp_path):
    import rpujax  # noqa: PLC0415 - the children import the same rpujax (installed or source tree)

    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    root = str(Path(rpujax.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = tmp_path / "multi.npz"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "multiprocess_train.py"), "--launch", "2", "--compare",
         "--steps", "3", "--timeout", "180", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 process(es), 2 device(s)" in proc.stdout
    assert "tile weights bit-identical: True" in proc.stdout
    saved = np.load(out)
    assert len(saved["losses"]) == 3 and np.all(np.isfinite(saved["losses"]))
