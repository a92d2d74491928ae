"""Labelled images for segmentation: images with label masks (semantic classes or instance ids).

``LabelledDataModule`` reads images and their masks from PNG / TIFF files, folders, globs or zarr stores
(``psr.data.pairs``), pairs them by name (or by sorted order) — or, with ``labels=None``, takes each OME-Zarr
image's mask from its NGFF ``labels/`` group (image-label metadata; :mod:`psr.data.labelled_store` writes
such a store), checks every mask before training (same Y/X shape as its image, integer values, no class
beyond ``classes``) and yields

- training: random square patches ``{"image": (B, C, P, P) float32, "label": (B, P, P) int64}`` with random
  flips and 90° rotations, ``samples_per_epoch`` per epoch;
- validation: whole held-out images (or the held-out bottom rows of every image), one per batch.

Images are normalised per channel by their own percentiles (``psr.data.normalise``), as restoration
inputs are. ``label_map`` maps raw mask values to classes (ISBI 2012 membranes are 0 and cells 255:
``{0: 1, 255: 0}`` makes the membrane class 1). In ``mode="instance"`` masks hold instance ids (0 the
background) and are passed on unchanged; the segmentation module turns them into its targets.

The images are held in memory: this module is made for the labelled sets segmentation is trained on (tens
of images), not for the terabyte stores of ``data=zarr``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from psr.data.pairs import ImageFile, PairError, list_images, read_planes
from psr.data.patches import EpochSampler, LateStartLoader, samples_done
from psr.errors import DataError

MODES = ("semantic", "instance")
VAL_SPLITS = ("images", "rows")


class LabelError(DataError):
    """A label mask that cannot train the configured model: shape, values or class count."""


@dataclass
class LabelledImage:
    """One image ``(C, Y, X)`` float32 (normalised) and its mask ``(Y, X)`` int64."""

    name: str
    image: np.ndarray
    label: np.ndarray


def _check_integer(raw: np.ndarray, source: str) -> np.ndarray:
    if raw.dtype == bool:
        return raw.astype(np.int64)
    if not np.issubdtype(raw.dtype, np.integer):
        finite = np.isfinite(raw)
        if not finite.all() or not np.array_equal(raw, np.round(raw)):
            example = raw[~finite][0] if not finite.all() else raw[raw != np.round(raw)][0]
            raise LabelError(
                f"labels {source} hold non-integer values (e.g. {example!r}, dtype {raw.dtype}); expected an"
                " integer mask of classes or instance ids"
            )
    values = raw.astype(np.int64)
    if values.min() < 0:
        raise LabelError(
            f"labels {source} hold negative values (min {int(values.min())}); expected classes or instance"
            " ids >= 0"
        )
    return values


def read_label(file: ImageFile) -> np.ndarray:
    """A mask ``(Y, X)`` int64 from a single-plane PNG / TIFF / zarr image; size-1 axes are dropped."""
    raw = np.squeeze(file.read())
    if raw.ndim != 2:
        raise LabelError(
            f"labels {file.path} have shape {list(file.read().shape)}; expected one 2D plane (Y, X) per image"
            " (an RGB or palette PNG is not a mask: save the class or instance ids as a grey image)"
        )
    return _check_integer(raw, str(file.path))


def ngff_label(file: ImageFile, label_name: str | None = None) -> ImageFile:
    """The mask of an OME-Zarr image from its NGFF ``labels/`` group: the label image ``label_name`` (None:
    the first the group lists), full resolution. Raises ``PairError`` naming the image when it has none."""
    from psr.io.omezarr import _refs_in, open_node

    ref = file.ref
    if ref is None or not ref.image_path:
        raise PairError(
            f"image {file.path} has no mask: data.labels is null, which reads each OME-Zarr image's labels/"
            " group; expected data.labels=<masks> for PNG / TIFF images or bare arrays"
        )
    where = f"{ref.store}/{ref.image_path}/labels"
    try:
        group = open_node(ref.store, f"{ref.image_path}/labels", ref.storage_options, kind="group")
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise PairError(
            f"image {file.name} has no NGFF labels/ group ({where}); expected data.labels=<masks> or an"
            " OME-Zarr store written with its labels"
        ) from err
    attrs = dict(group.attrs)
    listed = (attrs.get("ome") or attrs).get("labels") or []
    name = label_name if label_name is not None else (listed[0] if listed else None)
    if name is None or name not in listed:
        raise PairError(
            f"{where} lists labels {list(listed)}; expected data.label_name to be one of them"
            if listed
            else f"{where} lists no label image; expected an NGFF labels group with a 'labels' list"
        )
    refs = list(
        _refs_in(
            ref.store,
            open_node(ref.store, f"{ref.image_path}/labels/{name}", ref.storage_options, kind="group"),
            f"{ref.image_path}/labels/{name}",
            0,
            ref.storage_options,
        )
    )
    if not refs:
        raise PairError(f"{where}/{name} holds no multiscale label image; expected NGFF image-label data")
    return ImageFile(file.path, refs[0])


def map_classes(
    label: np.ndarray, label_map: Mapping[int, int] | None, classes: int, source: str
) -> np.ndarray:
    """Raw mask values → classes through ``label_map`` (every value must be listed), checked against
    ``classes``."""
    if label_map:
        raw_values = np.unique(label)
        unknown = [int(v) for v in raw_values if int(v) not in label_map]
        if unknown:
            raise LabelError(
                f"labels {source} hold values {unknown[:8]} that data.label_map={dict(label_map)} does not"
                " map; expected every mask value to be a key of data.label_map"
            )
        lut = np.zeros(int(raw_values.max()) + 1, dtype=np.int64)
        for key, value in label_map.items():
            if 0 <= int(key) < lut.size:
                lut[int(key)] = int(value)
        label = lut[label]
    top = int(label.max()) if label.size else 0
    if top >= classes:
        found = sorted(int(v) for v in np.unique(label) if v >= classes)
        raise LabelError(
            f"labels {source} hold class value(s) {found[:8]} but classes={classes} (values 0..{classes - 1});"
            " set classes to the number of classes including the background, or map the values with"
            " data.label_map"
        )
    return label


def _by_name(files: Sequence[ImageFile], key: str) -> dict[str, ImageFile]:
    out: dict[str, ImageFile] = {}
    for file in files:
        if file.name in out:
            raise PairError(f"{key}: {out[file.name].path} and {file.path} have the same name '{file.name}'")
        out[file.name] = file
    return out


def load_labelled(
    images: str | Sequence[str],
    labels: str | Sequence[str] | None,
    mode: str = "semantic",
    classes: int = 2,
    label_map: Mapping[int, int] | None = None,
    channel: int | str | None = None,
    in_channels: int = 1,
    percentiles: Sequence[float] = (1.0, 99.8),
    match: str = "stem",
    label_name: str | None = None,
) -> list[LabelledImage]:
    """Read, pair by name, normalise and check every image and mask (see the module docstring).

    Raises ``PairError`` for paths or pairs that do not fit and ``LabelError`` for bad masks, each naming
    the file and what was expected.
    """
    from psr.data.normalise import NormalisationError, normalise_frame

    if mode not in MODES:
        raise LabelError(f"data.mode={mode!r}; expected one of {', '.join(MODES)}")
    if mode == "semantic" and classes < 2:
        raise LabelError(f"classes={classes}; a semantic segmentation needs at least 2 (with the background)")
    out = []
    for file, label_file in paired_masks(images, labels, match, label_name):
        plane, label = read_pair(file, label_file, channel, in_channels)
        if mode == "semantic":
            label = map_classes(label, label_map, classes, str(label_file.path))
        try:
            image = normalise_frame(plane, tuple(percentiles), 0.0, f"image {file.path}")
        except NormalisationError as err:
            raise PairError(str(err)) from err
        out.append(LabelledImage(file.name, np.ascontiguousarray(image, dtype=np.float32), label))
    return out


def paired_masks(
    images: str | Sequence[str],
    labels: str | Sequence[str] | None,
    match: str = "stem",
    label_name: str | None = None,
) -> list[tuple[ImageFile, ImageFile]]:
    """Every image with its mask file, in natural name order: masks paired by name (``match="stem"``) or
    sorted order, or (``labels=None``) each OME-Zarr image's NGFF label image. Raises ``PairError``."""
    if match not in ("stem", "order"):
        raise PairError(f"data.match={match!r}; expected stem (masks named like their images) or order")
    image_list = list_images(images, "data.images")
    if labels is None:  # each OME-Zarr image's NGFF labels/ group
        label_list = [ngff_label(file, label_name) for file in image_list]
        match = "order"
    else:
        label_list = list_images(labels, "data.labels")
    if match == "order":
        if len(image_list) != len(label_list):
            raise PairError(
                f"data.images holds {len(image_list)} image(s) but data.labels {len(label_list)} mask(s);"
                " matched by sorted order they must be as many"
            )
        image_files = {f"{i:06d}": file for i, file in enumerate(image_list)}
        label_files = {f"{i:06d}": file for i, file in enumerate(label_list)}
    else:
        image_files = _by_name(image_list, "data.images")
        label_files = _by_name(label_list, "data.labels")
    missing = sorted(set(image_files) - set(label_files))
    if missing:
        raise PairError(
            f"{len(missing)} image(s) of data.images have no mask of the same name in data.labels, e.g."
            f" {missing[:3]}; expected one mask per image, named like it"
        )
    return [(image_files[name], label_files[name]) for name in sorted(image_files, key=_natural)]


def read_pair(
    file: ImageFile, label_file: ImageFile, channel: int | str | None = None, in_channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """An image ``(C, Y, X)`` float32 as stored and its checked raw mask ``(Y, X)`` int64."""
    planes, _ = read_planes(file, channel, 2, in_channels)
    if planes.shape[0] != 1:
        raise PairError(
            f"image {file.path} holds {planes.shape[0]} planes; expected one per mask (pick data.channel)"
        )
    label = read_label(label_file)
    if label.shape != planes.shape[-2:]:
        raise LabelError(
            f"labels {label_file.path} are {list(label.shape)} but image {file.path} is"
            f" {list(planes.shape[-2:])} (Y, X); expected a mask of the image's shape"
        )
    return planes[0], label


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``2`` before ``10``."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


class _Patches(Dataset[dict[str, torch.Tensor]]):
    """``length`` random square patches of ``size`` from ``items`` (chosen in proportion to their area),
    randomly flipped and rotated by multiples of 90°.

    Sample ``i`` of an :class:`~psr.data.patches.EpochSampler` (``epoch * length + index``) is drawn from
    ``(seed, epoch, index)`` alone, so patches do not depend on the number of loader workers and a run
    resumed mid-epoch continues with the patches the uninterrupted run would have seen."""

    def __init__(
        self, items: list[LabelledImage], size: int, length: int, augment: bool, seed: int = 0
    ) -> None:
        self.items = items
        self.size = size
        self.length = length
        self.augment = augment
        self.seed = int(seed)
        areas = np.array([it.label.size for it in items], dtype=np.float64)
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(int(i), self.length)
        rng = np.random.default_rng([self.seed, epoch, index])
        item = self.items[int(rng.choice(len(self.items), p=self.weights))]
        h, w = item.label.shape
        y = int(rng.integers(0, h - self.size + 1))
        x = int(rng.integers(0, w - self.size + 1))
        image = torch.from_numpy(item.image[:, y : y + self.size, x : x + self.size].copy())
        label = torch.from_numpy(item.label[y : y + self.size, x : x + self.size].copy())
        if self.augment:
            k = int(rng.integers(4))
            image, label = torch.rot90(image, k, (-2, -1)), torch.rot90(label, k, (-2, -1))
            if bool(rng.integers(2)):
                image, label = image.flip(-1), label.flip(-1)
        return {"image": image.contiguous(), "label": label.contiguous()}


class _Whole(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, items: list[LabelledImage]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        return {"image": torch.from_numpy(item.image), "label": torch.from_numpy(item.label)}


class LabelledDataModule(L.LightningDataModule):
    """Images with label masks for ``module=segmentation`` (see the module docstring).

    ``val_split="images"`` holds out the last ``val_fraction`` of the images (sorted by name, at least one);
    ``"rows"`` holds out the bottom ``val_fraction`` of every image's rows (a set of one or two images, such
    as the StarDist sample). ``val_samples`` caps the number of validation images (null: all).
    """

    def __init__(
        self,
        images: str | Sequence[str],
        labels: str | Sequence[str] | None = None,
        mode: str = "semantic",
        classes: int = 2,
        label_map: Mapping[int, int] | None = None,
        match: str = "stem",
        channel: int | str | None = None,
        in_channels: int = 1,
        percentiles: Sequence[float] = (1.0, 99.8),
        val_split: str = "images",
        val_fraction: float = 0.2,
        val_samples: int | None = None,
        patch_size: int = 256,
        batch_size: int = 8,
        samples_per_epoch: int = 512,
        augment: bool = True,
        num_workers: int | None = 0,
        pin_memory: bool | None = False,
        persistent_workers: bool | None = False,
        prefetch_factor: int | None = None,
        label_name: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if val_split not in VAL_SPLITS:
            raise ValueError(f"data.val_split={val_split!r}; expected one of {', '.join(VAL_SPLITS)}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction={val_fraction}; expected a fraction between 0 and 1")
        if patch_size < 8:
            raise ValueError(f"data.patch_size={patch_size}; expected at least 8 pixels")
        self.images = images
        self.labels = labels
        self.label_name = label_name
        self.seed = int(seed)
        self.mode = mode
        self.classes = int(classes)
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()} or None
        self.match = match
        self.channel = channel
        self.in_channels = int(in_channels)
        self.percentiles = tuple(float(p) for p in percentiles)
        self.val_split = val_split
        self.val_fraction = float(val_fraction)
        self.val_samples = val_samples
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.augment = augment
        self.num_workers = int(num_workers or 0)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.prefetch_factor = prefetch_factor if self.num_workers > 0 else None
        self.train_items: list[LabelledImage] = []
        self.val_items: list[LabelledImage] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        items = load_labelled(
            self.images,
            self.labels,
            self.mode,
            self.classes,
            self.label_map,
            self.channel,
            self.in_channels,
            self.percentiles,
            self.match,
            self.label_name,
        )
        self.train_items, self.val_items = self._split(items)
        if self.val_samples is not None:
            self.val_items = self.val_items[: int(self.val_samples)]
        small = [it for it in self.train_items if min(it.label.shape) < self.patch_size]
        if small:
            raise LabelError(
                f"training image {small[0].name} is {list(small[0].label.shape)} (after the validation split),"
                f" smaller than data.patch_size={self.patch_size}; pick a smaller patch"
            )

    def _split(self, items: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
        if self.val_split == "images":
            if len(items) < 2:
                raise LabelError(
                    f"data.val_split=images needs at least 2 labelled images, found {len(items)}; use"
                    " data.val_split=rows to hold out the bottom rows of each image"
                )
            n_val = min(len(items) - 1, max(1, math.ceil(self.val_fraction * len(items))))
            return items[:-n_val], items[-n_val:]
        train, val = [], []
        for it in items:
            cut = it.label.shape[0] - max(1, round(self.val_fraction * it.label.shape[0]))
            train.append(LabelledImage(it.name, it.image[:, :cut], it.label[:cut]))
            val.append(LabelledImage(f"{it.name}[rows {cut}:]", it.image[:, cut:], it.label[cut:]))
        return train, val

    @property
    def val_names(self) -> list[str]:
        return [it.name for it in self.val_items]

    def _loader(
        self, dataset: Dataset[Any], batch_size: int, sampler: Sampler[int] | None = None
    ) -> DataLoader[Any]:
        return (LateStartLoader if sampler is not None else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        dataset = _Patches(self.train_items, self.patch_size, self.samples_per_epoch, self.augment, self.seed)
        sampler = EpochSampler(
            self.samples_per_epoch, position=lambda: samples_done(self.trainer, self.batch_size)
        )
        return self._loader(dataset, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(_Whole(self.val_items), 1)
