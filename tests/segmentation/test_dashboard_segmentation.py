"""The sweep dashboard shows evaluate.py task=segment results beside the training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psr.reporting.dashboard import scan_runs, write_report
from tests.reporting.test_dashboard import CHROMIUM, _render, make_sweep


def _segment_summary(folder: Path) -> dict:
    """A summary as evaluate.py task=segment writes it (NaN already written as null)."""
    methods = [
        {"method": "low", "n": 2, "iou": 0.25, "dice": 0.4, "recovered": 0.0, "f1": 0.2, "ap": 0.1},
        {"method": "restored", "n": 2, "iou": 0.625, "dice": 0.77, "recovered": 0.5, "f1": 0.6, "ap": 0.43},
        {"method": "gaussian", "n": 2, "iou": 0.5, "dice": 0.67, "recovered": 0.333, "f1": None, "ap": None},
    ]
    summary = {
        "task": "segment",
        "seg_checkpoint": "seg.ckpt",
        "restoration_checkpoint": "restore.ckpt",
        "name": "nuclei",
        "reference": "high-quality segmentation",
        "n_images": 2,
        "best_classical": "gaussian",
        "methods": methods,
    }
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def test_segment_summaries_are_a_table_of_the_report_not_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    make_sweep(sweep)
    _segment_summary(sweep / "segment_eval")
    training = sweep / "segment_run"  # a segment.py run: not a restoration run either
    training.mkdir()
    (training / "summary.json").write_text(
        json.dumps({"task": "segment", "model": "unet", "crappifier": None})
    )
    runs, skipped = scan_runs(sweep)
    assert len(runs) == 8 and skipped == []  # not restoration runs, and not errors
    page = write_report(sweep).read_text()
    data = json.loads(page.split('id="psr-data">', 1)[1].split("</script>", 1)[0])
    rows = data["segmentation"]
    assert [r["method"] for r in rows] == ["low", "restored", "gaussian"]
    assert {r["evaluation"] for r in rows} == {"segment_eval"}
    assert rows[1]["iou"] == 0.625 and rows[2]["f1"] is None and rows[2]["best_classical"]


def test_a_sweep_without_segmentation_has_no_segmentation_rows(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    make_sweep(sweep)
    page = write_report(sweep).read_text()
    assert '"segmentation":[]' in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium to run the page's script")
def test_the_page_draws_the_segmentation_table(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    make_sweep(sweep)
    _segment_summary(sweep / "segment_eval")
    dom, errors = _render(write_report(sweep), tmp_path)
    assert errors == []
    assert ("section", {"id": "segmentation"}) in dom.tags
    rows = [a for tag, a in dom.tags if tag == "tr" and "data-method" in a]
    assert [a["data-method"] for a in rows] == ["low", "restored", "gaussian"]
    assert [a.get("class", "") for a in rows] == ["", "", "best"]
