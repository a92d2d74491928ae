"""``ZarrDataModule``: random clean patches from zarr / OME-Zarr images, read lazily, never all in memory.

The datamodule yields only clean, normalised high-resolution patches ``(B, C, Y, X)``; degradation
happens on the device in the LightningModule. Images are split into training and validation *by image*
(a single image is split by rows instead). Each image is normalised by its own low/high percentiles per
channel (``psr.data.statistics``: computed once from a strided subsample and stored with the image), so
memory is bounded by the patch size and the subsample, never by the image. Training patches are drawn at
random (``psr.data.patches``: images weighted by area) with flips and 90° rotations, or the ``augment``
list's transforms (``psr.data.augment``); validation patches are a fixed set, identical every epoch.

The statistics and patch names stay importable from here (``from psr.data.zarr import PatchDataset``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from psr.data.augment import make_augment
from psr.data.patches import (
    EpochSampler,
    LateStartLoader,
    PatchDataset,
    PatchSource,
    foreground_fraction,
    jitter_ranges,
    patch_layout,
    samples_done,
    zoom_range,
)
from psr.data.statistics import (
    PERCENTILE_GRID,
    STATS_SUBSAMPLE,
    STATS_VERSION,
    PercentileTable,
    cached_statistics,
    check_image_range,
    image_statistics,
    load_statistics,
    percentile_table,
    save_statistics,
)
from psr.io.omezarr import ImageRef, ManifestImage, StoreManifest, discover_images, read_manifest

__all__ = [
    "PERCENTILE_GRID",
    "STATS_SUBSAMPLE",
    "STATS_VERSION",
    "PatchDataset",
    "PatchSource",
    "PercentileTable",
    "ZarrDataModule",
    "cached_statistics",
    "foreground_fraction",
    "image_statistics",
    "load_statistics",
    "percentile_table",
    "save_statistics",
]


def _is_store(path: str) -> bool:
    """A zarr store, a folder of them, or a URL: read as zarr. Image files, their folders and globs are not."""
    if "://" in path:
        return True
    candidate = os.path.expanduser(path)
    if not os.path.exists(candidate):
        return not any(ch in path for ch in "*?[")  # a glob is ingested; a missing path is reported as such
    if not os.path.isdir(candidate):
        return False
    if candidate.rstrip("/").endswith(".zarr") or any(
        os.path.exists(os.path.join(candidate, m)) for m in ("zarr.json", ".zgroup", ".zarray")
    ):
        return True
    # A folder holding *.zarr stores is a collection; a folder of image files is ingested.
    return any(name.endswith(".zarr") for name in os.listdir(candidate))


class ZarrDataModule(L.LightningDataModule):
    """Clean patches from one or many zarr arrays / OME-Zarr images, local or remote.

    Args:
        path: an OME-Zarr image, a zarr array, a folder or group of them, or a list of those; local
            paths or fsspec URLs (``https://``, ``s3://``, ``gs://``, ``file://``).
        patch_size: patch edge in high-resolution pixels (an int, or one per spatial axis); must be
            divisible by ``scale`` laterally.
        scale: the super-resolution factor the patches will be degraded by (checked, not applied).
        spatial_dims: 2 for ``(C, Y, X)`` patches (t and z become samples), 3 for ``(C, Z, Y, X)``.
        channels: channel indices to use (all when ``None``).
        percentiles: low/high percentiles mapped to 0 and 1 per image and channel.
        augment: training patches only: ``True`` random flips and 90° rotations, ``False`` none, or a list
            of albumentations transforms (``psr.data.augment``; Hydra instantiates their ``_target_``).
        val_fraction: share of images held out for validation (a single image is split by rows). A
            store whose root carries a psr manifest is split by it instead (see ``setup``).
        frames: multi-frame patches (PSSR-MF): a window of this many neighbouring frames along
            ``frame_axis`` (t or z) becomes the channels, ``(frames, Y, X)``; odd, the target is the
            centre frame.
        foreground_fraction: redraw patches whose foreground share is below this (0 disables);
            foreground is the 3×3-smoothed normalised intensity above ``foreground_threshold``. After
            ``max_tries`` draws the best candidate is kept.
        percentile_jitter: ``[[lo_min, lo_max], [hi_min, hi_max]]``: training patches are normalised
            with percentiles drawn from these ranges (``None``: always ``percentiles``).
        zoom: training patches read from windows ``1/z`` times their size and resized, ``z`` drawn
            log-uniformly from ``[min, max]`` (a factor, or ``None``: no zoom); see ``PatchDataset``.
        train_pool: a fixed training set of this many patches, drawn once and each degraded the same
            way every epoch (CSBDeep's one noisy copy); ``None``: fresh patches and degradations always.
        storage_options: passed to fsspec for URLs (e.g. ``{"anon": True}`` for a public s3 bucket).
        cache_statistics: store each image's percentile table in its attributes and reuse it.
    """

    def __init__(
        self,
        path: str | Sequence[str] | None,
        patch_size: int | Sequence[int] = 64,
        scale: int = 1,
        spatial_dims: int = 2,
        channels: Sequence[int] | None = None,
        batch_size: int = 16,
        samples_per_epoch: int = 1024,
        val_samples: int = 128,
        val_fraction: float = 0.2,
        percentiles: Sequence[float] = (1.0, 99.8),
        input_smoothing: float = 0.0,
        augment: bool | Sequence[Any] = True,
        num_workers: int | None = 0,
        pin_memory: bool | None = False,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        seed: int = 0,
        frames: int = 1,
        frame_axis: str = "t",
        foreground_fraction: float = 0.0,
        foreground_threshold: float = 0.2,
        max_tries: int = 10,
        percentile_jitter: Sequence[Sequence[float]] | None = None,
        train_pool: int | None = None,
        zoom: float | Sequence[float] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        cache_statistics: bool = True,
        manifest: str | Mapping[str, Any] | None = None,
        ingest: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if path is not None and manifest is not None:
            raise ValueError(
                "data.path and data.manifest are both set: name the images once, either as data.path (stores,"
                " files, folders, globs) or in data.manifest (with splits and pairs), and set the other to null"
            )
        if path is None and manifest is None:
            raise ValueError(
                "data.path is not set: expected zarr stores, image files, folders or globs (or data.manifest)"
            )
        if frames < 1 or frames % 2 == 0:
            raise ValueError(f"frames must be odd (a centre frame and its neighbours), got {frames}")
        if frame_axis not in ("t", "z"):
            raise ValueError(f"frame_axis must be 't' or 'z', got {frame_axis!r}")
        if frames > 1 and spatial_dims != 2:
            raise ValueError("multi-frame patches (frames > 1) are 2D: set spatial_dims=2")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        patch = (
            (int(patch_size),) * spatial_dims
            if isinstance(patch_size, int)
            else tuple(int(p) for p in patch_size)
        )
        if len(patch) != spatial_dims:
            raise ValueError(
                f"patch_size {list(patch)} must have {spatial_dims} entries for {spatial_dims}D patches"
            )
        if any(p % scale for p in patch[-2:]):
            raise ValueError(f"patch_size {list(patch)} is not divisible by the scale {scale} in Y and X")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        low, high = (float(p) for p in percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(percentiles)}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"data.foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if max_tries < 1:
            raise ValueError(f"data.max_tries must be >= 1, got {max_tries}")
        if train_pool is not None and int(train_pool) < 1:
            raise ValueError(f"data.train_pool must be null or >= 1 patches, got {train_pool}")
        self.path = path
        self.manifest = manifest
        self.ingest = dict(ingest or {})
        self.cache_dir = cache_dir
        self._ingested = False
        self.patch = patch
        self.scale = scale
        self.spatial_dims = spatial_dims
        self.channels = tuple(channels) if channels is not None else None
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.val_samples = val_samples
        self.val_fraction = val_fraction
        self.percentiles = (low, high)
        if not 0.0 <= float(input_smoothing) <= 8.0:
            raise ValueError(
                f"data.input_smoothing must be a Gaussian sigma in [0, 8] pixels, got {input_smoothing}"
            )
        self.input_smoothing = float(input_smoothing)
        self.augment = make_augment(augment)
        # Loader settings; None: 0 workers, no pinning, workers kept alive when there are any, and
        # torch's prefetch depth (the training task picks them from the machine for data.*: null).
        self.num_workers = int(num_workers or 0)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.seed = seed
        self.frames = frames
        self.frame_axis = frame_axis
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_threshold = float(foreground_threshold)
        self.max_tries = int(max_tries)
        self.percentile_jitter = jitter_ranges(percentile_jitter)
        self.zoom = zoom_range(zoom)
        self.train_pool = None if train_pool is None else int(train_pool)
        self.storage_options = dict(storage_options) if storage_options else None
        self.cache_statistics = cache_statistics
        self.refs: list[ImageRef] = []  # every image found, including those no split uses
        self.manifests: dict[str, StoreManifest | None] = {}  # per store root
        self.train_sources: list[PatchSource] = []
        self.val_sources: list[PatchSource] = []

    @property
    def in_channels(self) -> int:
        """Number of channels of each patch (frames × channels; known after ``setup``)."""
        src = (self.train_sources or self.val_sources)[0]
        return len(src.channels) * self.frames

    @property
    def clean_validation(self) -> bool:
        """Whether validation yields clean patches (degraded on the device), known after ``setup``."""
        return bool(self.val_sources)

    def _prepare_source(self, ref: ImageRef) -> PatchSource:
        if any(s == 0 for s in ref.shape):
            raise ValueError(f"image {ref.name} is empty (shape {ref.shape}); expected pixels on every axis")
        channel_axis, planes, spatial = patch_layout(ref, self.spatial_dims)
        n_channels = ref.shape[channel_axis] if channel_axis is not None else 1
        channels = self.channels if self.channels is not None else tuple(range(n_channels))
        if any(c < 0 or c >= n_channels for c in channels):
            raise ValueError(
                f"image {ref.name} has {n_channels} channels; data.channels={list(channels)} is out of range"
            )
        for axis, size in zip(spatial, self.patch, strict=True):
            if ref.shape[axis] < size:
                raise ValueError(
                    f"image {ref.name} (shape {ref.shape}, axes '{ref.axes}') is smaller than the patch {list(self.patch)}"
                )
        frame_axis = None
        if self.frames > 1:
            if self.frame_axis not in ref.axes:
                raise ValueError(
                    f"image {ref.name} has axes '{ref.axes}' but data.frames={self.frames} needs a"
                    f" '{self.frame_axis}' axis (data.frame_axis)"
                )
            frame_axis = ref.axes.index(self.frame_axis)
            if ref.shape[frame_axis] < self.frames:
                raise ValueError(
                    f"image {ref.name} has {ref.shape[frame_axis]} frames along '{self.frame_axis}';"
                    f" data.frames={self.frames} needs at least that many"
                )
            if len(channels) != 1:
                raise ValueError(
                    f"image {ref.name} has {len(channels)} channels; multi-frame patches take one: set data.channels=[k]"
                )
        table = cached_statistics(
            ref, channel_axis, spatial, self.percentiles, self.cache_statistics, self.input_smoothing
        )
        if table.values.shape[0] != n_channels:
            raise ValueError(
                f"image {ref.name} has {n_channels} channels but its stored statistics have"
                f" {table.values.shape[0]}; delete attrs['psr']['stats'] to recompute them"
            )
        table = table.channels(channels)
        low, high = table.at(self.percentiles[0]), table.at(self.percentiles[1])
        check_image_range(ref.name, low, high, self.percentiles, channels)
        if self.percentile_jitter is not None:
            (_, a1), (b0, _) = self.percentile_jitter
            lo, hi = table.at(a1), table.at(b0)
            flat = np.nonzero(hi <= lo)[0]
            if flat.size:
                raise ValueError(
                    f"image {ref.name} channel {channels[int(flat[0])]} has no dynamic range between percentiles"
                    f" {a1:g} and {b0:g} (both {lo[flat[0]]:g}); narrow data.percentile_jitter or set it to null"
                )
        y_size = ref.shape[spatial[-2]]
        return PatchSource(
            ref,
            channel_axis,
            planes,
            spatial,
            (0, y_size),
            low.astype(np.float32),
            high.astype(np.float32),
            channels,
            frame_axis,
            table,
        )

    def _manifest_entry(self, ref: ImageRef) -> ManifestImage | None:
        manifest = self.manifests.get(ref.store)
        return manifest.images.get(ref.image_path) if manifest is not None else None

    def _sources_to_ingest(self) -> list[str]:
        """The entries of ``path`` that are image files, folders of images or globs rather than zarr stores."""
        if self.path is None:
            return []
        paths = [self.path] if isinstance(self.path, str | os.PathLike) else list(self.path)
        return [str(p) for p in paths if not _is_store(str(p))]

    def prepare_data(self) -> None:
        """Convert TIFF / PNG sources (``path`` entries or ``manifest``) to OME-Zarr once, in ``cache_dir``.

        The store is named by a fingerprint of the files (paths, sizes, times) and the ``ingest`` options,
        so later runs reuse it and an edited file makes a new one (``psr.data.ingest.ensure_ingested``).
        """
        if self._ingested:
            return
        sources = self._sources_to_ingest()
        if not sources and self.manifest is None:
            return
        if sources and len(sources) != (
            1 if isinstance(self.path, str | os.PathLike) else len(self.path or [])
        ):
            raise ValueError(
                f"data.path mixes zarr stores and image files ({sources[0]}); ingest the files first"
                " (scripts/ingest.py) or list only one kind"
            )
        from psr.data.ingest import IngestError, ensure_ingested, manifest_from_mapping

        manifest: Any = self.manifest
        if isinstance(manifest, Mapping):
            manifest = manifest_from_mapping(manifest, os.getcwd(), "data.manifest")
        cache = self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "psr")
        # Images without a split in a manifest: the datamodule splits them (data.val_fraction), not the ingest.
        options = {"val_fraction": 0.0, **self.ingest}
        try:
            store = ensure_ingested(sources, cache, manifest=manifest, **options)
        except IngestError as err:
            # The ingest speaks of its command-line flags; here the user set config keys.
            def key(match: re.Match[str]) -> str:
                name = match.group(1).replace("-", "_")
                return "data.manifest" if name == "manifest" else f"data.ingest.{name}"

            raise ValueError(re.sub(r"--([a-z][a-z-]*)", key, str(err))) from err
        self.path = str(store)
        self._ingested = True

    def _discover(self) -> list[ImageRef]:
        """Every image under ``path`` and each store's manifest (read once per store)."""
        self.prepare_data()  # idempotent; covers callers that skip prepare_data
        if self.path is None:
            raise ValueError("data.path is not set and data.manifest produced no store")
        refs = discover_images(self.path, self.storage_options)
        for store in dict.fromkeys(ref.store for ref in refs):
            self.manifests[store] = read_manifest(store, self.storage_options)
        return refs

    def setup(self, stage: str | None = None) -> None:
        """Find the images, split them and prepare their statistics.

        Where a store's root carries a psr manifest, its ``test`` images and its ``low`` images (the
        degraded halves of real pairs) are never used; its ``val`` images are the validation set (none
        with ``val_fraction=0``), the others train. A manifest naming no ``val`` image falls back to the
        random split below. Otherwise images are split at random by image (``val_fraction``), and a
        single image by rows.
        """
        if self.train_sources:
            return
        self.refs = self._discover()
        usable = []
        for ref in self.refs:
            entry = self._manifest_entry(ref)
            if entry is None or (entry.split != "test" and entry.role != "low"):
                usable.append(ref)
        if not usable:
            raise ValueError(
                f"the manifest of {self.path} leaves no image to train on (all {len(self.refs)} are test or"
                " low-quality images); expected clean or high-quality images in the train split"
            )
        named_val = [
            ref for ref in usable if (e := self._manifest_entry(ref)) is not None and e.split == "val"
        ]
        if named_val:
            held_out = {id(ref) for ref in named_val}
            train_refs = [ref for ref in usable if id(ref) not in held_out]
            if not train_refs:
                raise ValueError(
                    f"the manifest of {self.path} puts every usable image in the val split; expected train images"
                )
            train = [self._prepare_source(ref) for ref in train_refs]
            val = [self._prepare_source(ref) for ref in named_val] if self.val_fraction > 0 else []
        else:
            train, val = self._random_split([self._prepare_source(ref) for ref in usable])
        channel_counts = {len(s.channels) for s in train + val}
        if len(channel_counts) != 1:
            raise ValueError(
                f"images under {self.path} have different channel counts {sorted(channel_counts)}; pick data.channels"
            )
        self.train_sources, self.val_sources = train, val

    def _random_split(self, sources: list[PatchSource]) -> tuple[list[PatchSource], list[PatchSource]]:
        if len(sources) == 1 or self.val_fraction == 0:
            train, val = sources, []
            if self.val_fraction > 0:
                # One image: hold out its last rows for validation.
                src = sources[0]
                y0, y1 = src.y_range
                cut = y1 - max(self.patch[-2], int(round((y1 - y0) * self.val_fraction)))
                if cut - y0 < self.patch[-2]:
                    raise ValueError(
                        f"image {src.ref.name} is too small to split into training and validation rows for patch"
                        f" {list(self.patch)}; add images or set data.val_fraction=0"
                    )
                train, val = [replace(src, y_range=(y0, cut))], [replace(src, y_range=(cut, y1))]
            return train, val
        order = np.random.default_rng(self.seed).permutation(len(sources))
        n_val = max(1, int(round(len(sources) * self.val_fraction)))
        val = [sources[i] for i in sorted(order[:n_val])]
        train = [sources[i] for i in sorted(order[n_val:])]
        return train, val

    def _loader(
        self, dataset: Dataset[Any], shuffle: bool, sampler: Sampler[int] | None = None
    ) -> DataLoader[Any]:
        return (LateStartLoader if sampler is not None else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0 and self.persistent_workers is not False,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            drop_last=shuffle,
        )

    def _sampling(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "foreground_fraction": self.foreground_fraction,
            "foreground_threshold": self.foreground_threshold,
            "max_tries": self.max_tries,
        }

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        dataset = PatchDataset(
            self.train_sources,
            self.patch,
            self.samples_per_epoch,
            seed=self.seed,
            augment=self.augment,
            percentile_jitter=self.percentile_jitter,
            pool=self.train_pool,
            zoom=self.zoom,
            **self._sampling(),
        )
        # Each patch is drawn from (seed, epoch, index) alone: the same with any number of workers.
        sampler = EpochSampler(self.samples_per_epoch, position=self._samples_done)
        return self._loader(dataset, shuffle=True, sampler=sampler)

    def _samples_done(self) -> int:
        return samples_done(self.trainer, self.batch_size)

    def val_dataloader(self) -> DataLoader[Any]:
        if not self.val_sources:
            return DataLoader([])  # type: ignore[arg-type]
        dataset = PatchDataset(
            self.val_sources, self.patch, self.val_samples, seed=self.seed + 1, fixed=True, **self._sampling()
        )
        return self._loader(dataset, shuffle=False)
