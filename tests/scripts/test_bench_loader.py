"""``scripts/bench_loader.py``: a complete, finite report in ``--quick`` mode, and its measuring parts."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_loader", ROOT / "scripts" / "bench_loader.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_loader"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = _load()


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_report_is_complete_and_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    work = tmp_path / "work"
    bench.main(["--quick", "--skip-rss", "--out", str(out), "--workdir", str(work)])
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out

    # Every (case, workers) configuration is timed, with finite positive rates.
    seen = {(r["case"], r["workers"]) for r in report["loader"]}
    assert seen == {(case, w) for case in ("2D", "3D") for w in (0, 1, 2)}
    for row in report["loader"]:
        assert _positive(row["patches_per_s"]) and _positive(row["seconds"])
        assert row["patches"] == 3 * row["batch_size"]  # the timed batches only, warm-up excluded
        assert row["patches_per_s"] == pytest.approx(row["patches"] / row["seconds"])
    for store in report["stores"]:
        assert store["images"] >= 1 and _positive(store["disk_bytes"])
    assert {len(s["patch"]) for s in report["stores"]} == {2, 3}

    d = report["default"]
    assert d["data"] == "DemoDataModule" and d["model"] == "RCAN"
    for part in ("loader", "consumption", "loader_fed"):
        assert _positive(d[part]["patches_per_s"]), part
    assert d["consumption"]["patches_per_s"] == pytest.approx(
        d["consumption"]["steps_per_s"] * d["batch_size"]
    )
    assert d["ratio"] == pytest.approx(d["loader"]["patches_per_s"] / d["consumption"]["patches_per_s"])
    assert _positive(d["fed_over_memory"])

    # The Markdown table carries every figure; the stores are gone (no --keep).
    assert "| 2D 64×64 |" in printed and "| 3D 8×32×32 |" in printed
    assert "**loader / consumption**" in printed and "nan" not in printed.lower()
    assert not any(work.iterdir())


def test_peak_tree_memory_counts_child_processes(tmp_path: Path) -> None:
    # A parent that holds 64 MiB and starts a child holding 160 MiB: the tree's peak holds both.
    child = "import time; b = b'x' * (160 << 20); time.sleep(1.0)"
    parent = (
        "import subprocess, sys; a = b'y' * (64 << 20); "
        f"subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    )
    result = bench.peak_tree_memory([sys.executable, "-c", parent], tmp_path / "log", interval=0.05)
    assert result["returncode"] == 0
    assert result["processes"] >= 2
    assert result["peak_rss_bytes"] >= (64 + 160) * 2**20
    assert result["peak_rss_bytes"] < 2 * 2**30
    assert (64 + 160) * 2**20 <= result["peak_pss_bytes"] <= result["peak_rss_bytes"]


def test_write_store_reaches_target_and_is_readable(tmp_path: Path) -> None:
    from psr.io.omezarr import discover_images

    frames = bench.noisy_frames(2, 64)
    target = 300 * 1024
    info = bench.write_store(tmp_path / "s.zarr", (1, 128, 128), (1, 64, 64), frames, target_bytes=target)
    assert info.disk_bytes >= target
    assert info.disk_bytes == bench.on_disk_bytes(tmp_path / "s.zarr")
    assert info.raw_bytes / info.disk_bytes < 3  # noisy content: zstd cannot squeeze it to nothing
    refs = discover_images(info.path)
    assert len(refs) == info.images and {r.shape for r in refs} == {(1, 128, 128)}
    assert {r.axes for r in refs} == {"cyx"}
    assert not list(tmp_path.glob(".s.zarr.tmp-*"))  # written under a temporary name, then renamed


def test_bad_flag_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--batches", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --batches must be at least 1")
