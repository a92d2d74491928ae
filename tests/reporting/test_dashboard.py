"""The sweep dashboard: collection and aggregation over seeds, the page in headless Chromium, the CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from psr.reporting import render
from psr.reporting.dashboard import (
    ReportError,
    ablation,
    build_report,
    collect_runs,
    cross_mean_spread,
    gain_spread,
    report_data,
    scan_runs,
    seed_spread,
    write_report,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("rcan", "unet")
TRAIN = ("poisson", "gaussian")
TESTS = ("gaussian", "none", "poisson")  # deliberately not in training order: the trained ones come first
REAL = ("hagen",)
SEEDS = (0, 1)
EPOCHS = 5
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def _panel(path: Path, shade: int, size: tuple[int, int] = (48, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=shade).save(path)


def make_sweep(sweep: Path, seed: int = 7) -> dict[str, dict[tuple[str, ...], float]]:
    """A fake multirun folder following the summary.json contract; returns the numbers it wrote:
    ``"psnr"``/``"ssim"``: ``(model, train, test, seed)``; ``"base_psnr"``/``"base_ssim"``: the same keys;
    ``"val_psnr"``: ``(model, train, seed)``."""
    rng = random.Random(seed)
    written: dict[str, dict[tuple[str, ...], float]] = {
        k: {} for k in ("psnr", "ssim", "base_psnr", "base_ssim", "val_psnr")
    }
    num = 0
    for model in MODELS:
        for train in TRAIN:
            for s in SEEDS:
                run = sweep / f"{num}-{model}-{train}-seed{s}"
                sets: dict[str, dict[str, dict[str, float | int]]] = {"cross_eval": {}, "real_eval": {}}
                for kind, names in (("cross_eval", TESTS), ("real_eval", REAL)):
                    for test in names:
                        scores = {
                            "psnr": rng.uniform(20.0, 32.0),
                            "ssim": rng.uniform(0.4, 0.95),
                            "baseline_psnr": rng.uniform(18.0, 24.0),
                            "baseline_ssim": rng.uniform(0.3, 0.6),
                        }
                        sets[kind][test] = {**scores, "n": 4}
                        key = (
                            model,
                            train,
                            f"{'synthetic' if kind == 'cross_eval' else 'real'}:{test}",
                            str(s),
                        )
                        written["psnr"][key] = scores["psnr"]
                        written["ssim"][key] = scores["ssim"]
                        written["base_psnr"][key] = scores["baseline_psnr"]
                        written["base_ssim"][key] = scores["baseline_ssim"]
                history = []
                for epoch in range(EPOCHS):
                    history.append(
                        {
                            "epoch": epoch,
                            "step": 10 * (epoch + 1),
                            "val/psnr": 22.0 + epoch * rng.uniform(0.2, 0.8),
                            "val/ssim": 0.5 + epoch * 0.05,
                            "val/baseline_psnr": 21.0,
                            "val/baseline_ssim": 0.45,
                            "val/loss": 0.1 / (epoch + 1),
                            "train/loss": 0.12 / (epoch + 1),
                        }
                    )
                best = max(history, key=lambda h: h["val/psnr"])
                written["val_psnr"][(model, train, str(s))] = best["val/psnr"]
                summary = {
                    "model": model,
                    "crappifier": train,
                    "data": "demo",
                    "scale": 4,
                    "seed": s,
                    "monitor": "val/psnr",
                    "best": best,
                    "gain_db": best["val/psnr"] - best["val/baseline_psnr"],
                    "baseline": "bilinear",
                    "steps": 50,
                    "epochs": EPOCHS,
                    "wall_time_s": 12.5 + num,
                    "best_checkpoint": None,
                    "last_checkpoint": None,
                    "history": history,
                    **sets,
                    "sweep": {"dir": str(sweep), "group": None, "job_num": num},
                }
                run.mkdir(parents=True)
                (run / "summary.json").write_text(json.dumps(summary, indent=2))
                (run / ".hydra").mkdir()
                (run / ".hydra" / "overrides.yaml").write_text(
                    f"- model={model}\n- crappifier={train}\n- seed={s}\n"
                )
                for epoch in range(EPOCHS):
                    _panel(run / "panels" / f"val_epoch{epoch:03d}.png", shade=10 * epoch + num)
                num += 1
    return written


def expected_means(values: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    """Group the written numbers by everything but the seed (the last key part) and average."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for key, value in values.items():
        groups.setdefault(key[:-1], []).append(value)
    return {k: statistics.fmean(v) for k, v in groups.items()}


def expected_baseline(values: dict[tuple[str, ...], float]) -> dict[tuple[str, str], float]:
    """The baseline of a (model, test) column: over all of the model's runs (every train degradation)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for (model, _train, test, _seed), value in values.items():
        groups.setdefault((model, test), []).append(value)
    return {k: statistics.fmean(v) for k, v in groups.items()}


# ----------------------------------------------------------------------------------- collection


def test_matrix_is_the_mean_over_seeds(sweep: tuple[Path, dict]) -> None:
    folder, written = sweep
    runs = collect_runs(folder)
    assert len(runs) == len(MODELS) * len(TRAIN) * len(SEEDS)
    for metric in ("psnr", "ssim"):
        table = ablation(runs, metric)
        assert table.models == list(MODELS)
        assert table.train == list(TRAIN)
        # the trained degradations first, in training order; then the other test ones; then real sets
        assert [c.key for c in table.columns] == [
            "synthetic:poisson",
            "synthetic:gaussian",
            "synthetic:none",
            "real:hagen",
        ]
        expected = expected_means(written[metric])
        assert set(table.cells) == set(expected)
        for key, mean in expected.items():
            assert table.cells[key].n == len(SEEDS)
            assert table.cells[key].mean == pytest.approx(mean, abs=1e-12)
        base = expected_baseline(written[f"base_{metric}"])
        assert set(table.baseline) == set(base)
        for key, mean in base.items():
            assert table.baseline[key].mean == pytest.approx(mean, abs=1e-12)
    spread = seed_spread(runs, "val/psnr")
    for key, mean in expected_means(written["val_psnr"]).items():
        assert spread[key].mean == pytest.approx(mean, abs=1e-12)
        values = [v for k, v in written["val_psnr"].items() if k[:-1] == key]
        assert spread[key].as_dict()["min"] == min(values)
        assert spread[key].as_dict()["max"] == max(values)
    # the gain over the baseline per seed (the fake runs' baseline is 21 dB at every epoch)
    gains = gain_spread(runs, "psnr")
    for key, mean in expected_means(written["val_psnr"]).items():
        assert gains[key].mean == pytest.approx(mean - 21.0, abs=1e-12)
    # the cross-evaluation's baseline, averaged like the model's figures: per run over test sets, then seeds
    cross_base = cross_mean_spread(runs, "baseline_psnr")
    for model in MODELS:
        for train in TRAIN:
            per_seed = [
                statistics.fmean(
                    v
                    for k, v in written["base_psnr"].items()
                    if k[:2] == (model, train) and k[3] == str(s) and k[2].startswith("synthetic")
                )
                for s in SEEDS
            ]
            assert cross_base[(model, train)].mean == pytest.approx(statistics.fmean(per_seed), abs=1e-12)


def test_collection_is_recursive_and_reads_each_run(sweep: tuple[Path, dict]) -> None:
    folder, _ = sweep
    runs = collect_runs(folder.parents[1])  # outputs/multirun: every date and time below it
    assert len(runs) == 8
    assert [r.name.split("/")[-1] for r in runs][:2] == ["0-rcan-poisson-seed0", "1-rcan-poisson-seed1"]
    assert runs[0].name == "2026-01-02/03-04-05/0-rcan-poisson-seed0"
    first = runs[0]
    assert (first.model, first.crappifier, first.seed, first.scale, first.job_num) == (
        "rcan",
        "poisson",
        0,
        4,
        0,
    )
    assert first.panel is not None and first.panel.name == f"val_epoch{EPOCHS - 1:03d}.png"
    assert first.history is not None and len(first.history) == EPOCHS
    assert first.overrides == {"model": "rcan", "crappifier": "poisson", "seed": "0"}


def test_varying_overrides_split_a_model_into_variants(sweep: tuple[Path, dict]) -> None:
    folder, _ = sweep
    (folder / "2-rcan-gaussian-seed0" / ".hydra" / "overrides.yaml").write_text(
        "- model=rcan\n- crappifier=gaussian\n- seed=0\n- loss=mse\n"
    )
    # how a sweep was launched and evaluated does not make another model
    (folder / "4-unet-poisson-seed0" / ".hydra" / "overrides.yaml").write_text(
        "- model=unet\n- crappifier=poisson\n- seed=0\n- ablation.models=[unet]\n- cross_eval.crappifiers=[none]\n"
        "- logger=csv\n"
    )
    labels = {r.name: r.group for r in collect_runs(folder)}
    assert labels["2-rcan-gaussian-seed0"] == "rcan [loss=mse]"
    assert (
        labels["0-rcan-poisson-seed0"] == "rcan [loss=–]"
    )  # rcan runs differ in loss: every label says which
    assert labels["4-unet-poisson-seed0"] == "unet"  # unet runs do not


def test_corrupt_summary_is_skipped_with_a_warning_naming_it(sweep: tuple[Path, dict]) -> None:
    folder, _ = sweep
    broken = folder / "3-rcan-gaussian-seed1" / "summary.json"
    broken.write_text(broken.read_text()[:40])  # a job killed while writing
    wrong = folder / "5-unet-poisson-seed1" / "summary.json"
    wrong.write_text(json.dumps({"model": "unet", "crappifier": "poisson", "history": {"epoch": 1}}))
    with pytest.warns(UserWarning) as caught:
        runs = collect_runs(folder)
    messages = sorted(str(w.message) for w in caught)
    assert len(runs) == 6
    assert str(broken) in messages[0] and "not valid JSON" in messages[0]
    assert str(wrong) in messages[1] and "'history' is dict" in messages[1]
    _, skipped = scan_runs(folder)
    data = report_data(runs, skipped)
    assert {s["path"] for s in data["skipped"]} == {str(broken), str(wrong)}


def test_evaluation_summaries_are_not_runs(sweep: tuple[Path, dict]) -> None:
    folder, _ = sweep
    evaluation = {"checkpoint": "x.ckpt", "model": "psr.models.rcan.RCAN", "crappifier": None, "methods": []}
    nested = (
        folder / "0-rcan-poisson-seed0" / "real_eval" / "hagen" / "summary.json"
    )  # a run's own evaluation
    nested.parent.mkdir(parents=True)
    nested.write_text(json.dumps({"whatever": 1}))
    (folder / "eval").mkdir()
    (folder / "eval" / "summary.json").write_text(json.dumps(evaluation))
    runs, skipped = scan_runs(folder)
    assert len(runs) == 8 and skipped == []
    (folder / "other").mkdir()
    (folder / "other" / "summary.json").write_text(json.dumps({"model": "rcan", "crappifier": None}))
    (folder / "8-unet-none-seed0" / ".hydra").mkdir(parents=True)  # a job killed before its summary
    runs, skipped = scan_runs(folder)
    assert len(runs) == 8
    assert [s.path for s in skipped] == [
        folder / "other" / "summary.json",
        folder / "8-unet-none-seed0" / "summary.json",
    ]
    assert skipped[1].reason == "is missing: the run is still going or stopped early"
    assert [s.reason for s in skipped[:1]] == [
        "is not a training-run summary: 'crappifier' is None; expected a name"
    ]


def test_older_summaries_without_sections_say_what_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "0-rcan-poisson-seed0"
    run.mkdir()
    (run / "summary.json").write_text(
        json.dumps(
            {
                "model": "rcan",
                "crappifier": "poisson",
                "scale": 4,
                "seed": 42,
                "best": {"epoch": 9, "val/psnr": 26.2, "val/ssim": 0.87, "val/baseline_psnr": 23.9},
                "gain_db": 2.3,
                "steps": 768,
                "epochs": 12,
                "wall_time_s": 101.7,
            }
        )
    )
    runs = collect_runs(tmp_path)
    data = report_data(runs)
    assert data["heatmap"]["psnr"]["cells"] == []
    assert data["missing"] == {
        "history": ["0-rcan-poisson-seed0"],
        "cross_eval": ["0-rcan-poisson-seed0"],
        "real_eval": ["0-rcan-poisson-seed0"],
        "panel": ["0-rcan-poisson-seed0"],
    }
    assert data["bars"]["psnr"]["val"][0]["mean"] == 26.2
    assert "psr-data" in build_report(runs)


def test_nan_values_become_null_in_the_embedded_json(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "summary.json").write_text(
        '{"model": "rcan", "crappifier": "poisson", "best": {"val/psnr": NaN}, "gain_db": NaN, "wall_time_s": 3}'
    )
    page = build_report(collect_runs(tmp_path))
    payload = re.search(r'<script type="application/json" id="psr-data">(.*?)</script>', page, re.S)
    assert payload is not None
    data = json.loads(payload.group(1))  # strict JSON: NaN would not parse in a browser
    assert data["runs"][0]["gain_db"] is None and data["runs"][0]["best"] == {}


# --------------------------------------------------------------------------------------- output


def test_report_is_self_contained(sweep: tuple[Path, dict]) -> None:
    folder, _ = sweep
    page = write_report(folder).read_text()
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    # no external resources: every src/href is a data: URI or an in-page anchor
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, re.I)
    assert all(ref.startswith(("data:", "#")) for ref in refs), refs
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", page, re.I)


def test_the_last_panel_is_embedded_and_large_ones_are_downscaled(sweep: tuple[Path, dict]) -> None:
    folder, _ = sweep
    big = folder / "0-rcan-poisson-seed0" / "panels" / "val_epoch010.png"
    _panel(big, shade=200, size=(1200, 400))
    runs = collect_runs(folder)
    rows = {r["name"]: r for r in report_data(runs, panel_size=300)["runs"]}
    uri = rows["0-rcan-poisson-seed0"]["panel"]
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.size == (300, 100)
        assert image.getpixel((5, 5)) == 200
    small = folder / "1-rcan-poisson-seed1" / "panels" / f"val_epoch{EPOCHS - 1:03d}.png"
    assert base64.b64decode(rows["1-rcan-poisson-seed1"]["panel"].split(",", 1)[1]) == small.read_bytes()


def test_write_report_is_atomic(sweep: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = sweep
    path = write_report(folder)
    assert path == folder / "report.html"
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    before = path.read_bytes()

    def fail(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(render, "build_report", fail)
    with pytest.raises(RuntimeError):
        write_report(folder)
    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["report.html"]


def test_bad_folders_raise_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist; expected a folder of runs"):
        write_report(tmp_path / "nope")
    with pytest.raises(ReportError, match="holds no readable run summary"):
        write_report(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text("{")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ReportError, match=r"1 summary.json skipped, first .*a/summary.json"),
    ):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/report.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli(sweep: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = sweep
    broken = folder / "7-unet-gaussian-seed1" / "summary.json"
    broken.write_text("{")
    out = tmp_path / "out" / "r.html"
    done = _cli(str(folder), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.is_file()
    assert f"warning: skipped {broken}: is not valid JSON" in done.stderr
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "does not exist" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = _cli(str(empty))
    assert none.returncode == 2 and none.stderr.startswith("error: ") and "no readable run" in none.stderr


# -------------------------------------------------------------------------------------- browser


class _Dom(HTMLParser):
    """The elements the test reads from the rendered page: heatmap cells, errors, curves, bars, images."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.skipped: list[str] = []
        self.missing: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.body: dict[str, str] = {}
        self._open: tuple[str, dict[str, str]] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        classes = a.get("class", "").split()
        if tag == "body":
            self.body = a
        if (tag == "td" and "cell" in classes) or {"js-error", "skipped", "missing"} & set(classes):
            self._open, self._text = (tag, a), ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._open is None or tag != self._open[0]:
            return
        attrs = self._open[1]
        classes = attrs.get("class", "").split()
        if "cell" in classes:
            self.cells.append({**attrs, "text": self._text.strip()})
        elif "js-error" in classes:
            self.errors.append(self._text)
        elif "missing" in classes:
            self.missing[attrs["data-missing"]] = self._text
        else:
            self.skipped.append(self._text)
        self._open = None


def _render(page: Path, tmp_path: Path) -> tuple[_Dom, list[str]]:
    """The DOM after the page's scripts ran, and its console errors (from Chromium's log and from the
    page's own error hook)."""
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{page.stem}"
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    dom = _Dom()
    dom.feed(done.stdout)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return dom, console + [f"page: {e}" for e in dom.errors]
