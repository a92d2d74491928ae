"""Task-based evaluation of restoration: ``python evaluate.py task=segment seg_ckpt=<segmentation ckpt> …``.

Does restoring low-quality images let a segmentation model segment them as well as high-quality ones? A
segmentation checkpoint (``segment.py``) segments, for every image,

- ``high``: the high-quality image;
- ``low``: the low-quality image (resized to the high grid, bilinear, when it is smaller);
- ``restored``: the low-quality image restored by a psr restoration checkpoint (``ckpt``, optional);
- the classical baselines of ``evaluate.py`` on the low image (``psr.tasks.evaluate.baselines``: for
  denoising the ``classical`` filters — Gaussian with its σ chosen on the set against the high images,
  NLM, BM3D —, for super-resolution bicubic interpolation);

and scores each segmentation against the labels (``segment.labels``) or, where there are none, against
the segmentation of the high-quality image. Two kinds of data:

- labelled images (``segment.images`` + ``segment.labels``): the high-quality images are degraded by a
  crappifier (``segment.crappifier``: a ``conf/crappifier`` preset; null: the restoration checkpoint's
  own) with fixed seeds;
- real pairs (``data=pairs`` / ``data=w2s_dev`` …, ``pairs.low`` / ``pairs.high``), without labels.

Scores per method: foreground IoU and Dice (pooled over every pixel of the set), per-class IoU, and for
models that make instances, matching F1 / AP at IoU ``match_iou``; ``recovered`` is the share of the gap
between ``low`` and ``high`` that a method closes (IoU). Writes ``metrics.csv``, ``summary.json``, one
overlay figure per image, and prints a Markdown table. Outputs are written under temporary names.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from psr.atomic import durable_replace, write_atomic
from psr.data.pairs import PairError
from psr.inference.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from psr.metrics.segmentation import Matching, confusion_matrix, iou_dice, match_instances
from psr.tasks.common import plain as _plain
from psr.tasks.common import select_required as _get
from psr.tasks.errors import ConfigError
from psr.tasks.eval_outputs import csv_text, finite

log = logging.getLogger(__name__)

HIGH, LOW, RESTORED = "high", "low", "restored"


@dataclass
class SegItem:
    """One image: the restoration model's input ``low (1, C, *S)`` and the high-quality ``high (1, C, *S')``,
    both normalised, and its mask ``(Y', X')`` when there is one."""

    name: str
    low: torch.Tensor
    high: torch.Tensor
    label: np.ndarray | None


@dataclass
class Tally:
    """A method's confusion matrix and instance matching, summed over the set."""

    confusion: torch.Tensor
    matching: Matching = field(default_factory=lambda: Matching(0, 0, 0, 0.0))
    images: int = 0


class Segmenter:
    """A segmentation checkpoint as a function: an image ``(1, C, Y, X)`` → class map and instances."""

    def __init__(self, loaded: LoadedModel, device: torch.device, tile: int | None, overlap: int) -> None:
        from psr.modules.segmentation import SegmentationModule

        config = loaded.config
        module_cfg = config.get("module") or {}
        if not str(module_cfg.get("_target_", "")).endswith("SegmentationModule"):
            raise CheckpointError(f"checkpoint {loaded.path} is not a segmentation checkpoint (segment.py)")
        keys = ("classes", "mode", "class_names", "boundary_class", "match_iou", "threshold")
        self.module = SegmentationModule(
            loaded.net, optimizer=torch.optim.Adam, **{k: module_cfg[k] for k in keys if k in module_cfg}
        )
        data = config.get("data") or {}
        low, high = data.get("percentiles", (1.0, 99.8))
        self.percentiles = (float(low), float(high))
        self.label_map = {int(k): int(v) for k, v in (data.get("label_map") or {}).items()} or None
        self.loaded = loaded
        self.device = device
        self.tile, self.overlap = tile, overlap

    @property
    def classes(self) -> int:
        return int(self.module.classes)

    def __call__(self, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        from psr.data.normalise import normalise_frame
        from psr.inference.forward import predict_tensor as predict_image
        from psr.modules.segmentation import probabilities

        plane = normalise_frame(image[0].numpy(), self.percentiles, 0.0, "image")
        logits = predict_image(
            self.loaded.net,
            torch.from_numpy(plane)[None],
            1,
            self.loaded.out_channels,
            self.tile,
            self.overlap,
            1,
            self.device,
        )
        probs = probabilities(logits, self.classes)[0]
        classes = probs.argmax(0).numpy()
        instances = self.module.instances(probs.numpy()) if self.module.scores_instances else None
        return classes, instances

    def reference(self, label: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The class map and instances of a mask, as training saw them."""
        from psr.data.labelled import map_classes

        if self.module.mode == "instance":
            classes = self.module.targets(torch.from_numpy(label.astype(np.int64))[None])[0].numpy()
            return classes, label.astype(np.int32)
        classes = map_classes(label, self.label_map, self.classes, "segment.labels")
        instances = self.module.true_instances(classes) if self.module.scores_instances else None
        return classes, instances


def _load(path: Any, key: str, device: torch.device) -> LoadedModel:
    try:
        return load_checkpoint(str(path), device=device)
    except CheckpointError as err:
        raise ConfigError(f"{key}={path}: {err}") from err


def _crappifier(cfg: DictConfig, restorer: LoadedModel | None) -> tuple[Any, int]:
    """The degradation of labelled images: a ``conf/crappifier`` preset, else the restorer's own."""
    from hydra.utils import instantiate

    from psr.tasks.crosseval import CONF_DIR  # through psr/_app: an installed psr finds its presets too

    name = cfg.segment.get("crappifier")
    if name:
        path = CONF_DIR / "crappifier" / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"segment.crappifier={name} is not a preset of conf/crappifier")
        scale = int(cfg.segment.get("scale") or (restorer.scale if restorer else 1))
        node = OmegaConf.create({"scale": scale, "crappifier": OmegaConf.load(path)})
        return instantiate(node.crappifier), scale
    if restorer is None or "crappifier" not in restorer.config:
        raise ConfigError(
            "segment.images are degraded by a crappifier: set segment.crappifier=<preset> or give a restoration"
            " checkpoint ckpt=... whose crappifier is used"
        )
    return instantiate(OmegaConf.create(restorer.config["crappifier"])), restorer.scale


def _labelled_items(
    cfg: DictConfig, restorer: LoadedModel | None, percentiles: tuple[float, float]
) -> tuple[int, Callable[[], Iterator[SegItem]], int]:
    from psr.data.labelled import LabelError, load_labelled

    settings = cfg.segment
    crappifier, scale = _crappifier(cfg, restorer)
    try:
        images = load_labelled(
            _plain(settings.images),
            _plain(settings.labels),
            mode="instance",  # raw masks; the segmenter maps them as its training did
            percentiles=percentiles,
            match=str(settings.get("match", "stem")),
        )
    except (LabelError, PairError) as err:
        raise ConfigError(f"segment: {err}") from err
    limit = settings.get("max_images")
    images = images[: int(limit)] if limit else images
    seed = int(settings.get("seed", 0))

    def items() -> Iterator[SegItem]:
        for k, it in enumerate(images):
            h, w = (n - n % scale for n in it.label.shape)
            high = torch.from_numpy(it.image[:, :h, :w])[None]
            with torch.no_grad():
                low = crappifier(high, torch.Generator().manual_seed(seed + k)).float()
            yield SegItem(it.name, low, high, it.label[:h, :w])

    return len(images), items, scale


class _Unchanged(torch.nn.Module):
    """Stands for a restoration model when there is none: real pairs are then read on one grid."""

    scale, in_channels, out_channels, spatial_dims = 1, 1, 1, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _pair_items(
    cfg: DictConfig, restorer: LoadedModel | None, percentiles: tuple[float, float]
) -> tuple[int, Callable[[], Iterator[SegItem]], int]:
    """Real pairs through ``evaluate.py``'s reader (matched, checked against the restorer's scale); the
    low images normalised as the restorer expects, the high ones by ``percentiles``."""
    from psr.data.normalise import NormalisationError, normalise_frame
    from psr.tasks.eval_data import pair_items as evaluation_pairs

    model = restorer or LoadedModel(
        net=_Unchanged(), config={"data": {"percentiles": list(percentiles)}}, path=Path("none")
    )
    count, pairs, _ = evaluation_pairs(cfg, model)

    def items() -> Iterator[SegItem]:
        for item in pairs():
            try:
                high = normalise_frame(item.high[0].numpy(), percentiles, 0.0, f"image {item.source}")
            except NormalisationError as err:
                raise PairError(str(err)) from err
            yield SegItem(item.name, item.low.float(), torch.from_numpy(high)[None], None)

    return count, items, model.scale


def _candidates(
    item: SegItem,
    restorer: LoadedModel | None,
    classical: list[str],
    sigma: float | None,
    device: torch.device,
    tile: int | None,
    overlap: int,
    noise: str,
) -> dict[str, torch.Tensor]:
    """Every image to segment, on the high grid ``(1, 1, Y, X)``."""
    from psr.inference.forward import predict_tensor as predict_image
    from psr.tasks.eval_baselines import baselines

    size = tuple(item.high.shape[2:])
    low = item.low
    upsampled = low if tuple(low.shape[2:]) == size else F.interpolate(low, size=size, mode="bilinear")
    out = {HIGH: item.high, LOW: upsampled}
    if restorer is not None:
        out[RESTORED] = predict_image(
            restorer.net, low, restorer.scale, restorer.out_channels, tile, overlap, 1, device
        )
    scale = restorer.scale if restorer else max(1, size[-1] // low.shape[-1])
    extra = baselines(low, 1, size, scale, classical, sigma, None, noise)
    for method, image in extra.items():
        if method not in ("identity", "nearest", "bilinear"):
            out[method] = image
    return out


def _scores(tally: Tally, names: list[str]) -> dict[str, float]:
    iou, dice = iou_dice(tally.confusion)
    fg_iou, fg_dice = iou[1:][torch.isfinite(iou[1:])], dice[1:][torch.isfinite(dice[1:])]
    out = {
        "iou": float(fg_iou.mean()) if fg_iou.numel() else math.nan,
        "dice": float(fg_dice.mean()) if fg_dice.numel() else math.nan,
        "pixel_accuracy": float(tally.confusion.diagonal().sum() / tally.confusion.sum().clamp_min(1)),
    }
    for c, name in enumerate(names):
        out[f"iou/{name}"] = float(iou[c])
    if tally.matching.tp + tally.matching.fp + tally.matching.fn:
        scores = tally.matching.scores()
        out.update({k: scores[k] for k in ("f1", "ap", "precision", "recall")})
    return out


def evaluate_segmentation(cfg: DictConfig) -> dict[str, Any]:
    """Run the task-based evaluation ``cfg`` describes; return the summary (also ``summary.json``)."""
    from psr.tasks.eval_baselines import classical_settings as _classical_settings
    from psr.tasks.evaluate import _device

    started = time.time()
    output_dir = Path(str(_get(cfg, "output_dir")))
    output_dir.mkdir(parents=True, exist_ok=True)
    device = _device(str(cfg.get("device", "auto")))
    tile = int(cfg.tile_size) if cfg.get("tile_size") else None
    overlap = int(cfg.get("tile_overlap", 0))
    seg_loaded = _load(_get(cfg, "seg_ckpt"), "seg_ckpt", device)
    try:
        segmenter = Segmenter(seg_loaded, device, tile, overlap)
    except (CheckpointError, TypeError, ValueError) as err:
        raise ConfigError(f"seg_ckpt={seg_loaded.path}: {err}") from err
    restorer = _load(cfg.ckpt, "ckpt", device) if cfg.get("ckpt") else None
    percentiles = restorer.percentiles if restorer else segmenter.percentiles
    labelled = bool(cfg.segment.get("images"))
    try:
        if labelled:
            count, items, scale = _labelled_items(cfg, restorer, percentiles)
        else:
            count, items, scale = _pair_items(cfg, restorer, percentiles)
    except PairError as err:
        raise ConfigError(str(err)) from err
    classical, sigmas = _classical_settings(cfg, scale)
    sigma = None
    if sigmas:
        from psr.inference import classical as classical_denoisers

        pairs = ((it.low[0].numpy(), it.high[0].numpy()) for it in items())
        sigma, _ = classical_denoisers.select_gaussian_sigma(pairs, sigmas)
        log.info("gaussian baseline: sigma %.2f px chosen on the set (PSNR against the high images)", sigma)
    reference = "labels" if labelled else "high-quality segmentation"
    log.info(
        "segmenting %d image(s) of %s; reference: %s",
        count,
        "labelled images" if labelled else "pairs",
        reference,
    )
    tallies: dict[str, Tally] = {}
    rows: list[dict[str, Any]] = []
    figures = output_dir / ".figures-partial"
    shutil.rmtree(figures, ignore_errors=True)
    max_figures = int(cfg.get("max_figures", 100)) if cfg.get("figures", True) else 0
    noise = str(cfg.get("classical_noise", "vst"))
    try:
        for k, item in enumerate(items()):
            images = _candidates(item, restorer, classical, sigma, device, tile, overlap, noise)
            results = {method: segmenter(image) for method, image in images.items()}
            truth = segmenter.reference(item.label) if item.label is not None else results[HIGH]
            for method, (classes, instances) in results.items():
                if item.label is None and method == HIGH:
                    continue  # the reference itself
                tally = tallies.setdefault(
                    method, Tally(torch.zeros(segmenter.classes, segmenter.classes, dtype=torch.long))
                )
                one = Tally(
                    confusion_matrix(torch.from_numpy(classes), torch.from_numpy(truth[0]), segmenter.classes)
                )
                if instances is not None and truth[1] is not None:
                    one.matching = match_instances(instances, truth[1], segmenter.module.match_iou)
                tally.confusion += one.confusion
                tally.matching += one.matching
                tally.images += 1
                rows.append(
                    {"image": item.name, "method": method, **_scores(one, segmenter.module.class_names)}
                )
            if k < max_figures:
                _figure(figures / f"{k:03d}.png", images, results, truth[0])
            log.info(
                "%s: %s",
                item.name,
                ", ".join(f"{r['method']} IoU {r['iou']:.3f}" for r in rows[-len(images) :]),
            )
    except BaseException:
        shutil.rmtree(figures, ignore_errors=True)
        raise
    if not rows:
        raise ConfigError("no image to evaluate")
    methods: list[dict[str, Any]] = [
        {"method": m, "n": t.images, **_scores(t, segmenter.module.class_names)} for m, t in tallies.items()
    ]
    by_name = {m["method"]: m for m in methods}
    if LOW in by_name:
        # Against the high-quality segmentation, the high image scores 1 by definition.
        gap = (by_name[HIGH]["iou"] if HIGH in by_name else 1.0) - by_name[LOW]["iou"]
        for m in methods:
            m["recovered"] = (m["iou"] - by_name[LOW]["iou"]) / gap if abs(gap) > 1e-9 else math.nan
    others = [m for m in methods if m["method"] not in (HIGH, LOW, RESTORED)]
    summary: dict[str, Any] = {
        "task": "segment",
        "seg_checkpoint": str(seg_loaded.path),
        "restoration_checkpoint": str(restorer.path) if restorer else None,
        "data": "labelled" if labelled else str(cfg.get("data")),
        "name": str(cfg.get("name", "segment")),
        "reference": reference,
        "scale": scale,
        "crappifier": (cfg.segment.get("crappifier") or "checkpoint's") if labelled else None,
        "n_images": len({r["image"] for r in rows}),
        "classes": segmenter.module.class_names,
        "classical": classical,
        "gaussian_sigma": sigma,
        "best_classical": max(others, key=lambda m: m["iou"])["method"] if others else None,
        "methods": methods,
        "wall_time_s": round(time.time() - started, 1),
        "device": str(device),
    }
    if figures.exists():
        final = output_dir / "figures"
        shutil.rmtree(final, ignore_errors=True)
        durable_replace(figures, final)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    summary["wandb"] = _log_wandb(cfg, output_dir, rows, columns, summary)
    write_atomic(output_dir / "metrics.csv", csv_text(rows, columns))
    write_atomic(output_dir / "summary.json", json.dumps(finite(summary), indent=2) + "\n")
    print(summary_markdown(summary), flush=True)
    return summary


def _figure(path: Path, images: dict[str, torch.Tensor], results: dict[str, Any], truth: np.ndarray) -> None:
    """One row per image: every method's input with its segmentation over it, then the reference."""
    from skimage.io import imsave

    from psr.modules.segmentation import overlay

    tiles = []
    for method, image in images.items():
        grey = image[0, 0].numpy()
        lo, hi = np.percentile(grey, [1, 99])
        grey = np.clip((grey - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        tiles.append(overlay(grey, results[method][0]))
    grey = np.clip(images[HIGH][0, 0].numpy(), 0, 1)
    tiles.append(overlay(grey, truth))
    path.parent.mkdir(parents=True, exist_ok=True)
    row = (np.concatenate(tiles, axis=1) * 255).round().astype(np.uint8)
    imsave(path, row, check_contrast=False)


def _log_wandb(
    cfg: DictConfig, output_dir: Path, rows: list[dict[str, Any]], columns: list[str], summary: dict[str, Any]
) -> str | None:
    """With ``logger=wandb``: the per-image scores and the per-method table to W&B (offline unless there is
    a key and a network), each method's scores in the run summary as ``<method>/<score>``; returns the mode."""
    if str(cfg.get("logger", "wandb")) != "wandb":
        return None
    from psr.tasks.loggers import finish_wandb, keep_wandb_files_in, wandb_mode

    keep_wandb_files_in(output_dir)
    mode = wandb_mode()
    if mode == "disabled":
        return None
    import wandb

    settings = cfg.get("wandb") or {}
    failed = True
    try:
        run = wandb.init(
            project=str(settings.get("project", "psr")),
            name=f"evaluate-{summary['name']}",
            tags=[*(str(t) for t in settings.get("tags") or []), "segment"],
            job_type="evaluate-segment",
            dir=str(output_dir),
            mode=mode,  # type: ignore[arg-type]
            config={k: v for k, v in summary.items() if k != "methods"},
        )
        heads = list(dict.fromkeys(key for m in summary["methods"] for key in m))
        run.log(
            {
                "segment/metrics": wandb.Table(
                    columns=list[str | int](columns), data=[[r.get(c) for c in columns] for r in rows]
                ),
                "segment/summary": wandb.Table(
                    columns=list[str | int](heads),
                    data=[[m.get(c) for c in heads] for m in summary["methods"]],
                ),
            }
        )
        for m in summary["methods"]:
            for key, value in m.items():
                if isinstance(value, float) and math.isfinite(value):
                    run.summary[f"{m['method']}/{key}"] = value
        failed = False
    finally:
        finish_wandb(failed)
    return str(mode)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The table printed at the end: one row per method."""
    instance = any("f1" in m for m in summary["methods"])
    head = ["method", "images", "IoU", "Dice", "recovered"] + (["F1@0.5", "AP@0.5"] if instance else [])
    lines = [
        f"psr evaluate task=segment: {summary['name']}, {summary['n_images']} image(s), reference: {summary['reference']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m in summary["methods"]:
        cells = [m["method"], str(m["n"]), f"{m['iou']:.3f}", f"{m['dice']:.3f}", _pct(m.get("recovered"))]
        if instance:
            cells += [f"{m.get('f1', math.nan):.3f}", f"{m.get('ap', math.nan):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.0f} %"
