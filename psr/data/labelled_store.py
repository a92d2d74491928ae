"""Labelled images written as one OME-Zarr store, as NGFF defines labelled data: each image a multiscale
group and its mask in the image's ``labels/<name>`` group with ``image-label`` metadata. ``data=labelled``
reads such a store with ``data.labels=null`` (:mod:`psr.data.labelled`); ``psr ingest IMAGES --labels
MASKS`` writes one (:func:`ingest_labelled`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from psr.atomic import durable_replace
from psr.data.labelled import LabelError, _check_integer, paired_masks, read_pair
from psr.data.pairs import PairError


def write_labelled_store(
    path: str | os.PathLike[str],
    names: Sequence[str],
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    axes: str = "yx",
    label_name: str = "masks",
    pixel_size: dict[str, float] | None = None,
) -> Path:
    """Images and their masks as one OME-Zarr store (NGFF 0.5): each image a multiscale group, its mask
    ``(Y, X)`` integer in the image's ``labels/<label_name>`` group with ``image-label`` metadata (one
    resolution level: masks are not averaged). Written under a temporary name, renamed when complete.

    Raises ``LabelError`` for a mask that is not an integer ``(Y, X)`` plane of its image's size.
    """
    import zarr

    from psr.io.omezarr import write_ome_zarr_collection
    from psr.io.writer import OmeZarrWriter

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    for name, image, label in zip(names, images, labels, strict=True):
        if label.ndim != 2 or label.shape != image.shape[-2:]:
            raise LabelError(
                f"labels of {name} are {list(label.shape)} but the image is {list(image.shape)} ({axes});"
                " expected one integer (Y, X) mask of the image's Y and X size"
            )
        _check_integer(label, name)
    tmp = path.with_name(f".{path.name}.labelled-{uuid.uuid4().hex[:8]}")
    write_ome_zarr_collection(tmp, images, axes, names=names, pixel_size=pixel_size, levels=1)
    try:
        for name, label in zip(names, labels, strict=True):
            group = zarr.open_group(str(tmp), path=name, mode="r+").create_group("labels")
            group.attrs["ome"] = {"version": "0.5", "labels": [label_name]}
            spatial = {ax: float(v) for ax, v in (pixel_size or {}).items() if ax in "yx"}
            mask = np.asarray(label)
            dtype = mask.dtype if np.issubdtype(mask.dtype, np.integer) else np.dtype(np.uint32)
            writer = OmeZarrWriter(
                group.create_group(label_name),
                "yx",
                mask.shape,
                dtype,
                name=label_name,
                levels=1,
                pixel_size=spatial,
                unit="micrometer" if spatial else None,
            )
            writer.write({}, mask.astype(dtype, copy=False))
            ome: dict[str, Any] = dict(cast(Mapping[str, Any], writer.group.attrs.get("ome") or {}))
            ome["image-label"] = {"source": {"image": "../../"}}  # NGFF: the image two levels up
            writer.group.attrs["ome"] = ome
        durable_replace(tmp, path)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def ingest_labelled(
    images: str | Sequence[str],
    labels: str | Sequence[str],
    out: str | os.PathLike[str],
    match: str = "stem",
    channel: int | str | None = None,
    label_name: str = "masks",
    pixel_size: float | None = None,
) -> Path:
    """Images (PNG / TIFF / zarr, through psr's readers) and their masks, paired as ``data=labelled`` pairs
    them and checked, into one OME-Zarr store at ``out`` with each mask in its image's NGFF ``labels/``
    group (:func:`write_labelled_store`); train from it with ``data.images=<out>`` and ``data.labels=null``.
    Images keep their values (as float32); ``pixel_size`` (micrometres) sets Y and X."""
    names, planes, masks = [], [], []
    for file, label_file in paired_masks(images, labels, match):
        plane, label = read_pair(file, label_file, channel, 1)
        names.append(file.name.replace("/", "_"))
        planes.append(plane)
        masks.append(label.astype(np.uint32 if label.max(initial=0) > 65535 else np.uint16))
    if len(set(names)) != len(names):
        raise PairError(f"images {names} do not have distinct names; expected one name per image")
    size = {"y": float(pixel_size), "x": float(pixel_size)} if pixel_size else None
    return write_labelled_store(out, names, planes, masks, axes="cyx", label_name=label_name, pixel_size=size)
