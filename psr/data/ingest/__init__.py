"""Ingest microscopy images (TIFF, OME-TIFF, ImageJ hyperstacks, PNG/JPEG, zarr / OME-Zarr, and CZI / ND2 / LIF
with the ``formats`` extra) into one OME-Zarr store.

The output is a zarr v3 group holding one multiscale OME-Zarr image (NGFF 0.5) per source image, named after
the file stem, with the axes present (a subset of ``tczyx`` in that order), physical pixel sizes, chunks
suited to patch reads, zstd compression and ``omero`` rendering metadata (channel names, colours, contrast
limits). The root is a bioformats2raw-style collection (``OME/`` lists the images, so viewers open the
store from its root) and its attributes carry a dataset manifest under ``"psr"``::

    {"manifest": {"version": 1,
                  "images": {"<name>": {"source": "<path>", "split": "train|val|test", "role": "clean|low|high"}},
                  "pairs": [{"low": "<name>", "high": "<name>", "scale": 1, "split": "val"}]},
     "ingest": {"fingerprint": "<sha256>", "options": {...}}}

Sources are read through ``psr.io``'s reader table; conversion is chunked (one band of chunk rows at a time,
written with ``psr.io.writer.OmeZarrWriter``), so memory is bounded by a band, never by the image (PNG / JPEG
are decoded whole). Metadata is validated before any pixel is written, pixels (NaN / Inf, corrupt strips)
while writing; the store is written under a temporary name beside the output and renamed when complete.

The package's modules follow the work: ``options`` (what may be asked), ``manifest`` (which files),
``plan`` (names, layouts, splits, checked before writing) and ``write`` (the store).
"""

import warnings
from typing import Any

from psr.data.ingest.manifest import (
    ImageEntry,
    Manifest,
    PairEntry,
    expand_source,
    fingerprint,
    load_manifest,
    manifest_from_mapping,
)
from psr.data.ingest.options import IngestError, IngestOptions, parse_channel, parse_chunks, unit_option
from psr.data.ingest.plan import IngestPlan, Layout, open_source, plan, plan_layout, read_block, sanitize_name
from psr.data.ingest.write import (
    BLOCK_BYTES,
    IngestResult,
    ensure_ingested,
    ingest,
    plan_bands,
    recorded_fingerprint,
    write_image,
)

__all__ = [
    "BLOCK_BYTES",
    "ImageEntry",
    "IngestError",
    "IngestOptions",
    "IngestPlan",
    "IngestResult",
    "Layout",
    "Manifest",
    "PairEntry",
    "ensure_ingested",
    "expand_source",
    "fingerprint",
    "ingest",
    "load_manifest",
    "manifest_from_mapping",
    "open_source",
    "parse_channel",
    "parse_chunks",
    "plan",
    "plan_bands",
    "plan_layout",
    "read_block",
    "recorded_fingerprint",
    "sanitize_name",
    "unit_option",
    "write_image",
]


def __getattr__(name: str) -> Any:
    """``normalize_unit``, the former spelling of :func:`unit_option` (with a warning)."""
    if name == "normalize_unit":
        warnings.warn(
            "psr.data.ingest.normalize_unit is deprecated; use unit_option (or psr.io.units.normalise_unit)",
            DeprecationWarning,
            stacklevel=2,
        )
        return unit_option
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
