"""The sweep dashboard's page: the runs' figures as JSON, drawn offline by the page's own script.

The page is one self-contained HTML file: no external request (a Content-Security-Policy forbids them),
inline CSS and JS read from the package's ``templates/`` folder, the data embedded as
``<script type="application/json" id="psr-data">`` and the validation panels as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import warnings
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from psr.atomic import write_atomic
from psr.metrics.keys import (
    TRAIN_LOSS,
    VAL,
    VAL_BASELINE_PSNR,
    VAL_BASELINE_SSIM,
    VAL_PSNR,
    VAL_SSIM,
    metric_key,
)
from psr.reporting.aggregate import (
    METRICS,
    Cell,
    ablation,
    cross_mean_spread,
    gain_spread,
    ordered,
    seed_spread,
)
from psr.reporting.runs import ReportError, RunRecord, Skipped, scan_runs
from psr.reporting.segmentation import segmentation_rows

# The columns of a run's history that the learning curves draw.
_HISTORY_KEYS = (
    "epoch",
    "step",
    VAL_PSNR,
    VAL_SSIM,
    VAL_BASELINE_PSNR,
    VAL_BASELINE_SSIM,
    TRAIN_LOSS,
)


@cache
def template(name: str) -> str:
    """The text of ``psr/reporting/templates/<name>`` (installed with the package)."""
    return resources.files("psr.reporting").joinpath("templates", name).read_text(encoding="utf-8")


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
    panel_size: int = 1024,
    segmentation: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Everything the page draws, as plain JSON-able data (``segmentation``: the rows of
    :func:`psr.reporting.segmentation.segmentation_rows`)."""
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
        history = [{k: h[k] for k in _HISTORY_KEYS if k in h} for h in run.history or []]
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
    baselines = ordered(r.baseline for r in runs)
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
                    "val": _cells(seed_spread(runs, metric_key(VAL, m)), ("model", "train")),
                    "val_baseline": _cells(
                        seed_spread(runs, metric_key(VAL, f"baseline_{m}")),
                        ("model", "train"),
                    ),
                    "cross": _cells(cross_mean_spread(runs, m), ("model", "train")),
                    "cross_baseline": _cells(cross_mean_spread(runs, f"baseline_{m}"), ("model", "train")),
                    "gain": _cells(gain_spread(runs, m), ("model", "train")),
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
            "segmentation": list(segmentation),
        }
    )


def build_report(
    runs: Sequence[RunRecord],
    skipped: Sequence[Skipped] = (),
    title: str = "psr sweep report",
    panel_size: int = 1024,
    segmentation: Sequence[dict[str, Any]] = (),
) -> str:
    """The self-contained HTML page of ``runs`` (``skipped`` summaries are listed in a warning box)."""
    data = report_data(runs, skipped, title, panel_size, segmentation)
    # "<" escaped so that no string in the data can close the script element.
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    return (
        template("dashboard.html")
        .replace("@TITLE@", html.escape(title))
        .replace("@CSS@", template("dashboard.css"))
        .replace("@JS@", template("dashboard.js"))
        .replace("@DATA@", payload)
    )


def write_report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    panel_size: int = 1024,
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
    page = build_report(
        runs, skipped, title=f"psr sweep {shown}", panel_size=panel_size, segmentation=segmentation_rows(root)
    )
    return write_atomic(path, page)
