"""scripts/bench_augment.py: the cost of each augmentation setting per patch; bad input is one error line."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = str(ROOT / "scripts" / "bench_augment.py")


def test_bench_augment_times_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, SCRIPT, "--size", "16", "--channels", "2", "--n", "3"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    times = re.findall(r": (\d+\.\d+) ms per patch", out)
    assert out.startswith("2 × 16² float32 patches") and len(times) == 3
    assert all(float(t) > 0 for t in times)


def test_bench_augment_refuses_a_tiny_patch() -> None:
    result = subprocess.run([sys.executable, SCRIPT, "--size", "4"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "error: --size must be at least 8" in result.stderr
