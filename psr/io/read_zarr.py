"""zarr arrays and OME-Zarr images (NGFF 0.4 / 0.5), one ``Source`` per image of a store.

The images of a store are listed by ``psr.io.omezarr.discover_images`` (the same listing training reads);
each is read through its full-resolution zarr array. Units and channel names come from the multiscales and
``omero`` metadata; a scale of 1 without a unit is no physical size.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, cast

import numpy as np

from psr.errors import DataError
from psr.io.metadata import ImageMetadata
from psr.io.omezarr import ImageRef, discover_images, open_node
from psr.io.source import BlockReader, Source
from psr.io.units import normalise_unit

SUFFIXES = (".zarr",)


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr store folder (a ``.zarr`` name or zarr metadata in it)."""
    return path.is_dir() and (
        path.suffix == ".zarr" or any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))
    )


def _image_attrs(ref: ImageRef) -> dict[str, Any]:
    """The attributes of the OME-Zarr image group holding ``ref`` (``{}`` for a bare array)."""
    if not ref.array_path:
        return {}
    parent = ref.array_path.rsplit("/", 1)[0] if "/" in ref.array_path else ""
    try:
        attrs: dict[str, Any] = dict(open_node(ref.store, parent, ref.storage_options, kind="group").attrs)
    except Exception:  # noqa: BLE001 - metadata is optional
        return {}
    return cast(dict[str, Any], attrs.get("ome") or attrs)


def _metadata(ref: ImageRef, attrs: dict[str, Any]) -> ImageMetadata:
    multiscales = attrs.get("multiscales") or []
    unit = None
    for ax in (multiscales[0] if multiscales else {}).get("axes", []):
        if isinstance(ax, dict) and ax.get("type") == "space" and ax.get("unit"):
            unit = normalise_unit(str(ax["unit"]), f"{ref.store} metadata", strict=False)
            break
    channels = ((attrs.get("omero") or {}).get("channels")) or []
    names = tuple(str(c.get("label", "")) for c in channels if isinstance(c, dict))
    sizes = dict(ref.pixel_size)
    if unit is None and all(v == 1.0 for v in sizes.values()):
        sizes = {}  # scale 1 without a unit: no physical size known
    return ImageMetadata(sizes, unit, names if all(names) else ())


def ref_metadata(ref: ImageRef) -> ImageMetadata:
    """The pixel size, unit and channel names of an image of a local zarr store (as ``read_zarr`` gives
    them): what training records in its checkpoints."""
    return _metadata(ref, _image_attrs(ref))


def read_zarr(path: Path, source: str) -> list[Source]:
    """The images of a zarr store: named after their groups (the store's stem for a single image)."""

    try:
        refs = discover_images(path)
    except (ValueError, FileNotFoundError, OSError, KeyError) as err:
        raise DataError(f"{path}: not a readable zarr store ({err})") from None
    stem = path.name.removesuffix(".zarr").removesuffix(".ome")
    images = []
    for ref in refs:

        def opener(ref: ImageRef = ref) -> contextlib.AbstractContextManager[BlockReader]:
            return contextlib.nullcontext(cast(BlockReader, ref.open()))

        attrs = _image_attrs(ref)
        meta = _metadata(ref, attrs)
        # an OME-Zarr image's array path ends in its level (".../s0"): name the image after its group
        parts = [p for p in ref.array_path.split("/") if p]
        name_parts = parts[:-1] if attrs.get("multiscales") else parts
        sizes, unit, names = meta.pixel_size, meta.unit, meta.channel_names
        images.append(
            Source(
                path=path,
                name="_".join(name_parts) if name_parts else stem,
                native_axes=ref.axes.lower(),
                shape=tuple(ref.shape),
                dtype=np.dtype(ref.dtype),
                pixel_size=sizes,
                unit=unit,
                opener=opener,
                channel_names=names,
                source=f"{source}/{ref.array_path}" if len(refs) > 1 else source,
                where=ref.name,
            )
        )
    return images
