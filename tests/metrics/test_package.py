"""psr.metrics imports its kernels on first use: the metric names alone do not bring torch."""

from __future__ import annotations

import subprocess
import sys

import psr.metrics


def test_every_exported_name_resolves_and_has_one_home() -> None:
    assert sorted(psr.metrics.__all__) == sorted(psr.metrics._HOME)
    for name in psr.metrics.__all__:
        assert callable(getattr(psr.metrics, name)), name


def test_the_metric_keys_do_not_import_torch() -> None:
    code = "import sys, psr.metrics.keys, psr.reporting.summary; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
