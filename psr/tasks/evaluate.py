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

import csv
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from psr.atomic import write_atomic
from psr.data.pairs import (
    PairError,
    channel_header,
    list_images,
    match_pairs,
    plane_layout,
    read_planes,
)
from psr.inference import classical as classical_denoisers
from psr.inference.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from psr.metrics.frc import checkerboard_frc, frc_curve
from psr.metrics.scores import restoration_scores
from psr.reporting.evaluation import Curve, Panel, evaluation_figure, markdown_table
from psr.tasks.errors import ConfigError

log = logging.getLogger(__name__)

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


@dataclass
class EvalItem:
    """One image to evaluate: the model's input and the ground truth.

    ``low`` is ``(1, C_in, *S)`` normalised like the training inputs; ``high`` is ``(1, C_out, *S·scale)``
    on any intensity scale (the CARE convention normalises it); ``pixel_size`` is the ground truth's.
    """

    name: str
    low: torch.Tensor
    high: torch.Tensor
    pixel_size: float | None
    source: str


# Lightning, W&B and ome-zarr are imported where they are needed: an evaluation of real pairs, or a
# command that stops at a bad argument, does not pay for them.


# --- configuration -------------------------------------------------------------------------------
def _get(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` (dotted), a missing mandatory value as one ConfigError naming the key."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{key} has no value; set it on the command line ({key}=...)") from err


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
    ckpt = _get(cfg, "ckpt")
    try:
        return load_checkpoint(str(ckpt), device=device)
    except CheckpointError as err:
        raise ConfigError(f"ckpt={ckpt}: {err}") from err


# --- data: crappified validation images ------------------------------------------------------------
def _crappified_items(cfg: DictConfig, model: LoadedModel) -> tuple[int, Callable[[], Iterator[EvalItem]]]:
    """The checkpoint's validation images, degraded by its crappifier (seed ``crappified.seed + k``): their
    count and a function that yields them (each call anew, identically)."""
    from psr.data.zarr import ZarrDataModule
    from psr.modules.restoration import centre_channels

    settings = cfg.get("crappified") or {}
    config = model.config
    if "data" not in config or "crappifier" not in config:
        raise ConfigError(f"ckpt={model.path}: its stored config has no data or crappifier; use data=pairs")
    try:
        datamodule = instantiate(OmegaConf.create(config["data"]))
        crappifier = instantiate(OmegaConf.create(config["crappifier"]))
    except Exception as err:  # noqa: BLE001 - anything from rebuilding the training objects
        raise ConfigError(f"ckpt={model.path}: cannot rebuild its data or crappifier: {err}") from err
    if not isinstance(datamodule, ZarrDataModule):
        raise ConfigError(
            f"ckpt={model.path}: its data ({type(datamodule).__name__}) is not a zarr datamodule; use data=pairs"
        )
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"ckpt={model.path}: its training data: {err}") from err
    sources = datamodule.val_sources
    if not sources:
        raise ConfigError(
            f"ckpt={model.path}: its training data held out no validation images (data.val_fraction=0);"
            " evaluate on real pairs with data=pairs"
        )
    max_size = settings.get("max_size")
    max_images = settings.get("max_images")
    seed = int(settings.get("seed", 0))
    scale = model.scale
    planes: list[tuple[Any, dict[int, int]]] = []
    for src in sources:
        counts = [range(src.ref.shape[a]) for a in src.plane_axes if a != src.frame_axis]
        axes = [a for a in src.plane_axes if a != src.frame_axis]
        planes.extend((src, dict(zip(axes, index, strict=True))) for index in itertools.product(*counts))
    if max_images is not None:
        planes = planes[: int(max_images)]

    def items() -> Iterator[EvalItem]:
        for k, (src, index) in enumerate(planes):
            clean = _read_validation_plane(src, index, datamodule.frames, max_size, scale)
            generator = torch.Generator().manual_seed(seed + k)
            with torch.no_grad():
                low = crappifier(torch.from_numpy(clean)[None], generator)
            target = centre_channels(torch.from_numpy(clean)[None], model.out_channels)
            label = ",".join(f"{src.ref.axes[a]}={i}" for a, i in index.items() if src.ref.shape[a] > 1)
            name = Path(src.ref.name).name if not src.ref.array_path else src.ref.array_path
            yield EvalItem(
                name=f"{name}[{label}]" if label else name,
                low=low.float(),
                high=target.float(),
                pixel_size=src.ref.pixel_size.get("x"),
                source=src.ref.name,
            )

    return len(planes), items


def _read_validation_plane(
    src: Any, index: dict[int, int], frames: int, max_size: int | None, scale: int
) -> np.ndarray:
    """One validation image (its validation rows), normalised like training: ``(C, *spatial)`` float32,
    centre-cropped to ``max_size`` and to a multiple of ``scale`` along Y and X."""
    ref = src.ref
    selection: list[Any] = [slice(None)] * len(ref.shape)
    for axis, i in index.items():
        selection[axis] = slice(i, i + 1)
    if src.frame_axis is not None:
        centre = ref.shape[src.frame_axis] // 2
        start = min(max(0, centre - frames // 2), ref.shape[src.frame_axis] - frames)
        selection[src.frame_axis] = slice(start, start + frames)
    for n, axis in enumerate(src.spatial_axes):
        lo, hi = src.y_range if n == len(src.spatial_axes) - 2 else (0, ref.shape[axis])
        if n >= len(src.spatial_axes) - 2:
            size = hi - lo if max_size is None else min(hi - lo, int(max_size))
            size -= size % scale
            if size < scale:
                raise ConfigError(f"validation image {ref.name} is smaller than the scale {scale}")
            lo += (hi - lo - size) // 2
            hi = lo + size
        selection[axis] = slice(lo, hi)
    if src.channel_axis is not None:
        selection[src.channel_axis] = list(src.channels)
    block = np.asarray(ref.open().oindex[tuple(selection)], dtype=np.float32)
    lead = src.frame_axis if src.frame_axis is not None else src.channel_axis
    order = ([lead] if lead is not None else []) + list(src.spatial_axes)
    rest = [a for a in range(block.ndim) if a not in order]
    block = np.transpose(block, rest + order).reshape(-1, *(block.shape[a] for a in src.spatial_axes))
    shape = (-1,) + (1,) * len(src.spatial_axes)
    low = np.asarray(src.low, dtype=np.float32).reshape(shape)
    high = np.asarray(src.high, dtype=np.float32).reshape(shape)
    return np.ascontiguousarray((block - low) / (high - low))


# --- data: real pairs -------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


def _pair_items(
    cfg: DictConfig, model: LoadedModel
) -> tuple[int, Callable[[], Iterator[EvalItem]], list[str]]:
    """Real pairs, checked against each other and the model's scale before anything runs: their count, a
    function that yields them (each call anew) and the names without a twin."""
    low_spec = _get(cfg, "pairs.low")
    high_spec = _get(cfg, "pairs.high")
    settings = cfg.pairs
    channel = settings.get("channel")
    if isinstance(channel, str) and channel.lstrip("-").isdigit():
        channel = int(channel)
    lows = list_images(_plain(low_spec), "pairs.low")
    highs = list_images(_plain(high_spec), "pairs.high")
    pairs, unmatched = match_pairs(
        lows,
        highs,
        match=str(settings.get("match", "order")),
        strip=[str(s) for s in settings.get("strip") or []],
        allow_unmatched=bool(settings.get("allow_unmatched", False)),
    )
    if unmatched:
        log.warning("evaluating %d pairs; without a twin: %s", len(pairs), ", ".join(unmatched))
    scale, dims = model.scale, model.spatial_dims
    total = 0
    for name, lo, hi in pairs:
        lo_shape, lo_axes = channel_header(*lo.header(), channel, str(lo.path))
        hi_shape, hi_axes = channel_header(*hi.header(), channel, str(hi.path))
        n_lo, _, s_lo = plane_layout(lo_shape, lo_axes, dims, model.in_channels, str(lo.path))
        n_hi, _, s_hi = plane_layout(hi_shape, hi_axes, dims, model.out_channels, str(hi.path))
        expected = tuple(s_lo[:-2]) + tuple(n * scale for n in s_lo[-2:])
        if tuple(s_hi) != expected:
            grid = "the same grid" if scale == 1 else f"high = {scale} × low in Y and X"
            raise PairError(
                f"pair '{name}': low {lo.path} is {list(s_lo)} but high {hi.path} is {list(s_hi)};"
                f" the checkpoint's model (scale {scale}) needs {grid}, i.e. {list(expected)}"
            )
        if n_lo != n_hi:
            raise PairError(
                f"pair '{name}': low {lo.path} holds {n_lo} planes but high {hi.path} holds {n_hi};"
                " expected as many (pick pairs.channel?)"
            )
        total += n_lo
    low_pct = model.percentiles
    override = cfg.get("input_smoothing")  # null: the checkpoint's data.input_smoothing
    smoothing = float(override) if override is not None else model.input_smoothing

    def items() -> Iterator[EvalItem]:
        for name, lo, hi in pairs:
            low_planes, labels = read_planes(lo, channel, dims, model.in_channels)
            high_planes, _ = read_planes(hi, channel, dims, model.out_channels)
            for k, label in enumerate(labels):
                low = _normalise(
                    low_planes[k], low_pct, f"{lo.path}{f' [{label}]' if label else ''}", smoothing
                )
                _normalise(high_planes[k], (0.1, 99.9), f"{hi.path}{f' [{label}]' if label else ''}")
                yield EvalItem(
                    name=f"{name}[{label}]" if label else name,
                    low=torch.from_numpy(low)[None],
                    high=torch.from_numpy(high_planes[k])[None],
                    pixel_size=hi.pixel_size,
                    source=f"{lo.path} | {hi.path}",
                )

    return total, items, unmatched


def _normalise(
    plane: np.ndarray, percentiles: tuple[float, float], source: str, smoothing: float = 0.0
) -> np.ndarray:
    """``(C, *S)`` mapped per channel so the low/high percentiles (of a copy smoothed by ``smoothing`` px,
    ``psr.data.normalise``) become 0 and 1; an image without dynamic range is an error naming it."""
    from psr.data.normalise import NormalisationError, normalise_frame

    try:
        return normalise_frame(plane, percentiles, smoothing, f"image {source}")
    except NormalisationError as err:
        raise PairError(str(err)) from err


# --- running the model ------------------------------------------------------------------------------
def _balanced_tile(size: int, tile: int, overlap: int) -> int:
    """The smallest tile edge that covers ``size`` with as few tiles of at most ``tile`` as possible: a
    2048-pixel axis takes three 726-pixel tiles (overlap 64) rather than three of 1024."""
    if size <= tile:
        return size
    n = math.ceil((size - overlap) / (tile - overlap))
    return max(2 * overlap, min(tile, math.ceil((size + (n - 1) * overlap) / n)))


def predict_image(
    net: torch.nn.Module,
    low: torch.Tensor,
    scale: int,
    out_channels: int,
    tile: int | None,
    overlap: int,
    batch_size: int,
    device: torch.device,
    tta: bool = False,
) -> torch.Tensor:
    """``net`` on a whole image ``(1, C, *S)`` → ``(1, out_channels, *S·scale)`` float32 on the CPU.

    Images larger than ``tile`` along Y or X run in tiles of at most ``tile`` pixels (as few as can cover
    the image, equally sized) overlapping by ``overlap`` (Z, for 3D models, stays whole), ``batch_size``
    tiles per forward pass, blended with the windows of ``psr.inference.tiling`` (tile borders are
    outweighed by the neighbouring tile's interior). With ``tta`` every forward pass is the mean over the 8
    flips and rotations in Y/X (``psr.inference.predict.infer``, bf16 autocast on CUDA).
    """
    from psr.inference.predict import infer
    from psr.inference.tiling import stitch, tile_grid

    def forward(x: torch.Tensor) -> torch.Tensor:
        if tta:
            return infer(net, x, tta=True)
        with torch.no_grad():
            return net(x).float()

    spatial = tuple(int(n) for n in low.shape[2:])
    factors = (1,) * (len(spatial) - 2) + (scale, scale)
    out_shape = (1, out_channels, *(n * f for n, f in zip(spatial, factors, strict=True)))
    if tile is None or max(spatial[-2:]) <= tile:
        return forward(low.to(device)).cpu().reshape(out_shape)
    tiles = (*spatial[:-2], *(_balanced_tile(n, tile, overlap) for n in spatial[-2:]))
    overlaps = (0,) * (len(spatial) - 2) + (overlap, overlap)
    regions = tile_grid(spatial, tiles, overlaps)

    def pieces() -> Iterator[tuple[Any, np.ndarray]]:
        for i in range(0, len(regions), batch_size):
            chunk = regions[i : i + batch_size]
            batch = torch.cat([low[(slice(None), slice(None), *region)] for region in chunk]).to(device)
            pred = forward(batch).cpu().numpy()
            yield from zip(chunk, pred, strict=True)

    stitched = stitch(pieces(), spatial, overlaps, factors=factors)
    return torch.from_numpy(stitched).reshape(out_shape)


def baselines(
    low: torch.Tensor,
    out_channels: int,
    size: tuple[int, ...],
    scale: int,
    classical: Sequence[str] = (),
    gaussian_sigma: float | None = None,
    timings: dict[str, float] | None = None,
    classical_noise: str = "vst",
) -> dict[str, torch.Tensor]:
    """What the model must beat: for denoising the input itself and the ``classical`` denoisers
    (``psr.inference.classical``: gaussian with ``gaussian_sigma`` px, nlm and bm3d for the noise model
    ``classical_noise``) on it; for
    super-resolution nearest, bilinear and bicubic upsampling. ``low`` is ``(1, C_in, *S)``; every
    baseline ``(1, out_channels, *size)``. The seconds each classical denoiser took are added to ``timings``.
    """
    from psr.modules.restoration import centre_channels, upsample_to

    shown = centre_channels(low.float(), out_channels)
    if scale != 1:
        return {mode: upsample_to(shown, size, mode) for mode in ("nearest", "bilinear", "bicubic")}
    out = {"identity": shown}
    plane = shown[0].numpy()
    for method in classical:
        started = time.perf_counter()
        denoised = classical_denoisers.denoise(method, plane, gaussian_sigma, classical_noise)
        out[method] = torch.from_numpy(denoised)[None]
        if timings is not None:
            timings[method] = timings.get(method, 0.0) + time.perf_counter() - started
    return out


# --- outputs ----------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "image"


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text)


def _view(x: torch.Tensor) -> np.ndarray:
    """A 2D view ``(Y, X)`` of ``(C, *S)``: channel 0, the middle Z plane of a volume."""
    x = x[0]
    while x.dim() > 2:
        x = x[x.shape[0] // 2]
    return x.float().numpy()


def _figure(
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


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def _summarise_methods(
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


def _log_wandb(
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


# --- the task -------------------------------------------------------------------------------------
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as ``cfg`` says; return the summary (also written to ``summary.json``).

    Raises ``ConfigError`` (one sentence) for a missing or unreadable checkpoint, pairs that do not exist,
    do not match or do not fit the model's scale, and images holding NaN.
    """
    started = time.time()
    output_dir = Path(str(_get(cfg, "output_dir")))
    output_dir.mkdir(parents=True, exist_ok=True)
    device = _device(str(cfg.get("device", "auto")))
    model = _load(cfg, device)
    mode = str(cfg.get("data"))
    unmatched: list[str] = []
    try:
        if mode == "crappified":
            count, items = _crappified_items(cfg, model)
        elif mode == "pairs":
            count, items, unmatched = _pair_items(cfg, model)
        else:
            raise ConfigError(f"data={mode} is not a choice; expected crappified, pairs, or a ready-made set")
        return _run(cfg, model, mode, count, items, unmatched, output_dir, device, started)
    except PairError as err:
        raise ConfigError(str(err)) from err


def _classical_settings(cfg: DictConfig, scale: int) -> tuple[list[str], list[float]]:
    """``classical`` and ``gaussian_sigmas`` checked: known names, positive widths, bm3d installed.

    Classical denoisers are baselines for denoising models only: at ``scale`` > 1 none runs.
    """
    chosen = _plain(cfg.get("classical")) or []
    if isinstance(chosen, str):
        chosen = [chosen]
    names = [str(m) for m in chosen]
    unknown = [m for m in names if m not in classical_denoisers.METHODS]
    if unknown:
        raise ConfigError(
            f"classical={names}: {', '.join(unknown)} is not a classical denoiser; expected a list of"
            f" {', '.join(classical_denoisers.METHODS)} (or [] for none)"
        )
    names = list(dict.fromkeys(names))
    if scale != 1:
        if names:
            log.info("classical baselines are for denoising models; scale %d gets interpolation", scale)
        return [], []
    sigmas: list[float] = []
    if "gaussian" in names:
        raw = _plain(cfg.get("gaussian_sigmas")) or []
        try:
            sigmas = sorted({float(v) for v in (raw if isinstance(raw, list | tuple) else [raw])})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"gaussian_sigmas={raw} is not a list of numbers") from err
        if not sigmas or sigmas[0] <= 0:
            raise ConfigError(
                f"gaussian_sigmas={raw}: the Gaussian baseline needs a non-empty list of positive widths (px)"
            )
    noise = str(cfg.get("classical_noise", "vst"))
    if noise not in classical_denoisers.NOISE_MODELS:
        raise ConfigError(
            f"classical_noise={noise} is not a noise model; expected one of"
            f" {', '.join(classical_denoisers.NOISE_MODELS)}"
        )
    if "bm3d" in names and not classical_denoisers.bm3d_available():
        raise ConfigError(
            f"classical={names}: {classical_denoisers.BM3D_MISSING}, or leave bm3d out of classical"
        )
    return names, sigmas


def _choose_gaussian_sigma(
    items: Callable[[], Iterator[EvalItem]],
    out_channels: int,
    sigmas: list[float],
    percentiles: tuple[float, float],
    mode: str,
) -> tuple[float, dict[float, float]]:
    """A first, cheap pass over the set: the Gaussian width of ``sigmas`` with the best mean CARE PSNR."""
    from psr.modules.restoration import centre_channels

    seen = 0
    done = False

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal seen, done
        for item in items():  # a bad image (NaN, no dynamic range) stops the run here, with its error
            seen += 1
            yield centre_channels(item.low.float(), out_channels)[0].numpy(), item.high[0].numpy()
        done = True

    try:
        sigma, means = classical_denoisers.select_gaussian_sigma(pairs(), sigmas, percentiles)
    except ValueError as err:
        if done and not seen:  # the set is empty: the one error the selection itself raises here
            raise ConfigError(f"data={mode}: no image to evaluate") from err
        raise
    log.info(
        "gaussian baseline: sigma %.2f px chosen on the set (mean PSNR %.2f dB over %s)",
        sigma,
        means[sigma],
        ", ".join(f"{s:g}" for s in sigmas),
    )
    return sigma, means


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
        sigma, sigma_means = _choose_gaussian_sigma(items, model.out_channels, sigmas, percentiles, mode)
        timings["gaussian_sigma_selection"] = time.perf_counter() - pass_started
        labels["gaussian"] = _gaussian_label(sigma)
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
                _figure(
                    figure_tmp / f"{k:03d}-{_safe(item.name)}.png",
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
    means = _summarise_methods(rows, metric_keys, methods)
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
            wandb_state = _log_wandb(cfg, output_dir, rows, columns, summary)
            failed = False
        finally:
            finish_wandb(failed)
    summary["wandb"] = wandb_state
    if figure_tmp.exists():
        final = output_dir / "figures"
        if final.exists():
            shutil.rmtree(final)
        os.replace(figure_tmp, final)
    _write_atomic(output_dir / "metrics.csv", _csv_text(rows, columns))
    _write_atomic(output_dir / "summary.json", json.dumps(_finite(summary), indent=2) + "\n")
    print(summary_markdown(summary), flush=True)
    return summary


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def summary_markdown(summary: dict[str, Any]) -> str:
    """The short Markdown table printed at the end: one row per method, means over the images."""
    head = (
        f"psr evaluate: {summary['name']} ({summary['data']}), {summary['n_images']} image(s), scale {summary['scale']},"
        f" checkpoint {summary['checkpoint']}; CARE-normalised, FRC resolution in pixels (lower is finer)"
    )
    sigma = summary.get("gaussian_sigma")
    shown = [
        {**m, "method": _gaussian_label(sigma)} if m["method"] == "gaussian" and sigma is not None else m
        for m in summary["methods"]
    ]
    return head + "\n\n" + markdown_table(shown, TABLE_COLUMNS) + "\n"


def _gaussian_label(sigma: float) -> str:
    return f"gaussian (σ {sigma:.2f})"
