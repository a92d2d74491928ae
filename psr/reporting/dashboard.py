"""The sweep dashboard: every run's ``summary.json`` under a folder in, one self-contained HTML file out.

:func:`collect_runs` reads the runs, :func:`ablation` and :func:`seed_spread` aggregate them over seeds,
:func:`build_report` renders the page and :func:`write_report` writes it atomically. The page works
offline: no external request (a Content-Security-Policy forbids them), inline CSS and JS, the data embedded
as ``<script type="application/json" id="psr-data">`` and drawn by the inline script, the validation
panels embedded as ``data:`` URIs.

A summary that cannot be read (truncated JSON, wrong types, not a training run) is skipped with a warning
that names the file: the report of a sweep shows the runs that finished and lists the ones it left out.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import re
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from psr.atomic import write_atomic

METRICS = ("psnr", "ssim")
_SYNTHETIC, _REAL = "synthetic", "real"
# Overrides that define a heatmap cell (or are averaged over); any other override that varies between
# runs of the folder splits a model into variants, e.g. "rcan [loss=mse]".
_CELL_KEYS = {"model", "crappifier", "seed"}
# Overrides that say how a sweep is launched, evaluated or logged, not what is trained: they may differ
# between sweeps merged into one report without making different models.
_BOOKKEEPING = ("ablation", "cross_eval", "hydra", "logger", "paths")
_PANEL = re.compile(r"val_epoch(\d+)\.png$")


class ReportError(ValueError):
    """The folder cannot give a report (missing, or no readable run in it); one sentence naming it."""


@dataclass(frozen=True)
class Skipped:
    """A ``summary.json`` left out of the report, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class RunRecord:
    """One training run, as its ``summary.json`` describes it (absent sections are ``None``)."""

    path: Path  # the run folder
    name: str  # the run folder relative to the swept folder
    model: str
    crappifier: str
    seed: int | None
    scale: int | None
    data: str | None
    monitor: str
    baseline: str  # the interpolation the baseline figures come from
    best: dict[str, float]
    gain_db: float | None
    steps: int | None
    epochs: int | None
    wall_time_s: float | None
    history: list[dict[str, float]] | None
    cross_eval: dict[str, dict[str, float]] | None
    real_eval: dict[str, dict[str, float]] | None
    job_num: int | None
    overrides: dict[str, str] = field(default_factory=dict)
    panel: Path | None = None  # the last validation panel, panels/val_epochNNN.png
    label: str = ""  # the model as the report groups it: the model name, plus varying overrides

    @property
    def group(self) -> str:
        return self.label or self.model


@dataclass(frozen=True)
class Cell:
    """Values of one quantity over the runs (seeds) of a group."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
            "min": min(self.values),
            "max": max(self.values),
            "values": list(self.values),
        }


@dataclass(frozen=True)
class Column:
    """A test degradation of the heatmap: a ``cross_eval`` crappifier or a ``real_eval`` pair set."""

    name: str
    kind: str  # "synthetic" or "real"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Ablation:
    """Train degradation × test degradation, per model, one metric, aggregated over seeds."""

    metric: str
    models: list[str]
    train: list[str]
    columns: list[Column]
    cells: dict[tuple[str, str, str], Cell]  # (model, train crappifier, column key)
    baseline: dict[tuple[str, str], Cell]  # (model, column key): the interpolation baseline


class _NotARun(ValueError):
    """A well-formed summary of something else (an evaluation), left out without a warning."""


class _Bad(ValueError):
    """A summary with a value of the wrong type; the message names the key."""


# ---------------------------------------------------------------------------------------------- reading


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _metrics(value: Any, key: str) -> dict[str, float]:
    """A flat ``{name: number}`` object; non-numeric entries (e.g. ``null``) are dropped."""
    if not isinstance(value, dict):
        raise _Bad(f"'{key}' is {type(value).__name__}; expected an object of numbers")
    return {str(k): n for k, v in value.items() if (n := _number(v)) is not None}


def _optional_list(summary: dict[str, Any], key: str) -> list[dict[str, float]] | None:
    value = summary.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _Bad(f"'{key}' is {type(value).__name__}; expected a list of objects")
    return [_metrics(entry, f"{key}[{i}]") for i, entry in enumerate(value)]


def _optional_sets(summary: dict[str, Any], key: str) -> dict[str, dict[str, float]] | None:
    value = summary.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Bad(f"'{key}' is {type(value).__name__}; expected an object of test sets")
    return {str(name): _metrics(entry, f"{key}.{name}") for name, entry in value.items()}


def _overrides(run_dir: Path) -> dict[str, str]:
    """``key=value`` task overrides of the run from ``.hydra/overrides.yaml`` (empty when absent)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        key, sep, value = str(entry).partition("=")
        key = key.lstrip("+~")
        if sep and not key.startswith("hydra"):
            found[key] = value
    return found


def _last_panel(run_dir: Path) -> Path | None:
    panels = [
        (int(m.group(1)), p)
        for p in (run_dir / "panels").glob("val_epoch*.png")
        if (m := _PANEL.search(p.name))
    ]
    return max(panels)[1] if panels else None


def read_run(path: Path, root: Path) -> RunRecord:
    """The run whose ``summary.json`` is ``path``; ``root`` names it. Raises ``ValueError`` naming the
    problem (unreadable, not JSON, not a training-run summary, a value of the wrong type)."""
    try:
        summary = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"cannot be read ({err.strerror or err})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"is not valid JSON ({err})") from err
    if not isinstance(summary, dict):
        raise ValueError(f"holds a JSON {type(summary).__name__}; expected an object")
    if isinstance(summary.get("methods"), list) and "checkpoint" in summary:
        raise _NotARun("an evaluate.py summary")
    for key in ("model", "crappifier"):
        if not isinstance(summary.get(key), str):
            found = "missing" if key not in summary else f"{summary[key]!r}"
            raise ValueError(f"is not a training-run summary: '{key}' is {found}; expected a name")
    try:
        best = _metrics(summary.get("best") or {}, "best")
        history = _optional_list(summary, "history")
        cross_eval = _optional_sets(summary, "cross_eval")
        real_eval = _optional_sets(summary, "real_eval")
    except _Bad as err:
        raise ValueError(str(err)) from err
    raw_sweep = summary.get("sweep")
    sweep: dict[str, Any] = raw_sweep if isinstance(raw_sweep, dict) else {}
    run_dir = path.parent
    name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    return RunRecord(
        path=run_dir,
        name=name,
        model=summary["model"],
        crappifier=summary["crappifier"],
        seed=_integer(summary.get("seed")),
        scale=_integer(summary.get("scale")),
        data=summary["data"] if isinstance(summary.get("data"), str) else None,
        monitor=str(summary.get("monitor") or "val/psnr"),
        baseline=str(summary.get("baseline") or "bilinear"),
        best=best,
        gain_db=_number(summary.get("gain_db")),
        steps=_integer(summary.get("steps")),
        epochs=_integer(summary.get("epochs")),
        wall_time_s=_number(summary.get("wall_time_s")),
        history=history,
        cross_eval=cross_eval,
        real_eval=real_eval,
        job_num=_integer(sweep.get("job_num")),
        overrides=_overrides(run_dir),
        panel=_last_panel(run_dir),
    )


def _labelled(runs: list[RunRecord]) -> list[RunRecord]:
    """Give each run its group label: the model, plus the settings (scale, data, other overrides) that
    vary between runs of the same model, so that only seeds are averaged together. Overrides of how a
    sweep is run (``ablation.*``, ``cross_eval.*``, ``logger``, ``paths``, ``hydra``) do not count."""

    def settings(run: RunRecord) -> dict[str, str]:
        found = {
            k: v
            for k, v in run.overrides.items()
            if k not in _CELL_KEYS and k.split(".", 1)[0].split("/", 1)[0] not in _BOOKKEEPING
        }
        found.setdefault("scale", str(run.scale))
        found.setdefault("data", str(run.data))
        return found

    by_model: dict[str, list[dict[str, str]]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(settings(run))
    varying: dict[str, set[str]] = {}
    for model, all_settings in by_model.items():
        keys = set().union(*all_settings)
        varying[model] = {k for k in keys if len({own.get(k) for own in all_settings}) > 1}
    labelled = []
    for run in runs:
        own = settings(run)
        parts = [f"{k}={own.get(k, '–')}" for k in sorted(varying[run.model])]
        labelled.append(replace(run, label=f"{run.model} [{', '.join(parts)}]" if parts else run.model))
    return labelled


def scan_runs(sweep_dir: str | Path) -> tuple[list[RunRecord], list[Skipped]]:
    """Every ``summary.json`` under ``sweep_dir`` (recursively): the runs read, and the files skipped.

    Runs are ordered by job number, then folder. Summaries inside a run folder (its evaluations) and
    ``evaluate.py`` summaries are not runs and are left out silently; a Hydra job folder (``.hydra/``)
    without a summary is reported as skipped. Raises :class:`ReportError` when the folder is missing.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise ReportError(f"{root} {what}; expected a folder of runs (e.g. outputs/multirun/<date>/<time>)")
    found = sorted(root.rglob("summary.json"))
    folders = {p.parent for p in found}
    runs: list[RunRecord] = []
    skipped: list[Skipped] = []
    for path in found:
        # A run's own outputs (e.g. <run>/real_eval/<set>/summary.json from evaluate.py) are not runs.
        if any(parent in folders for parent in path.parent.parents):
            continue
        try:
            runs.append(read_run(path, root))
        except _NotARun:
            continue
        except ValueError as err:
            skipped.append(Skipped(path, str(err)))
    # Hydra job folders without a summary: runs still going, or stopped before the end.
    for hydra_dir in sorted(root.rglob(".hydra")):
        job = hydra_dir.parent
        if job not in folders and not any(parent in folders for parent in job.parents):
            skipped.append(
                Skipped(job / "summary.json", "is missing: the run is still going or stopped early")
            )
    runs.sort(key=lambda r: (r.job_num if r.job_num is not None else math.inf, r.name))
    return _labelled(runs), skipped


def collect_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """The runs under ``sweep_dir``; each skipped summary raises a ``UserWarning`` naming the file."""
    runs, skipped = scan_runs(sweep_dir)
    for skip in skipped:
        warnings.warn(f"skipped {skip.path}: {skip.reason}", UserWarning, stacklevel=2)
    return runs


# ------------------------------------------------------------------------------------------ aggregating


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def ablation(runs: Sequence[RunRecord], metric: str = "psnr") -> Ablation:
    """The heatmap of ``metric`` (``psnr`` or ``ssim``): per model, rows are the train crappifiers,
    columns the ``cross_eval`` test crappifiers (the trained ones first) then the ``real_eval`` sets;
    a cell holds the values of its runs (seeds). The baseline holds ``baseline_<metric>`` per column."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; expected one of {', '.join(METRICS)}")
    models = _ordered(r.group for r in runs)
    train = _ordered(r.crappifier for r in runs)
    tested = _ordered(name for r in runs for name in (r.cross_eval or {}))
    real = _ordered(name for r in runs for name in (r.real_eval or {}))
    synthetic = [t for t in train if t in tested] + [t for t in tested if t not in train]
    columns = [Column(n, _SYNTHETIC) for n in synthetic] + [Column(n, _REAL) for n in real]
    values: dict[tuple[str, str, str], list[float]] = {}
    base: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for kind, sets in ((_SYNTHETIC, run.cross_eval), (_REAL, run.real_eval)):
            for name, scores in (sets or {}).items():
                key = Column(name, kind).key
                if metric in scores:
                    values.setdefault((run.group, run.crappifier, key), []).append(scores[metric])
                if f"baseline_{metric}" in scores:
                    base.setdefault((run.group, key), []).append(scores[f"baseline_{metric}"])
    return Ablation(
        metric=metric,
        models=models,
        train=train,
        columns=columns,
        cells={k: Cell(tuple(v)) for k, v in values.items()},
        baseline={k: Cell(tuple(v)) for k, v in base.items()},
    )


def seed_spread(runs: Sequence[RunRecord], key: str) -> dict[tuple[str, str], Cell]:
    """``best[key]`` (e.g. ``val/psnr``) over the seeds of each (model, train crappifier)."""
    found: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        if key in run.best:
            found.setdefault((run.group, run.crappifier), []).append(run.best[key])
    return {k: Cell(tuple(v)) for k, v in found.items()}


def cross_mean_spread(runs: Sequence[RunRecord], metric: str) -> dict[tuple[str, str], Cell]:
    """Per (model, train crappifier), over seeds: each run's mean ``metric`` over its test crappifiers."""
    found: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        scores = [s[metric] for s in (run.cross_eval or {}).values() if metric in s]
        if scores:
            found.setdefault((run.group, run.crappifier), []).append(statistics.fmean(scores))
    return {k: Cell(tuple(v)) for k, v in found.items()}


# ------------------------------------------------------------------------------------------- rendering


def _panel_uri(path: Path, max_side: int) -> str:
    """``path`` as a ``data:`` URI; downscaled to ``max_side`` pixels and re-encoded when larger."""
    from PIL import Image

    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        if max(image.size) <= max_side and len(raw) <= 200_000:
            return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
        if buffer.tell() > 200_000:  # photographic panels: JPEG is far smaller
            buffer = io.BytesIO()
            image.convert("L" if image.mode in ("L", "I", "I;16", "F") else "RGB").save(
                buffer, format="JPEG", quality=85
            )
            mime = "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cells(table: dict[Any, Cell], names: Sequence[str]) -> list[dict[str, Any]]:
    return [{**dict(zip(names, key, strict=True)), **cell.as_dict()} for key, cell in table.items()]


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities (which ``JSON.parse`` rejects) become ``null``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def report_data(
    runs: Sequence[RunRecord],
    skipped: Sequence[Skipped] = (),
    title: str = "",
    panel_size: int = 512,
) -> dict[str, Any]:
    """Everything the page draws, as plain JSON-able data."""
    runs = list(runs)
    tables = {m: ablation(runs, m) for m in METRICS}
    first = tables["psnr"]
    notes: list[str] = []
    rows = []
    for run in runs:
        panel = None
        if run.panel is not None:
            try:
                panel = _panel_uri(run.panel, panel_size)
            except (OSError, ValueError) as err:
                notes.append(f"{run.panel}: could not embed the panel ({err})")
        history = [
            {k: h[k] for k in ("epoch", "step", "val/psnr", "val/ssim", "train/loss") if k in h}
            for h in run.history or []
        ]
        rows.append(
            {
                "name": run.name,
                "label": run.group,
                "model": run.model,
                "crappifier": run.crappifier,
                "seed": run.seed,
                "scale": run.scale,
                "data": run.data,
                "baseline": run.baseline,
                "best": run.best,
                "gain_db": run.gain_db,
                "steps": run.steps,
                "epochs": run.epochs,
                "wall_time_s": run.wall_time_s,
                "history": history if run.history is not None else None,
                "has_cross_eval": run.cross_eval is not None,
                "has_real_eval": run.real_eval is not None,
                "panel": panel,
                "panel_name": run.panel.name if run.panel is not None else None,
            }
        )
    baselines = _ordered(r.baseline for r in runs)
    return _clean(
        {
            "title": title,
            "generated": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "models": first.models,
            "train": first.train,
            "columns": [{"key": c.key, "name": c.name, "kind": c.kind} for c in first.columns],
            "baseline": " / ".join(baselines) or "bilinear",
            "heatmap": {
                m: {
                    "cells": _cells(t.cells, ("model", "train", "test")),
                    "baseline": _cells(t.baseline, ("model", "test")),
                }
                for m, t in tables.items()
            },
            "bars": {
                m: {
                    "val": _cells(seed_spread(runs, f"val/{m}"), ("model", "train")),
                    "val_baseline": _cells(
                        seed_spread(runs, f"val/baseline_{m}"),
                        ("model", "train"),
                    ),
                    "cross": _cells(cross_mean_spread(runs, m), ("model", "train")),
                }
                for m in METRICS
            },
            "runs": rows,
            "missing": {
                "history": [r.name for r in runs if r.history is None],
                # absent (older summaries) or empty (evaluation switched off): nothing to draw either way
                "cross_eval": [r.name for r in runs if not r.cross_eval],
                "real_eval": [r.name for r in runs if not r.real_eval],
                "panel": [r.name for r in runs if r.panel is None],
            },
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped],
            "notes": notes,
        }
    )


def build_report(
    runs: Sequence[RunRecord],
    skipped: Sequence[Skipped] = (),
    title: str = "psr sweep report",
    panel_size: int = 512,
) -> str:
    """The self-contained HTML page of ``runs`` (``skipped`` summaries are listed in a warning box)."""
    data = report_data(runs, skipped, title, panel_size)
    # "<" escaped so that no string in the data can close the script element.
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    return (
        _TEMPLATE.replace("@TITLE@", html.escape(title))
        .replace("@CSS@", _CSS)
        .replace("@JS@", _JS)
        .replace("@DATA@", payload)
    )


def write_report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    panel_size: int = 512,
) -> Path:
    """Write the report of the runs under ``sweep_dir`` to ``out`` (default ``<sweep_dir>/report.html``;
    a folder gets ``report.html`` inside), under a temporary name renamed when complete.

    Skipped summaries raise a ``UserWarning`` each and are listed in the page. Raises
    :class:`ReportError` when the folder is missing or holds no readable run.
    """
    root = Path(sweep_dir)
    runs, skipped = scan_runs(root)
    for skip in skipped:
        warnings.warn(f"skipped {skip.path}: {skip.reason}", UserWarning, stacklevel=2)
    if not runs:
        detail = (
            f"; {len(skipped)} summary.json skipped, first {skipped[0].path}: {skipped[0].reason}"
            if skipped
            else ""
        )
        raise ReportError(f"{root} holds no readable run summary (*/summary.json){detail}")
    path = Path(out) if out is not None else root / "report.html"
    if path.is_dir():
        path = path / "report.html"
    shown = root.resolve().name if root.is_absolute() or root == Path(".") else root.as_posix()
    page = build_report(runs, skipped, title=f"psr sweep {shown}", panel_size=panel_size)
    return write_atomic(path, page)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>@CSS@</style>
</head>
<body data-metric="psnr">
<script>
// Before anything else: errors of the page are shown in it (and visible to a headless --dump-dom).
(function () {
  function record(message) {
    var box = document.getElementById("psr-errors");
    if (!box) { box = document.createElement("div"); box.id = "psr-errors"; document.body.prepend(box); }
    var line = document.createElement("pre");
    line.className = "js-error";
    line.textContent = message;
    box.appendChild(line);
  }
  window.psrRecordError = record;
  window.addEventListener("error", function (e) {
    record("Uncaught " + (e.message || "error") + " (" + (e.filename || "") + ":" + (e.lineno || 0) + ")");
  });
  window.addEventListener("unhandledrejection", function (e) { record("Unhandled rejection: " + e.reason); });
})();
</script>
<header>
<h1>@TITLE@</h1>
<p id="psr-summary" class="muted"></p>
<div id="psr-controls" class="controls"></div>
</header>
<noscript><p class="warn">This report draws its figures with JavaScript; enable it to see them.</p></noscript>
<main id="psr-main"></main>
<script type="application/json" id="psr-data">@DATA@</script>
<script>@JS@</script>
</body>
</html>
"""

_CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #fff; --accent: #3b5bdb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; padding: 16px 24px 48px; max-width: 1280px; }
h1 { font-size: 22px; margin: 4px 0; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
.muted, .note { color: var(--muted); }
.note { font-size: 12.5px; margin: 4px 0; }
.warn { background: #fff4e5; border: 1px solid #f5b971; border-radius: 6px; padding: 8px 12px; }
.warn li { font-family: ui-monospace, monospace; font-size: 12px; }
#psr-errors { background: #fdecec; border: 1px solid #e5484d; padding: 8px; }
.controls { display: flex; gap: 18px; flex-wrap: wrap; align-items: center; margin: 10px 0; }
.controls label { cursor: pointer; }
.controls fieldset { border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; margin: 0; }
.controls legend { font-size: 11px; color: var(--muted); padding: 0 4px; }
body[data-metric="psnr"] .metric-view[data-metric="ssim"],
body[data-metric="ssim"] .metric-view[data-metric="psnr"] { display: none; }
.heatmaps { display: flex; flex-wrap: wrap; gap: 28px; }
table.heatmap { border-collapse: separate; border-spacing: 2px; }
table.heatmap th { font-weight: 600; font-size: 12px; padding: 2px 6px; }
table.heatmap thead th { vertical-align: bottom; }
table.heatmap th.row { text-align: right; }
table.heatmap th.real { font-style: italic; }
td.cell { min-width: 66px; height: 38px; text-align: center; font-variant-numeric: tabular-nums;
  font-weight: 600; border-radius: 3px; }
td.cell.diag { outline: 2px solid #111; outline-offset: -2px; }
td.cell.empty { background: #f2f4f7; color: var(--muted); font-weight: 400; }
tr.baseline-row th { color: var(--muted); font-style: italic; }
tr.baseline-row td.cell { border-top: 3px double #fff; }
.legend { display: flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); margin: 6px 0; }
.legend .ramp { width: 220px; height: 12px; border-radius: 2px; }
.charts { display: flex; flex-wrap: wrap; gap: 22px; }
.chart { border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px; }
.chart h3 { margin: 2px 0 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #344054; }
svg .axis line, svg .axis path { stroke: #98a2b3; }
svg .grid line { stroke: #eaecf0; }
.keys { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin: 4px 0; }
.keys svg.swatch-line { vertical-align: middle; }
.panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; }
.panels figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
.panels img { width: 100%; image-rendering: pixelated; display: block; }
.panels figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
table.runs { border-collapse: collapse; width: 100%; font-size: 12.5px; }
table.runs th, table.runs td { border-bottom: 1px solid #eaecf0; padding: 4px 6px; text-align: left; }
table.runs td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.runs th { cursor: pointer; user-select: none; background: #f9fafb; position: sticky; top: 0; }
table.runs th.sorted-asc::after { content: " \\25B2"; font-size: 9px; }
table.runs th.sorted-desc::after { content: " \\25BC"; font-size: 9px; }
.runs-wrap { max-height: 520px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
"""

_JS = r"""
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var D = JSON.parse(document.getElementById("psr-data").textContent);
  var main = document.getElementById("psr-main");
  var METRIC = { psnr: { label: "PSNR", unit: " dB", digits: 2 }, ssim: { label: "SSIM", unit: "", digits: 3 } };
  var PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#a61e4d", "#5c940d",
                 "#862e9c", "#d9480f"];
  var DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2"];

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    setAll(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, children) {
    var el = document.createElementNS(SVGNS, tag);
    setAll(el, attrs);
    append(el, children);
    return el;
  }
  function setAll(el, attrs) {
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") el.textContent = String(v);
      else if (k === "on") Object.keys(v).forEach(function (e) { el.addEventListener(e, v[e]); });
      else el.setAttribute(k, String(v));
    });
  }
  function append(el, children) {
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
  }
  function fmt(v, digits) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(digits); }
  function byKey(list, keys) {
    var map = {};
    list.forEach(function (item) { map[keys.map(function (k) { return item[k]; }).join("\u0001")] = item; });
    return function () { return map[Array.prototype.join.call(arguments, "\u0001")]; };
  }
  function colorOf(name) { var i = D.train.indexOf(name); return PALETTE[(i < 0 ? 0 : i) % PALETTE.length]; }

  // Colour ramps: sequential (viridis-like) for values, diverging (blue-white-red) for gains.
  var SEQ = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  var DIV = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, isFinite(t) ? t : 0.5)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), f = t - i;
    var c = stops[i].map(function (a, j) { return Math.round(a + f * (stops[i + 1][j] - a)); });
    return c;
  }
  function css(c) { return "rgb(" + c.join(",") + ")"; }
  function ink(c) { return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) > 140 ? "#111" : "#fff"; }
  function gradient(stops) {
    return "linear-gradient(to right," + stops.map(css).join(",") + ")";
  }

  var state = { metric: "psnr", colour: "value", model: "all" };

  // ------------------------------------------------------------------ header and controls
  var runs = D.runs;
  function distinct(key) {
    return runs.map(function (r) { return r[key]; }).filter(function (v, i, a) { return a.indexOf(v) === i; });
  }
  document.getElementById("psr-summary").textContent =
    runs.length + " runs · models: " + D.models.join(", ") + " · train degradations: " + D.train.join(", ") +
    " · seeds: " + distinct("seed").join(", ") + " · generated " + D.generated;

  function radio(group, value, label, checked, onchange) {
    var input = h("input", { type: "radio", name: group, value: value, checked: checked ? "checked" : null,
                             on: { change: onchange } });
    return h("label", {}, [input, " " + label]);
  }
  var controls = document.getElementById("psr-controls");
  controls.appendChild(h("fieldset", {}, [h("legend", { text: "metric" }),
    radio("metric", "psnr", "PSNR", true, function () { setMetric("psnr"); }), " ",
    radio("metric", "ssim", "SSIM", false, function () { setMetric("ssim"); })]));
  controls.appendChild(h("fieldset", {}, [h("legend", { text: "heatmap colour" }),
    radio("colour", "value", "value", true, function () { state.colour = "value"; paintHeatmaps(); }), " ",
    radio("colour", "gain", "gain over " + D.baseline, false, function () { state.colour = "gain"; paintHeatmaps(); })]));
  var select = h("select", { id: "psr-model", on: { change: function (e) { state.model = e.target.value; filterModels(); } } },
    [h("option", { value: "all", text: "all models" })].concat(D.models.map(function (m) {
      return h("option", { value: m, text: m });
    })));
  controls.appendChild(h("fieldset", {}, [h("legend", { text: "model" }), select]));
  function setMetric(m) { state.metric = m; document.body.setAttribute("data-metric", m); }
  function filterModels() {
    document.querySelectorAll("[data-model-block]").forEach(function (el) {
      el.hidden = state.model !== "all" && el.getAttribute("data-model-block") !== state.model;
    });
  }

  function section(id, title, intro) {
    var sec = h("section", { id: id }, [h("h2", { text: title })]);
    if (intro) sec.appendChild(h("p", { class: "note", text: intro }));
    main.appendChild(sec);
    return sec;
  }
  function missingNote(parent, key, what) {
    var names = D.missing[key];
    if (!names.length) return;
    var all = names.length === runs.length;
    parent.appendChild(h("p", { class: "note missing", "data-missing": key,
      text: (all ? "No run has " : names.length + " of " + runs.length + " runs have no ") + what +
            (all ? "." : ": " + names.join(", ") + ".") }));
  }

  if (D.skipped.length) {
    var box = h("div", { class: "warn", id: "psr-skipped" }, [h("strong", {
      text: D.skipped.length + " run(s) left out of this report (summary.json unreadable or missing):" })]);
    box.appendChild(h("ul", {}, D.skipped.map(function (sk) {
      return h("li", { class: "skipped", text: sk.path + ": " + sk.reason });
    })));
    main.appendChild(box);
  }
  if (D.notes.length) {
    main.appendChild(h("div", { class: "warn" }, [h("ul", {}, D.notes.map(function (n) { return h("li", { text: n }); }))]));
  }

  // ------------------------------------------------------------------ heatmaps
  var heatSec = section("ablation", "Degradation ablation: train × test",
    "Rows: the degradation a model was trained on; columns: the degradation it was tested on (cross-evaluation) " +
    "and real image pairs (italic). Each cell is the mean over seeds; hover for the spread. The diagonal is " +
    "outlined; the last row is the " + D.baseline + " baseline on the same test images.");
  missingNote(heatSec, "cross_eval", "cross-evaluation results (cross_eval in summary.json; train with " +
    "cross_eval.crappifiers=[...] or experiment=degradation_ablation)");
  missingNote(heatSec, "real_eval", "real-pair results (real_eval in summary.json; train with cross_eval.real_pairs=[...])");
  var heatCells = [];
  ["psnr", "ssim"].forEach(function (metric) {
    var M = METRIC[metric], HM = D.heatmap[metric];
    var view = h("div", { class: "metric-view", "data-metric": metric });
    if (!D.columns.length || !HM.cells.length) {
      view.appendChild(h("p", { class: "note", text: "No " + M.label + " heatmap: no run of this folder has cross_eval or real_eval results." }));
      heatSec.appendChild(view);
      return;
    }
    var cellOf = byKey(HM.cells, ["model", "train", "test"]);
    var baseOf = byKey(HM.baseline, ["model", "test"]);
    var legend = h("div", { class: "legend", "data-legend": metric });
    view.appendChild(legend);
    var wrap = h("div", { class: "heatmaps" });
    D.models.forEach(function (model) {
      var table = h("table", { class: "heatmap", "data-model": model, "data-metric": metric });
      var head = h("tr", {}, [h("th", { class: "row", text: "train ↓  test →" })]);
      D.columns.forEach(function (c) {
        head.appendChild(h("th", { class: c.kind === "real" ? "real" : null, text: c.name,
                                   title: c.kind === "real" ? "real image pairs" : "synthetic degradation" }));
      });
      table.appendChild(h("thead", {}, [head]));
      var body = h("tbody");
      function addCell(tr, cell, base, train, c, isBase) {
        var td = h("td", { class: "cell" + (isBase ? " baseline" : ""), "data-model": model,
                           "data-train": isBase ? D.baseline : train, "data-test": c.name, "data-kind": c.kind,
                           "data-metric": metric, "data-role": isBase ? "baseline" : "model" });
        if (!cell) {
          td.classList.add("empty");
          td.setAttribute("data-value", "");
          td.textContent = "–";
          td.title = "no result";
        } else {
          td.setAttribute("data-value", String(cell.mean));
          td.setAttribute("data-n", String(cell.n));
          td.textContent = fmt(cell.mean, M.digits);
          var tip = (isBase ? D.baseline + " baseline" : model + " trained on " + train) + ", tested on " + c.name +
            ": " + M.label + " " + fmt(cell.mean, M.digits) + M.unit + " ± " + fmt(cell.std, M.digits) +
            " (n=" + cell.n + ": " + cell.values.map(function (v) { return fmt(v, M.digits); }).join(", ") + ")";
          if (!isBase && base) tip += "; gain " + (cell.mean - base.mean >= 0 ? "+" : "") + fmt(cell.mean - base.mean, M.digits);
          td.title = tip;
          heatCells.push({ td: td, metric: metric, value: cell.mean, gain: base ? cell.mean - base.mean : (isBase ? 0 : null) });
        }
        if (!isBase && train === c.name && c.kind === "synthetic") td.classList.add("diag");
        tr.appendChild(td);
      }
      D.train.forEach(function (train) {
        var tr = h("tr", {}, [h("th", { class: "row", text: train })]);
        D.columns.forEach(function (c) { addCell(tr, cellOf(model, train, c.key), baseOf(model, c.key), train, c, false); });
        body.appendChild(tr);
      });
      var btr = h("tr", { class: "baseline-row" }, [h("th", { class: "row", text: D.baseline + " (no training)" })]);
      D.columns.forEach(function (c) { addCell(btr, baseOf(model, c.key), null, null, c, true); });
      body.appendChild(btr);
      table.appendChild(body);
      wrap.appendChild(h("div", { "data-model-block": model }, [h("h3", { text: model + " · " + M.label }), table]));
    });
    view.appendChild(wrap);
    heatSec.appendChild(view);
  });
  function paintHeatmaps() {
    ["psnr", "ssim"].forEach(function (metric) {
      var mine = heatCells.filter(function (c) { return c.metric === metric; });
      var legend = document.querySelector('[data-legend="' + metric + '"]');
      if (!mine.length || !legend) return;
      var gain = state.colour === "gain";
      var vals = mine.map(function (c) { return gain ? c.gain : c.value; }).filter(function (v) { return v !== null; });
      if (!vals.length) vals = [0, 1];  // nothing to colour by (no baseline figures for gains)
      var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
      if (gain) { hi = Math.max(Math.abs(lo), Math.abs(hi)) || 1; lo = -hi; }
      var stops = gain ? DIV : SEQ;
      mine.forEach(function (c) {
        var v = gain ? c.gain : c.value;
        if (v === null) { c.td.style.background = "#f2f4f7"; c.td.style.color = "#667085"; return; }
        var col = ramp(stops, hi > lo ? (v - lo) / (hi - lo) : 0.5);
        c.td.style.background = css(col);
        c.td.style.color = ink(col);
      });
      var M = METRIC[metric];
      legend.textContent = "";
      append(legend, [gain ? "gain over " + D.baseline + " " : M.label + " ", h("span", { text: fmt(lo, M.digits) }),
        h("span", { class: "ramp", style: "background:" + gradient(stops) }), h("span", { text: fmt(hi, M.digits) + M.unit }),
        " (one colour scale for all models)"]);
    });
  }
  paintHeatmaps();

  // ------------------------------------------------------------------ axes helpers
  function ticks(lo, hi, count) {
    if (!(hi > lo)) { var pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
    var raw = (hi - lo) / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (st) { return st >= raw; });
    var start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step, out = [];
    for (var v = start; v <= end + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
    return { lo: start, hi: end, ticks: out, step: step };
  }
  function tickLabel(v, step) { var d = Math.max(0, -Math.floor(Math.log10(step) + 1e-9)); return v.toFixed(Math.min(d, 4)); }
  function frame(W, H, m, yr, ylabel) {
    var svg = s("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    var y = function (v) { return m.t + (H - m.t - m.b) * (1 - (v - yr.lo) / (yr.hi - yr.lo)); };
    var grid = s("g", { class: "grid" }), axis = s("g", { class: "axis" });
    yr.ticks.forEach(function (t) {
      grid.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t) }));
      axis.appendChild(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", text: tickLabel(t, yr.step) }));
    });
    axis.appendChild(s("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    axis.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    axis.appendChild(s("text", { x: 12, y: m.t + (H - m.t - m.b) / 2, "text-anchor": "middle",
      transform: "rotate(-90 12 " + (m.t + (H - m.t - m.b) / 2) + ")", text: ylabel }));
    svg.appendChild(grid);
    svg.appendChild(axis);
    return { svg: svg, y: y };
  }
  function keyRow(items) {
    return h("div", { class: "keys" }, items.map(function (it) {
      var mark = s("svg", { width: 22, height: 8, class: "swatch-line" }, [s("line", { x1: 0, x2: 22, y1: 4, y2: 4,
        stroke: it.color, "stroke-width": 2.5, "stroke-dasharray": it.dash || null })]);
      return h("span", {}, [mark, " " + it.label]);
    }));
  }

  // ------------------------------------------------------------------ bars
  var barSec = section("bars", "Models over seeds",
    "Bar: mean over seeds; whisker: min–max over seeds; dots: the seeds. Grey tick: the " + D.baseline +
    " baseline on the same images. Grouped by training degradation, one colour per model.");
  function barChart(metric, list, baseList, title, ylabel) {
    var M = METRIC[metric];
    if (!list.length) return h("p", { class: "note", text: title + ": no data." });
    var at = byKey(list, ["model", "train"]), baseAt = byKey(baseList || [], ["model", "train"]);
    var lows = [], highs = [];
    list.concat(baseList || []).forEach(function (c) { lows.push(c.min); highs.push(c.max); });
    var span = Math.max.apply(null, highs) - Math.min.apply(null, lows);
    var yr = ticks(Math.min.apply(null, lows) - span * 0.15, Math.max.apply(null, highs) + span * 0.05, 5);
    var groups = D.train.filter(function (t) { return D.models.some(function (m) { return at(m, t); }); });
    var bw = 22, gap = 8, gw = D.models.length * (bw + 4) + gap * 2;
    var m = { l: 52, r: 10, t: 10, b: 44 }, W = Math.max(260, m.l + m.r + groups.length * gw), H = 250;
    var F = frame(W, H, m, yr, M.label + M.unit), svg = F.svg;
    var palette = function (model) { return PALETTE[D.models.indexOf(model) % PALETTE.length]; };
    groups.forEach(function (train, gi) {
      var gx = m.l + gi * gw + gap;
      svg.appendChild(s("text", { x: gx + gw / 2 - gap, y: H - m.b + 16, "text-anchor": "middle", text: train }));
      D.models.forEach(function (model, mi) {
        var c = at(model, train); if (!c) return;
        var x = gx + mi * (bw + 4), g = s("g", { class: "bar", "data-model": model, "data-train": train,
          "data-metric": metric, "data-value": c.mean });
        g.appendChild(s("rect", { x: x, y: F.y(c.mean), width: bw, height: Math.max(0, F.y(yr.lo) - F.y(c.mean)),
          fill: palette(model), opacity: 0.8 }, [s("title", { text: model + " on " + train + ": " + fmt(c.mean, M.digits) +
          M.unit + " (n=" + c.n + ", min " + fmt(c.min, M.digits) + ", max " + fmt(c.max, M.digits) + ")" })]));
        g.appendChild(s("line", { x1: x + bw / 2, x2: x + bw / 2, y1: F.y(c.min), y2: F.y(c.max), stroke: "#111", "stroke-width": 1.5 }));
        [c.min, c.max].forEach(function (v) {
          g.appendChild(s("line", { x1: x + bw / 2 - 5, x2: x + bw / 2 + 5, y1: F.y(v), y2: F.y(v), stroke: "#111", "stroke-width": 1.5 }));
        });
        c.values.forEach(function (v) { g.appendChild(s("circle", { cx: x + bw / 2, cy: F.y(v), r: 2.5, fill: "#fff", stroke: "#111" })); });
        var b = baseAt(model, train);
        if (b) {
          g.appendChild(s("line", { x1: x - 3, x2: x + bw + 3, y1: F.y(b.mean), y2: F.y(b.mean), stroke: "#fff", "stroke-width": 5 }));
          g.appendChild(s("line", { class: "baseline-tick", x1: x - 3, x2: x + bw + 3, y1: F.y(b.mean), y2: F.y(b.mean),
            stroke: "#495057", "stroke-width": 2.5 }, [s("title", { text: D.baseline + " baseline: " + fmt(b.mean, M.digits) + M.unit })]));
        }
        svg.appendChild(g);
      });
    });
    var chart = h("div", { class: "chart" }, [h("h3", { text: title }), svg]);
    chart.appendChild(keyRow(D.models.map(function (model) { return { label: model, color: palette(model) }; })));
    return chart;
  }
  ["psnr", "ssim"].forEach(function (metric) {
    var B = D.bars[metric], M = METRIC[metric];
    var view = h("div", { class: "metric-view charts", "data-metric": metric });
    view.appendChild(barChart(metric, B.val, B.val_baseline, "Best validation " + M.label + " (own degradation)"));
    if (B.cross.length) view.appendChild(barChart(metric, B.cross, null, "Cross-evaluation " + M.label + ", mean over test degradations"));
    barSec.appendChild(view);
  });

  // ------------------------------------------------------------------ learning curves
  var curveSec = section("curves", "Learning curves",
    "Validation metric per epoch, one line per run: colour = training degradation, dash = seed; the dot marks the best epoch.");
  missingNote(curveSec, "history", "learning curves (history in summary.json)");
  var seeds = distinct("seed");
  function curveChart(model, key, title, ylabel, bestKey) {
    var mine = runs.filter(function (r) { return r.label === model && r.history && r.history.some(function (p) { return p[key] !== undefined; }); });
    if (!mine.length) return null;
    var xs = [], ys = [];
    mine.forEach(function (r) { r.history.forEach(function (p) { if (p[key] !== undefined) { xs.push(p.epoch); ys.push(p[key]); } }); });
    var yr = ticks(Math.min.apply(null, ys), Math.max.apply(null, ys), 5);
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs); if (x1 === x0) x1 = x0 + 1;
    var m = { l: 52, r: 12, t: 10, b: 34 }, W = 420, H = 240;
    var F = frame(W, H, m, yr, ylabel), svg = F.svg;
    var x = function (v) { return m.l + (W - m.l - m.r) * (v - x0) / (x1 - x0); };
    var xt = ticks(x0, x1, 6);
    xt.ticks.filter(function (t) { return t >= x0 && t <= x1 && Math.abs(t - Math.round(t)) < 1e-9; }).forEach(function (t) {
      svg.appendChild(s("text", { x: x(t), y: H - m.b + 14, "text-anchor": "middle", text: String(t) }));
    });
    svg.appendChild(s("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle", text: "epoch" }));
    mine.forEach(function (r) {
      var pts = r.history.filter(function (p) { return p[key] !== undefined; });
      var color = colorOf(r.crappifier), dash = DASHES[Math.max(0, seeds.indexOf(r.seed)) % DASHES.length];
      svg.appendChild(s("polyline", { class: "curve", "data-run": r.name, "data-key": key, fill: "none", stroke: color,
        "stroke-width": 1.6, "stroke-dasharray": dash || null,
        points: pts.map(function (p) { return x(p.epoch).toFixed(1) + "," + F.y(p[key]).toFixed(1); }).join(" ") },
        [s("title", { text: r.name + " (" + r.crappifier + ", seed " + r.seed + ")" })]));
      if (bestKey && r.best && r.best.epoch !== undefined && r.best[key] !== undefined) {
        svg.appendChild(s("circle", { cx: x(r.best.epoch), cy: F.y(r.best[key]), r: 3.2, fill: color },
          [s("title", { text: r.name + ": best " + fmt(r.best[key], 3) + " at epoch " + r.best.epoch })]));
      }
    });
    return h("div", { class: "chart" }, [h("h3", { text: model + " · " + title }), svg]);
  }
  var crapKeys = keyRow(D.train.map(function (t) { return { label: "trained on " + t, color: colorOf(t) }; })
    .concat(seeds.map(function (sd, i) { return { label: "seed " + sd, color: "#444", dash: DASHES[i % DASHES.length] }; })));
  curveSec.appendChild(crapKeys);
  var anyCurve = false;
  ["psnr", "ssim"].forEach(function (metric) {
    var view = h("div", { class: "metric-view", "data-metric": metric });
    D.models.forEach(function (model) {
      var row = h("div", { class: "charts", "data-model-block": model });
      var a = curveChart(model, "val/" + metric, "val/" + metric, METRIC[metric].label + METRIC[metric].unit, true);
      var b = curveChart(model, "train/loss", "train/loss", "train loss", false);
      if (a) row.appendChild(a);
      if (b) row.appendChild(b);
      if (a || b) { view.appendChild(row); anyCurve = true; }
    });
    curveSec.appendChild(view);
  });
  if (!anyCurve) curveSec.appendChild(h("p", { class: "note", text: "No learning curves to draw." }));

  // ------------------------------------------------------------------ panels
  var panelSec = section("panels", "Validation panels (last epoch)", "Each panel: input (nearest) | prediction | target.");
  missingNote(panelSec, "panel", "validation panels (panels/val_epoch*.png)");
  var grid = h("div", { class: "panels" });
  runs.forEach(function (r) {
    if (!r.panel) return;
    grid.appendChild(h("figure", { "data-model-block": r.label }, [
      h("img", { src: r.panel, alt: r.name + " " + r.panel_name, loading: "lazy" }),
      h("figcaption", { text: r.label + " · " + r.crappifier + " · seed " + r.seed + " · " + r.panel_name })]));
  });
  panelSec.appendChild(grid);

  // ------------------------------------------------------------------ runs table
  var tableSec = section("runs", "Runs", "Click a column to sort. Best = the epoch with the best monitored metric.");
  var cols = [
    ["run", function (r) { return r.name; }, null], ["model", function (r) { return r.label; }, null],
    ["train degradation", function (r) { return r.crappifier; }, null], ["seed", function (r) { return r.seed; }, 0],
    ["scale", function (r) { return r.scale; }, 0], ["best epoch", function (r) { return r.best.epoch; }, 0],
    ["val PSNR", function (r) { return r.best["val/psnr"]; }, 2], ["val SSIM", function (r) { return r.best["val/ssim"]; }, 3],
    [D.baseline + " PSNR", function (r) { return r.best["val/baseline_psnr"]; }, 2],
    [D.baseline + " SSIM", function (r) { return r.best["val/baseline_ssim"]; }, 3],
    ["gain (dB)", function (r) { return r.gain_db; }, 2], ["steps", function (r) { return r.steps; }, 0],
    ["epochs", function (r) { return r.epochs; }, 0], ["wall time (s)", function (r) { return r.wall_time_s; }, 1]
  ];
  var tbody = h("tbody"), sortState = { col: -1, dir: 1 };
  var headRow = h("tr", {}, cols.map(function (c, i) {
    return h("th", { text: c[0], on: { click: function () { sortBy(i); } } });
  }));
  function fill(list) {
    tbody.textContent = "";
    list.forEach(function (r) {
      tbody.appendChild(h("tr", { "data-run": r.name, "data-model-block": r.label }, cols.map(function (c) {
        var v = c[1](r);
        var num = c[2] !== null;
        return h("td", { class: num ? "num" : null, text: num ? (v === null || v === undefined ? "–" : Number(v).toFixed(c[2])) : (v === null || v === undefined ? "–" : String(v)) });
      })));
    });
    filterModels();
  }
  function sortBy(i) {
    sortState.dir = sortState.col === i ? -sortState.dir : 1;
    sortState.col = i;
    var get = cols[i][1];
    fill(runs.slice().sort(function (a, b) {
      var x = get(a), y = get(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortState.dir;
    }));
    headRow.querySelectorAll("th").forEach(function (th, j) {
      th.className = j === i ? (sortState.dir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
  }
  tableSec.appendChild(h("div", { class: "runs-wrap" }, [h("table", { class: "runs" }, [h("thead", {}, [headRow]), tbody])]));
  fill(runs);
  document.body.setAttribute("data-rendered", "true");
})();
"""
