"""What ``evaluate.py`` scores: (input, ground truth) pairs as :class:`EvalItem` — the checkpoint's own
validation images degraded by its own crappifier (``data=crappified``), or real low/high acquisitions
(``data=pairs``, :mod:`psr.data.pairs`) checked against each other and the model's scale."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from psr.data.pairs import (
    PairError,
    channel_header,
    list_images,
    match_pairs,
    plane_layout,
    read_planes,
)
from psr.inference.checkpoint import LoadedModel
from psr.tasks.common import plain, select_required
from psr.tasks.errors import ConfigError

log = logging.getLogger(__name__)


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


def crappified_items(cfg: DictConfig, model: LoadedModel) -> tuple[int, Callable[[], Iterator[EvalItem]]]:
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
            clean = read_validation_plane(src, index, datamodule.frames, max_size, scale)
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


def read_validation_plane(
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


def pair_items(
    cfg: DictConfig, model: LoadedModel
) -> tuple[int, Callable[[], Iterator[EvalItem]], list[str]]:
    """Real pairs, checked against each other and the model's scale before anything runs: their count, a
    function that yields them (each call anew) and the names without a twin."""
    low_spec = select_required(cfg, "pairs.low")
    high_spec = select_required(cfg, "pairs.high")
    settings = cfg.pairs
    channel = settings.get("channel")
    if isinstance(channel, str) and channel.lstrip("-").isdigit():
        channel = int(channel)
    lows = list_images(plain(low_spec), "pairs.low")
    highs = list_images(plain(high_spec), "pairs.high")
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
                low = normalise_plane(
                    low_planes[k], low_pct, f"{lo.path}{f' [{label}]' if label else ''}", smoothing
                )
                normalise_plane(high_planes[k], (0.1, 99.9), f"{hi.path}{f' [{label}]' if label else ''}")
                yield EvalItem(
                    name=f"{name}[{label}]" if label else name,
                    low=torch.from_numpy(low)[None],
                    high=torch.from_numpy(high_planes[k])[None],
                    pixel_size=hi.pixel_size,
                    source=f"{lo.path} | {hi.path}",
                )

    return total, items, unmatched


def normalise_plane(
    plane: np.ndarray, percentiles: tuple[float, float], source: str, smoothing: float = 0.0
) -> np.ndarray:
    """``(C, *S)`` mapped per channel so the low/high percentiles (of a copy smoothed by ``smoothing`` px,
    ``psr.data.normalise``) become 0 and 1; an image without dynamic range is an error naming it."""
    from psr.data.normalise import NormalisationError, normalise_frame

    try:
        return normalise_frame(plane, percentiles, smoothing, f"image {source}")
    except NormalisationError as err:
        raise PairError(str(err)) from err
