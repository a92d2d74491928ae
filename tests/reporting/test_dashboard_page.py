"""The sweep dashboard's page rendered in headless Chromium: its numbers, axes, baselines and colours."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from psr.reporting.dashboard import write_report
from tests.reporting.test_dashboard import (
    CHROMIUM,
    EPOCHS,
    MODELS,
    REAL,
    TESTS,
    TRAIN,
    _render,
    expected_baseline,
    expected_means,
)

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@needs_chromium
def test_the_error_check_catches_a_broken_page(tmp_path: Path, sweep: tuple[Path, dict]) -> None:
    plain = tmp_path / "plain.html"
    plain.write_text("<!doctype html><html><body><p>x</p><script>notDefined();</script></body></html>")
    _, errors = _render(plain, tmp_path)
    assert any("notDefined is not defined" in e for e in errors), errors
    folder, _ = sweep
    page = write_report(folder).read_text()
    broken = tmp_path / "broken.html"  # the report with a bug in its renderer: the page's hook reports it too
    anchor = 'var D = JSON.parse(document.getElementById("psr-data").textContent);'
    assert anchor in page
    broken.write_text(page.replace(anchor, anchor + " D.runs.forEach(undefinedRenderer);", 1))
    dom, errors = _render(broken, tmp_path)
    assert any(e.startswith("page: Uncaught") and "undefinedRenderer is not defined" in e for e in errors), (
        errors
    )
    assert dom.body.get("data-rendered") is None  # the page did not finish drawing
    assert any(":CONSOLE" in e for e in errors), errors


@needs_chromium
def test_rendered_heatmaps_match_the_summaries(tmp_path: Path, sweep: tuple[Path, dict]) -> None:
    folder, written = sweep
    broken = folder / "6-unet-gaussian-seed0" / "summary.json"
    kept = json.loads(broken.read_text())
    broken.write_text("{ truncated")
    older = folder / "1-rcan-poisson-seed1" / "summary.json"  # an older run: no real_eval, no history
    summary = json.loads(older.read_text())
    del summary["real_eval"], summary["history"]
    older.write_text(json.dumps(summary))
    with pytest.warns(UserWarning, match="6-unet-gaussian-seed0"):
        page = write_report(folder)
    dom, errors = _render(page, tmp_path)
    assert errors == []
    assert dom.body.get("data-rendered") == "true"
    assert len(dom.skipped) == 1 and str(broken) in dom.skipped[0]
    # expected numbers: the written ones minus the skipped run (unet, gaussian, seed 0)
    skip = ("unet", "gaussian", str(kept["seed"]))
    digits = {"psnr": 2, "ssim": 3}
    for metric in ("psnr", "ssim"):
        values = {
            k: v
            for k, v in written[metric].items()
            if (k[0], k[1], k[3]) != skip
            and not (k[:2] == ("rcan", "poisson") and k[3] == "1" and k[2].startswith("real"))
        }
        expected = expected_means(values)
        cells = [c for c in dom.cells if c["data-metric"] == metric and c["data-role"] == "model"]
        assert len(cells) == len(MODELS) * len(TRAIN) * (len(TESTS) + len(REAL))
        for cell in cells:
            key = (cell["data-model"], cell["data-train"], f"{cell['data-kind']}:{cell['data-test']}")
            assert cell["text"] == f"{expected[key]:.{digits[metric]}f}", (key, cell)
            assert float(cell["data-value"]) == pytest.approx(expected[key], abs=1e-9)
        assert {int(c["data-n"]) for c in cells} == {1, 2}
        assert all(
            c["data-value"] for c in cells
        )  # every cell has a result: none is empty  # the skipped run leaves one seed in a row
        base_values = {
            k: v
            for k, v in written[f"base_{metric}"].items()
            if (k[0], k[1], k[3]) != skip
            and not (k[:2] == ("rcan", "poisson") and k[3] == "1" and k[2].startswith("real"))
        }
        base = expected_baseline(base_values)
        shown = [c for c in dom.cells if c["data-metric"] == metric and c["data-role"] == "baseline"]
        assert len(shown) == len(MODELS) * (len(TESTS) + len(REAL))
        for cell in shown:
            assert cell["data-train"] == "bilinear"
            key2 = (cell["data-model"], f"{cell['data-kind']}:{cell['data-test']}")
            assert cell["text"] == f"{base[key2]:.{digits[metric]}f}"
    diagonal = [c for c in dom.cells if "diag" in c["class"].split()]
    assert {(c["data-train"], c["data-test"]) for c in diagonal} == {
        ("poisson", "poisson"),
        ("gaussian", "gaussian"),
    }
    # the other sections: bars over seeds, learning curves (val and train loss), panels, the table
    tags = dom.tags
    bars = [
        a
        for t, a in tags
        if t == "g" and "bar" in a.get("class", "").split() and a.get("data-metric") == "psnr"
    ]
    assert len(bars) == 3 * len(MODELS) * len(TRAIN)  # validation, gain over the baseline, cross-evaluation
    assert len([a for a in bars if a["data-kind"] == "gain"]) == len(MODELS) * len(TRAIN)
    # every bar starts at 0 on an axis that starts at 0
    bar_charts = [a for t, a in tags if t == "svg" and "data-y-from" in a and a.get("role") == "img"]
    rects = [a for t, a in tags if t == "rect" and "data-from" in a]
    assert len(rects) == 2 * len(bars) and {a["data-from"] for a in rects} == {"0"}  # PSNR and SSIM bars
    # the baseline on every bar chart: ticks on value charts, the zero line on gain charts
    assert (
        len([a for t, a in tags if t == "line" and a.get("class") == "baseline-tick"]) == 2 * 2 * 4
    )  # metrics x charts x bars
    assert (
        len([a for t, a in tags if t == "line" and a.get("class") == "baseline-zero"]) == 2
    )  # one gain chart per metric
    # learning curves: metric axes not from 0 are drawn broken, loss axes start at 0
    broken = [a for a in bar_charts if a["data-y-broken"] == "true"]
    assert broken and all(float(a["data-y-from"]) > 0 for a in broken)
    assert len([t for t, a in tags if t == "g" and a.get("class") == "axis-break"]) == len(broken)
    assert all(float(a["data-y-from"]) == 0 for a in bar_charts if a["data-y-broken"] == "false")
    baselines = [a for t, a in tags if t == "polyline" and a.get("data-key") == "val/baseline_psnr"]
    assert {(a["data-train"]) for a in baselines} == set(TRAIN) and len(baselines) == len(MODELS) * len(TRAIN)
    # the spread over seeds is shown in every heatmap cell of more than one run
    assert all(c.get("data-spread", "").startswith("± ") for c in dom.cells if c["data-n"] != "1")
    curves = [a for t, a in tags if t == "polyline" and a.get("data-key") == "val/psnr"]
    assert len(curves) == 6 and all(len(a["points"].split()) == EPOCHS for a in curves)
    assert len([a for t, a in tags if t == "polyline" and a.get("data-key") == "train/loss"]) == 2 * 6
    assert set(dom.missing) == {"history", "real_eval"}
    assert all(note.startswith("1 of 7 runs have no") for note in dom.missing.values())
    assert all(note.endswith(": 1-rcan-poisson-seed1.") for note in dom.missing.values())
    images = [a["src"] for t, a in tags if t == "img"]
    assert len(images) == 7 and all(src.startswith("data:image/png;base64,") for src in images)
    assert len([a for t, a in tags if t == "tr" and "data-run" in a]) == 7


@needs_chromium
def test_a_folder_of_older_summaries_renders_with_notes(tmp_path: Path) -> None:
    run = tmp_path / "sweep" / "0-rcan-poisson"
    run.mkdir(parents=True)
    best = {"epoch": 9, "step": 640, "val/psnr": 26.2, "val/ssim": 0.87, "val/baseline_psnr": 23.9}
    (run / "summary.json").write_text(
        json.dumps({"model": "rcan", "crappifier": "poisson", "seed": 1, "best": best})
    )
    dom, errors = _render(write_report(tmp_path / "sweep"), tmp_path)
    assert errors == []
    assert dom.body.get("data-rendered") == "true"
    assert dom.cells == []
    assert set(dom.missing) == {"cross_eval", "real_eval", "history", "panel"}
    assert dom.missing["cross_eval"].startswith("No run has cross-evaluation results")


@needs_chromium
def test_a_tiny_difference_does_not_fill_the_colour_range(tmp_path: Path) -> None:
    """Two models 0.01 dB apart: the heatmap's colour range still spans 2 dB, so their colours barely differ."""
    for num, (model, psnr) in enumerate((("rcan", 25.00), ("unet", 25.01))):
        run = tmp_path / "sweep" / f"{num}-{model}"
        run.mkdir(parents=True)
        scores = {"psnr": psnr, "ssim": 0.8, "baseline_psnr": 25.005, "baseline_ssim": 0.8}
        summary = {"model": model, "crappifier": "poisson", "seed": 0, "cross_eval": {"poisson": scores}}
        (run / "summary.json").write_text(json.dumps(summary))
    dom, errors = _render(write_report(tmp_path / "sweep"), tmp_path)
    assert errors == []
    legend = next(a for t, a in dom.tags if t == "div" and a.get("data-legend") == "psnr")
    assert float(legend["data-hi"]) - float(legend["data-lo"]) == pytest.approx(2.0)
    colours = {
        c["data-model"]: [int(v) for v in re.findall(r"\d+", c["style"].split("background:")[1])[:3]]
        for c in dom.cells
        if c["data-metric"] == "psnr" and c["data-role"] == "model"
    }
    assert max(abs(a - b) for a, b in zip(colours["rcan"], colours["unet"], strict=True)) <= 3
