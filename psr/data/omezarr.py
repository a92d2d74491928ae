"""Reading and writing images as OME-Zarr (NGFF) with zarr v3.

An *image source* is one multiscale OME-Zarr image (NGFF 0.4 or 0.5), a bare zarr array, or a zarr
group / folder holding several of them. ``discover_images`` flattens any of these into a list of
``ImageRef`` records that name the full-resolution array and its axes, without reading pixel data.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from ome_zarr.writer import write_image

AXES_ORDER = "tczyx"


@dataclass(frozen=True)
class ImageRef:
    """One image inside a zarr store: where its full-resolution array lives and what its axes are."""

    store: str  # path of the zarr store root (a folder)
    array_path: str  # path of the array inside the store ("" for a bare array at the root)
    axes: str  # e.g. "cyx", "tczyx": one letter per array axis
    shape: tuple[int, ...]
    dtype: str
    pixel_size: dict[str, float]  # physical size per spatial axis where the metadata has it

    @property
    def name(self) -> str:
        return f"{self.store}/{self.array_path}".rstrip("/")

    def open(self) -> zarr.Array:
        if not self.array_path:
            return zarr.open_array(self.store, mode="r")
        return _array(zarr.open_group(self.store, mode="r"), self.array_path)


def _array(group: zarr.Group, key: str) -> zarr.Array:
    node = group[key]
    if not isinstance(node, zarr.Array):
        raise ValueError(f"{group.store_path}/{key} is a zarr group where an array was expected")
    return node


def _group(group: zarr.Group, key: str) -> zarr.Group:
    node = group[key]
    if not isinstance(node, zarr.Group):
        raise ValueError(f"{group.store_path}/{key} is a zarr array where a group was expected")
    return node


def _ome_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    if "ome" in attrs and isinstance(attrs["ome"], dict) and "multiscales" in attrs["ome"]:
        return list(attrs["ome"]["multiscales"])  # NGFF 0.5
    if "multiscales" in attrs:
        return list(attrs["multiscales"])  # NGFF 0.4
    return None


def _default_axes(ndim: int) -> str:
    if ndim < 2 or ndim > 5:
        raise ValueError(f"expected an array with 2 to 5 axes, got {ndim}")
    return {2: "yx", 3: "cyx", 4: "czyx", 5: "tczyx"}[ndim]


def _refs_in(store: str, group: zarr.Group, prefix: str, depth: int) -> Iterator[ImageRef]:
    multiscales = _ome_multiscales(dict(group.attrs))
    if multiscales:
        ms = multiscales[0]
        axes = "".join(str(ax["name"] if isinstance(ax, dict) else ax)[0] for ax in ms["axes"])
        level0 = ms["datasets"][0]
        path = f"{prefix}/{level0['path']}".strip("/")
        arr = _array(group, level0["path"])
        pixel_size: dict[str, float] = {}
        for transform in level0.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                for ax, value in zip(axes, transform["scale"], strict=False):
                    if ax in "zyx":
                        pixel_size[ax] = float(value)
        yield ImageRef(store, path, axes, tuple(arr.shape), str(arr.dtype), pixel_size)
        return
    if depth > 3:
        return
    for name in sorted(group.group_keys()):
        yield from _refs_in(store, _group(group, name), f"{prefix}/{name}".strip("/"), depth + 1)
    for name in sorted(group.array_keys()):
        arr = _array(group, name)
        yield ImageRef(
            store,
            f"{prefix}/{name}".strip("/"),
            _default_axes(arr.ndim),
            tuple(arr.shape),
            str(arr.dtype),
            {},
        )


def discover_images(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[ImageRef]:
    """List every image under ``paths`` (OME-Zarr images, bare arrays, or groups/folders of them).

    Raises ``FileNotFoundError`` naming the path when it does not exist and ``ValueError`` when it holds
    no image.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    refs: list[ImageRef] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"data path '{raw}' does not exist (expected an OME-Zarr image, a zarr array, or a folder of them)"
            )
        found: list[ImageRef] = []
        candidates = (
            [path]
            if (path / "zarr.json").exists() or (path / ".zgroup").exists() or (path / ".zarray").exists()
            else sorted(p for p in path.iterdir() if p.is_dir() and p.suffix == ".zarr")
        )
        for candidate in candidates:
            node = zarr.open(str(candidate), mode="r")
            if isinstance(node, zarr.Array):
                found.append(
                    ImageRef(
                        str(candidate), "", _default_axes(node.ndim), tuple(node.shape), str(node.dtype), {}
                    )
                )
            else:
                found.extend(_refs_in(str(candidate), node, "", 0))
        if not found:
            raise ValueError(
                f"data path '{raw}' holds no zarr image (expected an OME-Zarr image, a zarr array, or a folder of them)"
            )
        refs.extend(found)
    return refs


def write_ome_zarr_collection(
    path: str | os.PathLike[str],
    images: Sequence[np.ndarray],
    axes: str,
    *,
    names: Sequence[str] | None = None,
    pixel_size: dict[str, float] | None = None,
    unit: str = "micrometer",
    chunks: Sequence[int] | None = None,
    attributes: dict[str, Any] | None = None,
) -> Path:
    """Write ``images`` as OME-Zarr images (NGFF 0.5, zstd) under one zarr group at ``path``, atomically.

    The store is written under a temporary name beside ``path`` and renamed when complete, so a crash
    never leaves a store that looks finished. Each image gets a 2-level pyramid for viewers (napari,
    Fiji via its OME-Zarr reader); training reads level 0.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    names = list(names) if names is not None else [f"img_{i:03d}" for i in range(len(images))]
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        root = zarr.open_group(str(tmp), mode="w")
        if attributes:
            root.attrs.update(attributes)
        for name, image in zip(names, images, strict=True):
            if image.ndim != len(axes):
                raise ValueError(f"image {name} has {image.ndim} axes but axes='{axes}'")
            group = root.create_group(name)
            spatial = {ax: float(v) for ax, v in (pixel_size or {}).items() if ax in axes}
            scale = {ax: spatial.get(ax, 1.0) for ax in axes} if spatial else None
            write_image(
                image,
                group,
                scale_factors=(2,),
                axes=axes,
                scale=scale,
                axes_units={ax: unit for ax in spatial} or None,
                storage_options={"chunks": tuple(chunks)} if chunks else None,
                name=name,
            )
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():
                raise
            # Another process finished the same store first: keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
