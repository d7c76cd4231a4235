"""The demo (README command 1) end to end at reduced size (``--quick``), and its command line."""

from __future__ import annotations

import math

import pytest

from rpujax import demo


def test_demo_quick_runs_end_to_end_and_writes_png(tmp_path, capsys):
    out = tmp_path / "plots" / "demo.png"
    result = demo.main(["--quick", "--no-progress", "--out", str(out)])
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000  # three panels, not an empty canvas
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for v in result["losses"])
    # 3 epochs of ConstantStep: the loss falls and the model is far above chance (10 %)
    assert result["losses"][-1] < result["losses"][0]
    assert result["test_accuracy"][-1] > 0.5
    assert result["drift_times"] == [1.0, 31536000.0]
    assert all(0.0 <= m <= 1.0 for m in result["drift_mean"])
    assert result["drift_mean"][0] > 0.5
    printed = capsys.readouterr().out
    for row in ("test accuracy (trained tiles)", "PCM accuracy at 1 s", "PCM accuracy at 1 y", "seconds per epoch"):
        assert row in printed


def test_demo_help_lists_devices_and_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--device", "--epochs", "--seed", "--out", "--quick"):
        assert flag in text
    for name in ("floating-point", "constant-step", "soft-bounds", "exp-step", "pow-step", "linear-step", "ideal"):
        assert name in text and name in demo.DEVICES


def test_demo_rejects_unknown_device(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--device", "tiki-taka-v9"])
    assert exc.value.code == 2
