"""``data=pairs``: train on clean images (crappified on the device), validate on real low/high pairs.

``PairedDataModule`` is a ``ZarrDataModule`` for training; its validation (and test) loaders yield
``{"input": low, "target": high}`` dict batches cut from real acquisitions, which the LightningModule
uses as they are instead of degrading clean patches. Pairs come from ``psr.data.pairs`` readers (PNG,
TIFF, zarr / OME-Zarr files, folders, globs), or from the psr manifest of the training store.

Each pair is cut into fixed, aligned crops: a high crop of ``patch_size`` and the low crop of
``patch_size / scale`` at the same place (on the same grid at scale 1, for denoising pairs). Each image
is percentile-normalised on its own, per channel, as published pairs are rescaled per image. Only one
pair is read at a time and only the chosen crops are kept, so memory is bounded by one pair plus
``val_samples`` crops.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from psr.data.pairs import (
    ImageFile,
    PairError,
    channel_header,
    list_images,
    match_pairs,
    plane_layout,
    read_planes,
)
from psr.data.patches import foreground_fraction
from psr.data.statistics import STATS_SUBSAMPLE
from psr.data.zarr import ZarrDataModule

PAIR_KEYS = ("low", "high", "match", "strip", "channel", "allow_unmatched")


@dataclass(frozen=True)
class Pair:
    """A real pair to cut crops from: its name and its low- and high-quality images."""

    name: str
    low: ImageFile
    high: ImageFile


def _label(image: ImageFile) -> str:
    return image.ref.name if image.ref is not None else str(image.path)


class PairCrops(Dataset[dict[str, torch.Tensor]]):
    """Fixed aligned crops ``{"input": (C, *low_patch), "target": (C, *patch)}`` float32, flagged ``real``."""

    def __init__(self, low: list[np.ndarray], high: list[np.ndarray], names: list[str]) -> None:
        self.low, self.high, self.names = low, high, names

    def __len__(self) -> int:
        return len(self.low)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # "real" tells the module these are real pairs: it scores them with the CARE affine fit.
        return {
            "input": torch.from_numpy(self.low[i]),
            "target": torch.from_numpy(self.high[i]),
            "real": torch.tensor(True),
        }


def normalise_image(
    planes: np.ndarray, percentiles: tuple[float, float], source: str, smoothing: float = 0.0
) -> np.ndarray:
    """``(N, C, *S)`` planes of one image mapped per channel so its low/high percentiles become 0 and 1;
    the percentiles are those of a copy smoothed by ``smoothing`` px (``psr.data.normalise``), estimated
    on about ``STATS_SUBSAMPLE`` values per channel (every k-th plane when there are many)."""
    from psr.data.normalise import NormalisationError, apply_range, frame_range

    per_plane = math.prod(planes.shape[2:])
    step = max(1, math.ceil(planes.shape[0] * per_plane / STATS_SUBSAMPLE))
    # (C, N', *S): the sampled planes, channels first, so the smoothing stays within each plane
    sample = np.moveaxis(planes[::step], 1, 0)
    try:
        low, high = frame_range(sample, percentiles, smoothing, f"image {source}")
    except NormalisationError as err:
        raise PairError(str(err)) from err
    return np.moveaxis(apply_range(np.moveaxis(planes, 1, 0), low, high), 0, 1)


class PairedDataModule(ZarrDataModule):
    """Training patches from clean images (``path``), validation crops from real pairs.

    Args:
        path: the clean training images (see ``ZarrDataModule``); all of them train unless
            ``val_fraction`` > 0 is given (then clean validation patches are not used either: the pairs
            are the validation set).
        val_pairs: ``{"low", "high", "match", "strip", "channel", "allow_unmatched"}`` as
            ``psr.data.pairs`` reads them (files, folders, globs, zarr stores); with ``low`` and ``high``
            unset, the ``val`` pairs of the psr manifest of ``path``.
        test_pairs: the same for ``test_dataloader``; unset: the manifest's ``test`` pairs, if any.
        **kwargs: every other ``ZarrDataModule`` argument. ``val_samples`` caps the number of crops;
            with ``foreground_fraction`` > 0 only crops whose high half has that much foreground
            (``foreground_threshold``) are validated, as for training patches.
    """

    def __init__(
        self,
        path: str | Sequence[str],
        val_pairs: Mapping[str, Any] | None = None,
        test_pairs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("val_fraction", 0.0)
        super().__init__(path=path, **kwargs)
        if self.frames > 1:
            raise ValueError(f"data=pairs validates single-frame models; data.frames={self.frames} must be 1")
        self.val_pairs = self._spec(val_pairs, "data.val_pairs")
        self.test_pairs = self._spec(test_pairs, "data.test_pairs")
        self.val_crops: PairCrops | None = None
        self.test_crops: PairCrops | None = None

    @staticmethod
    def _spec(spec: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(PAIR_KEYS))
        if unknown:
            raise ValueError(f"{key} has unknown key(s) {unknown}; expected {', '.join(PAIR_KEYS)}")
        if (spec.get("low") is None) != (spec.get("high") is None):
            raise ValueError(
                f"{key} sets only one of low and high; set both, or neither to use the store's manifest pairs"
            )
        return spec

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.val_crops is None:
            self.val_crops = self._crops(self.val_pairs, "val", "data.val_pairs", required=True)
        if self.test_crops is None and stage in (None, "test"):
            self.test_crops = self._crops(self.test_pairs, "test", "data.test_pairs", required=False)

    # --- which pairs ---------------------------------------------------------------------------
    def _pairs(self, spec: dict[str, Any], split: str, key: str, required: bool) -> list[Pair]:
        if spec.get("low") is not None:
            low = list_images(_paths(spec["low"]), f"{key}.low")
            high = list_images(_paths(spec["high"]), f"{key}.high")
            matched, _ = match_pairs(
                low,
                high,
                str(spec.get("match", "order")),
                [str(s) for s in spec.get("strip") or []],
                bool(spec.get("allow_unmatched", False)),
            )
            return [Pair(name, lo, hi) for name, lo, hi in matched]
        by_name = {(ref.store, ref.image_path): ref for ref in self.refs}
        pairs: list[Pair] = []
        scales: set[int] = set()
        for store, manifest in self.manifests.items():
            if manifest is None:
                continue
            for entry in manifest.pairs:
                if entry.split != split:
                    continue
                scales.add(entry.scale)
                if entry.scale != self.scale:
                    continue
                refs = [by_name.get((store, name)) for name in (entry.low, entry.high)]
                missing = [n for n, r in zip((entry.low, entry.high), refs, strict=True) if r is None]
                if missing:
                    raise ValueError(
                        f"the manifest of {store} pairs {entry.low} with {entry.high} but the store holds no image"
                        f" named {missing[0]}"
                    )
                lo, hi = (ImageFile(Path(store), r) for r in refs)
                pairs.append(Pair(f"{entry.low}|{entry.high}", lo, hi))
        if not pairs and required:
            found = f" (it has {split} pairs at scale {sorted(scales)})" if scales else ""
            raise ValueError(
                f"{key}: set {key}.low and {key}.high, or give data.path a store whose psr manifest lists"
                f" {split} pairs at scale {self.scale}{found}"
            )
        return pairs

    # --- crops ---------------------------------------------------------------------------------
    def _low_patch(self) -> tuple[int, ...]:
        return (*self.patch[:-2], self.patch[-2] // self.scale, self.patch[-1] // self.scale)

    def _header(self, image: ImageFile, channel: Any) -> tuple[int, tuple[int, ...]]:
        shape, axes = image.header()
        shape, axes = channel_header(shape, axes, channel, _label(image))
        planes, _, spatial = plane_layout(shape, axes, self.spatial_dims, self.in_channels, _label(image))
        return planes, spatial

    def _grid(self, pair: Pair, channel: Any) -> tuple[int, list[tuple[int, ...]]]:
        """Planes and crop corners (in low-image pixels) of ``pair``, from the headers alone."""
        n_low, low_shape = self._header(pair.low, channel)
        n_high, high_shape = self._header(pair.high, channel)
        factors = (1,) * (self.spatial_dims - 2) + (self.scale, self.scale)
        expected = tuple(s * f for s, f in zip(low_shape, factors, strict=True))
        if n_low != n_high or expected != high_shape:
            raise PairError(
                f"pair {pair.name}: low {_label(pair.low)} has {n_low} plane(s) of {list(low_shape)} and high"
                f" {_label(pair.high)} has {n_high} of {list(high_shape)}; expected the high image to be the"
                f" low one times the scale {self.scale} in Y and X ({list(expected)})"
            )
        low_patch = self._low_patch()
        if any(s < p for s, p in zip(low_shape, low_patch, strict=True)):
            raise PairError(
                f"pair {pair.name}: low {_label(pair.low)} ({list(low_shape)}) is smaller than the low-resolution"
                f" patch {list(low_patch)} (data.patch_size / scale)"
            )
        starts = [range(0, s - p + 1, p) for s, p in zip(low_shape, low_patch, strict=True)]
        return n_low, list(itertools.product(*starts))

    def _crops(self, spec: dict[str, Any], split: str, key: str, required: bool) -> PairCrops | None:
        pairs = self._pairs(spec, split, key, required)
        if not pairs:
            return None
        channel = spec.get("channel")
        grids = [self._grid(pair, channel) for pair in pairs]
        counts = [n * len(corners) for n, corners in grids]
        total = sum(counts)
        low_patch = self._low_patch()
        factors = (1,) * (self.spatial_dims - 2) + (self.scale, self.scale)
        candidates = np.arange(total)
        if self.foreground_fraction > 0:
            # Crops of empty background say little about a restoration: keep those whose high crop
            # has enough foreground (as training patches), or all of them if none has.
            keep = []
            offset = 0
            for pair, (_, corners), count in zip(pairs, grids, counts, strict=True):
                high = self._read(pair.high, channel)
                for j in range(count):
                    plane, corner = divmod(j, len(corners))
                    index = self._high_index(corners[corner], factors)
                    share = foreground_fraction(high[plane][(slice(None), *index)], self.foreground_threshold)
                    if share >= self.foreground_fraction:
                        keep.append(offset + j)
                offset += count
            if keep:
                candidates = np.array(keep)
        chosen = candidates
        if candidates.size > self.val_samples:  # spread the crops over every pair, the same ones every run
            chosen = np.sort(
                np.random.default_rng(self.seed + 2).choice(candidates, self.val_samples, replace=False)
            )
        lows: list[np.ndarray] = []
        highs: list[np.ndarray] = []
        names: list[str] = []
        offset = 0
        for pair, (_, corners), count in zip(pairs, grids, counts, strict=True):
            mine = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
            offset += count
            if not mine.size:
                continue
            low = self._read(pair.low, channel, self.input_smoothing)  # a raw frame, as predict normalises it
            high = self._read(pair.high, channel)
            for j in mine:
                plane, corner = divmod(int(j), len(corners))
                start = corners[corner]
                lo_index = tuple(slice(s, s + p) for s, p in zip(start, low_patch, strict=True))
                hi_index = self._high_index(start, factors)
                lows.append(np.ascontiguousarray(low[plane][(slice(None), *lo_index)]))
                highs.append(np.ascontiguousarray(high[plane][(slice(None), *hi_index)]))
                names.append(f"{pair.name}#{plane}@{','.join(map(str, start))}")
        return PairCrops(lows, highs, names)

    def _high_index(self, start: tuple[int, ...], factors: tuple[int, ...]) -> tuple[slice, ...]:
        """The high crop matching the low crop at ``start`` (low-image pixels)."""
        return tuple(slice(s * f, s * f + p) for s, f, p in zip(start, factors, self.patch, strict=True))

    def _read(self, image: ImageFile, channel: Any, smoothing: float = 0.0) -> np.ndarray:
        planes, _ = read_planes(image, channel, self.spatial_dims, self.in_channels)
        return normalise_image(planes, self.percentiles, _label(image), smoothing)

    @property
    def clean_validation(self) -> bool:
        """Validation yields real pairs, never clean patches."""
        return False

    def has_test_pairs(self) -> bool:
        """Whether real test pairs are configured (``data.test_pairs``) or listed by the store's manifest."""
        if self.test_crops is None:
            self.test_crops = self._crops(self.test_pairs, "test", "data.test_pairs", required=False)
        return self.test_crops is not None and len(self.test_crops) > 0

    # --- loaders -------------------------------------------------------------------------------
    def _pair_loader(self, crops: PairCrops) -> DataLoader[dict[str, torch.Tensor]]:
        return DataLoader(
            crops, batch_size=self.batch_size, shuffle=False, num_workers=0, pin_memory=self.pin_memory
        )

    def val_dataloader(self) -> DataLoader[Any]:
        if self.val_crops is None:
            self.setup("fit")
        assert self.val_crops is not None
        return self._pair_loader(self.val_crops)

    def test_dataloader(self) -> DataLoader[Any]:
        if self.test_crops is None:
            self.setup("test")
        if self.test_crops is None:
            raise ValueError(
                "data.test_pairs: set data.test_pairs.low and .high, or give data.path a store whose psr manifest"
                f" lists test pairs at scale {self.scale}"
            )
        return self._pair_loader(self.test_crops)


def _paths(spec: Any) -> str | list[str]:
    return str(spec) if isinstance(spec, str | Path) else [str(s) for s in spec]
