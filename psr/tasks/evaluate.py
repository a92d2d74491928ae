"""The evaluation task: a checkpoint against ground truth, on crappified held-out images or real pairs.

``evaluate(cfg)`` loads the generator from the checkpoint alone (``psr.inference.checkpoint``), gathers
(input, ground truth) pairs — ``data=crappified``: the checkpoint's own validation images degraded by its
own crappifier with a fixed seed; ``data=pairs``: real low/high acquisitions (``psr.data.pairs``) — runs
the model on whole images (in overlapping tiles when they are large) and scores the prediction and the
baselines (for denoising: identity and the classical denoisers of ``psr.inference.classical`` — a
Gaussian filter whose width is chosen on the evaluated set, non-local means, BM3D; for super-resolution:
nearest, bilinear and bicubic upsampling) with the CARE convention and FRC (``psr.metrics.scores``). It
writes ``metrics.csv`` (one row per image and method), ``summary.json``, one PNG figure per image under
``figures/``, logs the table to W&B, and returns the summary. Every output is written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from psr.atomic import durable_replace, write_atomic
from psr.data.pairs import PairError
from psr.inference.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from psr.inference.forward import predict_tensor as predict_image  # the name tests and segment_eval use
from psr.metrics.scores import restoration_scores
from psr.tasks.common import select_required
from psr.tasks.errors import ConfigError
from psr.tasks.eval_baselines import baselines, choose_gaussian_sigma, gaussian_label
from psr.tasks.eval_baselines import classical_settings as _classical_settings
from psr.tasks.eval_data import EvalItem, crappified_items
from psr.tasks.eval_data import pair_items as _pair_items
from psr.tasks.eval_outputs import (
    MODEL,
    csv_text,
    finite,
    log_wandb,
    safe_name,
    summarise_methods,
    summary_markdown,
    write_figure,
)

log = logging.getLogger(__name__)

# Lightning, W&B and ome-zarr are imported where they are needed: an evaluation of real pairs, or a
# command that stops at a bad argument, does not pay for them.


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available; use device=auto or device=cpu")
    try:
        return torch.device(choice)
    except RuntimeError as err:
        raise ConfigError(f"device={choice} is not a torch device; expected auto, cpu or cuda") from err


def _load(cfg: DictConfig, device: torch.device) -> LoadedModel:
    ckpt = select_required(cfg, "ckpt")
    try:
        return load_checkpoint(str(ckpt), device=device)
    except CheckpointError as err:
        raise ConfigError(f"ckpt={ckpt}: {err}") from err


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as ``cfg`` says; return the summary (also written to ``summary.json``).

    Raises ``ConfigError`` (one sentence) for a missing or unreadable checkpoint, pairs that do not exist,
    do not match or do not fit the model's scale, and images holding NaN.
    """
    started = time.time()
    output_dir = Path(str(select_required(cfg, "output_dir")))
    output_dir.mkdir(parents=True, exist_ok=True)
    device = _device(str(cfg.get("device", "auto")))
    model = _load(cfg, device)
    mode = str(cfg.get("data"))
    unmatched: list[str] = []
    try:
        if mode == "crappified":
            count, items = crappified_items(cfg, model)
        elif mode == "pairs":
            count, items, unmatched = _pair_items(cfg, model)
        else:
            raise ConfigError(f"data={mode} is not a choice; expected crappified, pairs, or a ready-made set")
        return _run(cfg, model, mode, count, items, unmatched, output_dir, device, started)
    except PairError as err:
        raise ConfigError(str(err)) from err


def _run(
    cfg: DictConfig,
    model: LoadedModel,
    mode: str,
    count: int,
    items: Callable[[], Iterator[EvalItem]],
    unmatched: list[str],
    output_dir: Path,
    device: torch.device,
    started: float,
) -> dict[str, Any]:
    tile = cfg.get("tile_size")
    tile = int(tile) if tile else None
    overlap = int(cfg.get("tile_overlap", 0))
    if tile is not None and not 0 <= 2 * overlap <= tile:
        raise ConfigError(f"tile_overlap={overlap} must be between 0 and half of tile_size={tile}")
    low_pct, high_pct = (float(p) for p in cfg.get("care_percentiles", (0.1, 99.9)))
    percentiles = (low_pct, high_pct)
    frc_cfg = cfg.get("frc") or {}
    window = frc_cfg.get("window", "hann")
    unit = str(frc_cfg.get("unit", "um"))
    pixel_override = frc_cfg.get("pixel_size")
    draw = bool(cfg.get("figures", True))
    max_figures = int(cfg.get("max_figures", 100))
    figure_tmp = output_dir / ".figures-partial"
    if figure_tmp.exists():
        shutil.rmtree(figure_tmp)
    tta = bool(cfg.get("tta", False))
    classical, sigmas = _classical_settings(cfg, model.scale)
    rows: list[dict[str, Any]] = []
    methods: list[str] = []
    metric_keys: list[str] = []
    timings: dict[str, float] = {}
    log.info("evaluating %s on %d image(s) (%s)", model.path, count, mode)
    sigma: float | None = None
    sigma_means: dict[float, float] = {}
    labels: dict[str, str] = {"nlm": "NLM", "bm3d": "BM3D"}
    if sigmas:
        pass_started = time.perf_counter()
        sigma, sigma_means = choose_gaussian_sigma(items, model.out_channels, sigmas, percentiles, mode)
        timings["gaussian_sigma_selection"] = time.perf_counter() - pass_started
        labels["gaussian"] = gaussian_label(sigma)
    try:  # a failure (a NaN image, an interrupt) leaves no partial figures behind
        for k, item in enumerate(items()):
            pred = predict_image(
                model.net,
                item.low,
                model.scale,
                model.out_channels,
                tile,
                overlap,
                int(cfg.get("batch_size", 1)),
                device,
                tta,
            )
            if pred.shape != item.high.shape:
                raise ConfigError(
                    f"image {item.name}: the model turns {list(item.low.shape[2:])} into {list(pred.shape[2:])}"
                    f" but the ground truth is {list(item.high.shape[2:])}"
                )
            candidates = {
                MODEL: pred,
                **baselines(
                    item.low,
                    model.out_channels,
                    tuple(item.high.shape[2:]),
                    model.scale,
                    classical,
                    sigma,
                    timings,
                    str(cfg.get("classical_noise", "vst")),
                ),
            }
            pixel_size = float(pixel_override) if pixel_override is not None else item.pixel_size
            scores, fitted, gt = restoration_scores(
                candidates, item.high, percentiles, pixel_size, unit, window
            )
            methods = list(scores)
            metric_keys = list(next(iter(scores.values())))
            for method, values in scores.items():
                rows.append(
                    {
                        "image": item.name,
                        "method": method,
                        "shape": "x".join(str(s) for s in item.high.shape[2:]),
                        "pixel_size": pixel_size if pixel_size is not None else math.nan,
                        **values,
                    }
                )
            if draw and k < max_figures:
                write_figure(
                    figure_tmp / f"{k:03d}-{safe_name(item.name)}.png",
                    item,
                    list(candidates),
                    fitted,
                    gt,
                    scores,
                    model.scale,
                    window,
                    float(cfg.get("inset_fraction", 0.2)),
                    labels,
                )
            log.info("%s: model PSNR %.2f dB", item.name, scores[MODEL]["psnr"])
    except BaseException:
        shutil.rmtree(figure_tmp, ignore_errors=True)
        raise
    if not rows:
        raise ConfigError(f"data={mode}: no image to evaluate")

    columns = ["image", "method", "shape", "pixel_size", *metric_keys]
    means = summarise_methods(rows, metric_keys, methods)
    for entry in means:
        if entry["method"] == "gaussian":
            entry["sigma"] = sigma
    model_psnr = next(m["psnr"] for m in means if m["method"] == MODEL)
    gains = {m["method"]: model_psnr - m["psnr"] for m in means if m["method"] not in (MODEL, "ground_truth")}
    summary: dict[str, Any] = {
        "checkpoint": str(model.path),
        "model": str((model.config.get("model") or {}).get("_target_", "")),
        "scale": model.scale,
        "data": mode,
        "name": str(cfg.get("name", mode)),
        "crappifier": str((model.config.get("crappifier") or {}).get("_target_", ""))
        if mode == "crappified"
        else None,
        "n_images": len({r["image"] for r in rows}),
        "unmatched": unmatched,
        "care_percentiles": list(percentiles),
        "methods": means,
        "gain_db": gains,
        "classical": classical,
        "gaussian_sigma": sigma,
        "gaussian_sigma_psnr": {f"{s:g}": v for s, v in sigma_means.items()},
        "tta": tta,
        "baseline_time_s": {k: round(v, 2) for k, v in timings.items()},
        "wall_time_s": round(time.time() - started, 1),
        "device": str(device),
    }
    wandb_state = None
    if str(cfg.get("logger", "wandb")) == "wandb":
        from psr.tasks.loggers import finish_wandb

        failed = True
        try:
            wandb_state = log_wandb(cfg, output_dir, rows, columns, summary)
            failed = False
        finally:
            finish_wandb(failed)
    summary["wandb"] = wandb_state
    if figure_tmp.exists():
        final = output_dir / "figures"
        if final.exists():
            shutil.rmtree(final)
        durable_replace(figure_tmp, final)
    write_atomic(output_dir / "metrics.csv", csv_text(rows, columns))
    write_atomic(output_dir / "summary.json", json.dumps(finite(summary), indent=2) + "\n")
    print(summary_markdown(summary), flush=True)
    return summary
