"""The outputs of ``evaluate.py``: ``metrics.csv`` (one row per image and method), the per-method means and
the Markdown table printed at the end, one PNG figure per image, and the W&B tables."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from psr.metrics.frc import checkerboard_frc, frc_curve
from psr.reporting.evaluation import Curve, Panel, evaluation_figure, markdown_table
from psr.tasks.eval_baselines import gaussian_label
from psr.tasks.eval_data import EvalItem

MODEL = "model"
TABLE_COLUMNS = (
    ("method", "method", ""),
    ("n", "images", "d"),
    ("psnr", "PSNR (dB)", ".2f"),
    ("ssim", "SSIM", ".3f"),
    ("ms_ssim", "MS-SSIM", ".3f"),
    ("nrmse", "NRMSE", ".4f"),
    ("frc_1_7_px", "FRC 1/7 (px)", ".2f"),
    ("frc_half_bit_px", "FRC ½-bit (px)", ".2f"),
    ("frc1_1_7_px", "1-image FRC 1/7 (px)", ".2f"),
    ("frc1_half_bit_px", "1-image FRC ½-bit (px)", ".2f"),
)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "image"


def _view(x: torch.Tensor) -> np.ndarray:
    """A 2D view ``(Y, X)`` of ``(C, *S)``: channel 0, the middle Z plane of a volume."""
    x = x[0]
    while x.dim() > 2:
        x = x[x.shape[0] // 2]
    return x.float().numpy()


def write_figure(
    path: Path,
    item: EvalItem,
    methods: list[str],
    fitted: torch.Tensor,
    gt: torch.Tensor,
    scores: dict[str, dict[str, float]],
    scale: int,
    window: Any,
    inset_fraction: float,
    labels: dict[str, str] | None = None,
) -> None:
    truth = _view(gt[0])
    titles = {"identity": "input (identity)", "nearest": "input (nearest)", **(labels or {})}
    panels = []
    for i, method in enumerate(methods):
        s = scores[method]
        title = titles.get(method, method)
        panels.append(
            Panel(
                f"{title}\nPSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}",
                _view(fitted[i]),
                np.abs(_view(fitted[i]) - truth),
            )
        )
    # The input first, the model last before the ground truth.
    order = [i for i, m in enumerate(methods) if m != MODEL] + [methods.index(MODEL)]
    panels = [panels[i] for i in order] + [Panel("ground truth", truth)]

    def plane(t: torch.Tensor) -> torch.Tensor:  # the first channel / Z plane, as (1, Y, X)
        return t.reshape(-1, *t.shape[-2:])[:1]

    curves = []
    for i in order:
        curve = frc_curve(plane(fitted[i]), plane(gt[0]), window=window)
        curves.append(Curve(methods[i], curve.frequency.numpy(), curve.correlation[0].numpy()))
    single = checkerboard_frc(plane(fitted[methods.index(MODEL)]), window=window)
    curves.append(Curve("model (1-image)", single.frequency.numpy(), single.correlation[0].numpy()))
    last = frc_curve(plane(gt[0]), plane(gt[0]), window=window)
    thresholds = [
        ("1/7", last.frequency.numpy(), last.threshold("1/7").numpy()),
        ("½-bit", last.frequency.numpy(), last.threshold("half-bit").numpy()),
    ]
    evaluation_figure(
        path, panels, curves, title=item.name, thresholds=thresholds, inset_fraction=inset_fraction
    )


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def summarise_methods(
    rows: list[dict[str, Any]], metrics: list[str], methods: list[str]
) -> list[dict[str, Any]]:
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"method": method, "n": len(mine)}
        for key in metrics:
            values = np.array([r[key] for r in mine], dtype=np.float64)
            values = values[np.isfinite(values)]
            entry[key] = float(values.mean()) if values.size else math.nan
        out.append(entry)
    return out


def log_wandb(
    cfg: DictConfig, output_dir: Path, rows: list[dict[str, Any]], columns: list[str], summary: dict
) -> str | None:
    """Log the per-image table and the means to W&B (offline unless a key and a network are there)."""
    from psr.tasks.loggers import keep_wandb_files_in, wandb_mode

    keep_wandb_files_in(output_dir)
    mode = wandb_mode()
    if mode == "disabled":
        return None
    import wandb

    settings = cfg.get("wandb") or {}
    run = wandb.init(
        project=str(settings.get("project", "psr")),
        name=f"evaluate-{cfg.get('name', 'run')}",
        tags=[str(t) for t in settings.get("tags") or []],
        job_type="evaluate",
        dir=str(output_dir),
        mode=mode,  # type: ignore[arg-type]
        config={k: v for k, v in summary.items() if k not in ("methods", "gain_db")},
    )
    table = wandb.Table(columns=list[str | int](columns), data=[[r.get(c) for c in columns] for r in rows])
    means = wandb.Table(
        columns=list[str | int](c for c, _, _ in TABLE_COLUMNS),
        data=[[m.get(c) for c, _, _ in TABLE_COLUMNS] for m in summary["methods"]],
    )
    run.log({"evaluate/metrics": table, "evaluate/summary": means})
    for m in summary["methods"]:
        for key, value in m.items():
            if isinstance(value, float) and math.isfinite(value):
                run.summary[f"{m['method']}/{key}"] = value
    return str(mode)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def summary_markdown(summary: dict[str, Any]) -> str:
    """The short Markdown table printed at the end: one row per method, means over the images."""
    head = (
        f"psr evaluate: {summary['name']} ({summary['data']}), {summary['n_images']} image(s), scale {summary['scale']},"
        f" checkpoint {summary['checkpoint']}; CARE-normalised, FRC resolution in pixels (lower is finer)"
    )
    sigma = summary.get("gaussian_sigma")
    shown = [
        {**m, "method": gaussian_label(sigma)} if m["method"] == "gaussian" and sigma is not None else m
        for m in summary["methods"]
    ]
    return head + "\n\n" + markdown_table(shown, TABLE_COLUMNS) + "\n"
