"""napari reader for psr's zarr stores: ingest stores (several OME-Zarr images in one store) and
predictions (one OME-Zarr image), without napari itself (layer data are plain tuples).

Every image found under the path (``psr.io.omezarr.discover_images``: an OME-Zarr image, a group of
them at any depth up to 3, or a bare zarr array) becomes one image layer, or one per channel: all its
resolution levels (lazy zarr arrays, so large stores open at once), its physical pixel size as the
layer scale, channel names and contrast limits from ``omero`` metadata where the store has them, and
psr's attributes (checkpoint, normalisation...) in the layer metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zarr

from psr.io.omezarr import ImageRef, discover_images

__all__ = ["LayerData", "napari_get_reader", "read_zarr", "layer_data"]

LayerData = tuple[Any, dict[str, Any], str]
"""napari's layer data tuple: ``(data, keyword arguments of add_image, "image")``."""


def _is_zarr(path: str) -> bool:
    p = Path(path)
    markers = ("zarr.json", ".zgroup", ".zarray")
    return p.is_dir() and any((p / m).exists() for m in markers)


def napari_get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """``read_zarr`` when every path is a local zarr store (v2 or v3), else None (napari asks others)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_is_zarr(str(p)) for p in paths):
        return None
    return read_zarr


def read_zarr(path: str | Sequence[str]) -> list[LayerData]:
    """One layer data tuple per image in each store; raises ``ValueError`` for a store without images."""
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        for ref in discover_images(str(p)):
            layers.append(layer_data(ref))
    return layers


def _multiscales(attrs: dict[str, Any]) -> dict[str, Any] | None:
    ome = attrs.get("ome")
    found = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    return found[0] if found else None


def _omero(attrs: dict[str, Any]) -> dict[str, Any]:
    ome = attrs.get("ome")
    omero = ome.get("omero") if isinstance(ome, dict) and "omero" in ome else attrs.get("omero")
    return omero if isinstance(omero, dict) else {}


def _contrast_limits(channels: list[Any], n: int) -> list[list[float]] | None:
    """The ``omero`` display windows of the first ``n`` channels, or None unless each has a valid one."""
    windows = [ch.get("window") or {} for ch in channels[:n]] if len(channels) >= n else []
    if windows and all("start" in w and "end" in w and w["end"] > w["start"] for w in windows):
        return [[float(w["start"]), float(w["end"])] for w in windows]
    return None


def layer_data(ref: ImageRef) -> LayerData:
    """The layer of one image: its levels, scale (per axis but the channel axis), name, channels."""
    store_name = Path(ref.store).name
    name = f"{store_name}/{ref.image_path}" if ref.image_path else store_name
    root: Any = zarr.open(ref.store, mode="r")
    node = root[ref.image_path] if ref.image_path else root
    attrs: dict[str, Any] = dict(node.attrs) if isinstance(node, zarr.Group) else {}
    multiscales = _multiscales(attrs)
    if multiscales is not None and isinstance(node, zarr.Group):
        levels = [node[d["path"]] for d in multiscales["datasets"]]
        units = {
            str(ax.get("name", ""))[:1]: ax.get("unit") for ax in multiscales["axes"] if isinstance(ax, dict)
        }
    else:
        levels = [ref.open()]
        units = {}
    axes = ref.axes
    scale = [float(ref.pixel_size.get(a, 1.0)) for a in axes]
    kwargs: dict[str, Any] = {"name": name, "multiscale": len(levels) > 1}
    metadata: dict[str, Any] = {"path": str(Path(ref.store) / ref.image_path), "axes": axes}
    if "psr" in attrs:
        metadata["psr"] = attrs["psr"]
    unit = next((u for a, u in units.items() if a in "zyx" and u), None)
    if unit:
        metadata["unit"] = unit
    if "c" in axes:
        c = axes.index("c")
        kwargs["channel_axis"] = c
        del scale[c]
        channels = _omero(attrs).get("channels") or []
        n = int(ref.shape[c])
        labels = [str(ch.get("label") or "") for ch in channels[:n]] if len(channels) >= n else []
        kwargs["name"] = [f"{name} {label or f'c{i}'}" for i, label in enumerate(labels or [""] * n)]
        if n == 1:
            kwargs["name"] = [name if not labels or not labels[0] else f"{name} {labels[0]}"]
        limits = _contrast_limits(channels, n)
        if limits is not None:
            kwargs["contrast_limits"] = limits
    else:  # one channel without a c axis: its single omero entry still sets the display window
        channels = _omero(attrs).get("channels") or []
        limits = _contrast_limits(channels, 1) if len(channels) == 1 else None
        if limits is not None:
            kwargs["contrast_limits"] = limits[0]
    kwargs["scale"] = scale
    kwargs["metadata"] = metadata
    data: Any = levels if len(levels) > 1 else levels[0]
    return data, kwargs, "image"
