"""``scripts/bench_gpu.py``: its options and the live-restoration part of its report (the steps themselves
need a GPU to mean anything; ``--quick`` rehearses them on the CPU by hand)."""

from __future__ import annotations

import pytest

from tests.scripts import load_script

bench = load_script("bench_gpu")


def test_live_defaults_full_and_quick() -> None:
    full = bench.parse_args([])
    assert (full.live_size, full.live_frames, full.budget) == (2048, 32, 300.0)
    quick = bench.parse_args(["--quick", "--skip", "live"])
    assert (quick.live_size, quick.live_frames, quick.skip) == (128, 4, ["live"])


def test_live_frames_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--live-frames", "0"])
    assert "--live-frames" in capsys.readouterr().err


def test_report_has_the_live_frames_per_second() -> None:
    live = {
        "size": 2048,
        "frames": 32,
        "wall_s": 12.0,
        "results": {
            "care_unet": {
                "frames_per_second": 31.5,
                "gpu_busy": 0.8,
                "peak_gpu_gib": 3.0,
                "peak_rss_gib": 2.0,
            }
        },
    }
    text = bench.report(["# header"], {"live": live}, [("live", "live")])
    assert "| care_unet | 32 × 2048² | 31.5 | 80 % | 3.00 | 2.00 |" in text
    assert "| live | 12 | ok |" in text
    missing = bench.report(["# header"], {}, [("live", "live")])
    assert "## (d) Live restoration" in missing and "not run (time budget)" in missing
