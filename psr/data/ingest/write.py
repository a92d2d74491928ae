"""Ingest writing: each planned image converted band by band into the store through the one streaming
OME-Zarr writer (``psr.io.writer``), under a temporary name renamed into place when complete."""

from __future__ import annotations

import math
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from psr.atomic import durable_replace
from psr.data.ingest.manifest import Manifest
from psr.data.ingest.options import IngestError, IngestOptions
from psr.data.ingest.plan import IngestPlan, Layout, _prepare, plan, read_block
from psr.errors import DataError
from psr.io import Source
from psr.io.writer import OmeZarrWriter, write_collection_root

BLOCK_BYTES = 32 * 2**20  # pixels read and written at once (per band), whatever the image size


def _check_finite(block: np.ndarray, img: Source, layout: Layout, region: dict[str, slice]) -> None:
    if block.dtype.kind != "f" or np.isfinite(block).all():
        return
    bad = np.argwhere(~np.isfinite(block))[0]
    where = {a: int(i) + (region[a].start or 0) for a, i in zip(layout.axes, bad, strict=True)}
    value = block[tuple(bad)]
    raise IngestError(
        f"{img.path}: found {value} at {', '.join(f'{a}={v}' for a, v in where.items())} (expected finite values, no NaN or Inf)"
    )


def _channel_names(names: tuple[str, ...], layout: Layout) -> tuple[str, ...]:
    """The names of the channels written: all of them, the one ``--channel N`` keeps, or the single
    channel of an image without a channel axis; none for ``--channel max`` / ``mean``."""
    if isinstance(layout.channel, int) and not isinstance(layout.channel, bool):
        return (names[layout.channel],) if layout.channel < len(names) else ()
    if layout.channel is None and ("c" in layout.axes or len(names) == 1):
        return names
    return ()


def write_image(
    root: zarr.Group,
    name: str,
    img: Source,
    layout: Layout,
    levels: int,
    on_rows: Callable[[int, int], None] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> int:
    """Write one image as a multiscale OME-Zarr group under ``root``, one band of chunk rows at a time.

    Bands come from ``plan_bands``: memory is bounded by ``block_bytes`` (or one chunk row where that is
    larger), never by the image. Returns the bytes written at level 0 (uncompressed).
    """
    kept = [a for a in layout.axes if a != "c"]
    names = _channel_names(img.channel_names, layout)
    writer = OmeZarrWriter(
        root.create_group(name),
        layout.axes,
        layout.shape,
        layout.dtype,
        name=name,
        levels=levels,
        chunks=layout.chunks,
        pixel_size={a: v for a, v in layout.pixel_size.items() if a in kept},
        unit=layout.unit,
        channel_names=names,
    )
    bands = plan_bands(layout, levels, block_bytes)
    with img:
        for done, region in enumerate(bands, start=1):
            try:
                block = read_block(img, layout, region)
            except IngestError:
                raise
            except DataError as err:  # the reader's own sentence (a corrupt PNG, a truncated file)
                raise IngestError(str(err)) from None
            except Exception as err:
                raise IngestError(
                    f"{img.path}: failed to read pixels ({type(err).__name__}: {err}); the file is truncated or corrupt"
                ) from None
            _check_finite(block, img, layout, region)
            writer.write(region, block)
            if on_rows is not None:
                on_rows(done, len(bands))
    writer.close()
    return math.prod(layout.shape) * layout.dtype.itemsize


def plan_bands(layout: Layout, levels: int, block_bytes: int = BLOCK_BYTES) -> list[dict[str, slice]]:
    """The regions (slices per output axis) an image is converted in, each read and written at once.

    A band spans every column, a whole number of chunks along every other axis, and a row count that keeps
    every pyramid level aligned (a multiple of ``2**(levels-1)``). Bands grow (more rows, then more planes
    along t / c / z) while they stay under ``block_bytes``; the smallest band is one chunk row.
    """
    axes, shape = layout.axes, layout.shape
    size = dict(zip(axes, shape, strict=True))
    chunk = dict(zip(axes, layout.chunks, strict=True))
    outer = [a for a in axes if a not in "yx"]
    extent = {a: chunk[a] for a in outer}
    row_bytes = size["x"] * layout.dtype.itemsize * math.prod(extent.values())
    base = math.lcm(chunk["y"], 2 ** (levels - 1))
    rows = base * max(1, block_bytes // (row_bytes * base))
    if rows >= size["y"]:
        rows = size["y"]
        for a in reversed(outer):  # whole planes fit: take more of the axes nearest to y
            band_bytes = rows * size["x"] * layout.dtype.itemsize * math.prod(extent.values())
            extent[a] = min(extent[a] * max(1, block_bytes // max(band_bytes, 1)), size[a])
            if extent[a] < size[a]:
                break
    ranges = [[slice(s, min(s + extent[a], size[a])) for s in range(0, size[a], extent[a])] for a in outer]
    bands = []
    for outer_index in _product(ranges):
        for y0 in range(0, size["y"], rows):
            region = dict(zip(outer, outer_index, strict=True))
            region["y"] = slice(y0, min(y0 + rows, size["y"]))
            region["x"] = slice(0, size["x"])
            bands.append(region)
    return bands


def _product(ranges: list[list[slice]]) -> Iterator[tuple[slice, ...]]:
    if not ranges:
        yield ()
        return
    for first in ranges[0]:
        for rest in _product(ranges[1:]):
            yield (first, *rest)


@dataclass(frozen=True)
class IngestResult:
    path: Path
    up_to_date: bool  # the store existed with the same fingerprint: nothing was written
    n_images: int
    bytes: int  # uncompressed bytes of level 0 written


def recorded_fingerprint(path: Path) -> str | None:
    """The ingest fingerprint stored in a store's root attributes, or None when there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attrs: dict[str, Any] = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:
        return None
    value = (attrs.get("psr") or {}).get("ingest", {}).get("fingerprint")
    return str(value) if value else None


class _Progress:
    """A rich progress bar: one row for images, one for the current image's chunk rows."""

    def __init__(self, enabled: bool, n_images: int) -> None:
        self.progress: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self.images = self.progress.add_task("images", total=n_images)
        self.rows = self.progress.add_task("chunk rows", total=1)

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def image(self, name: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        self.progress.update(self.rows, completed=0, total=1, description=f"  {name}")

        def rows(done: int, total: int) -> None:
            self.progress.update(self.rows, completed=done, total=total)

        return rows

    def image_done(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.images)


def _write_store(output: Path, the_plan: IngestPlan, levels: int, progress: bool, block_bytes: int) -> int:
    tmp = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    written = 0
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        with _Progress(progress, len(the_plan.images)) as bar:
            for p in the_plan.images:
                written += write_image(
                    root, p.name, p.image, p.layout, levels, bar.image(p.name), block_bytes
                )
                bar.image_done()
        write_collection_root(root, [p.name for p in the_plan.images])
        root.attrs.update(the_plan.attributes())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(str(tmp))
        if output.exists() and recorded_fingerprint(output) == the_plan.fingerprint:
            # Another process (a parallel job of a sweep) finished the same store meanwhile: keep theirs, which
            # its readers may already be using, rather than swapping it under them.
            shutil.rmtree(tmp, ignore_errors=True)
            return written
        trash = None
        if output.exists() or output.is_symlink():
            trash = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(output, trash)
        try:
            durable_replace(tmp, output)
        except OSError:
            if trash is not None:
                os.replace(trash, output)  # the previous store is back; this write did not happen
            raise
        if trash is not None:
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def ingest(
    sources: Sequence[str | Path] | None,
    output: str | Path,
    *,
    manifest: str | Path | Manifest | None = None,
    options: IngestOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
    block_bytes: int = BLOCK_BYTES,
) -> IngestResult:
    """Convert ``sources`` (or a manifest's images and pairs) into one OME-Zarr store at ``output``.

    Idempotent: when ``output`` exists with the same fingerprint nothing is written (``up_to_date``); with
    a different one it is an error unless ``overwrite``. Raises ``IngestError`` for any bad input, before
    the store appears.
    """
    options = options or IngestOptions()
    output = Path(output).expanduser()
    items, pairs, fp, recorded = _prepare(sources, manifest, options, exclude=[output])
    if output.exists():
        found = recorded_fingerprint(output)
        if found == fp:
            return IngestResult(output, True, 0, 0)
        if not overwrite:
            why = "was ingested from other sources or options" if found else "is not a psr ingest store"
            raise IngestError(f"output {output} already exists and {why}; pass --overwrite to replace it")
    the_plan = plan(items, pairs, fp, recorded, options)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = _write_store(output, the_plan, options.levels, progress, block_bytes)
    return IngestResult(output, False, len(the_plan.images), written)


def ensure_ingested(sources: Sequence[str], cache_dir: str | Path, **options: Any) -> Path:
    """Ingest ``sources`` once into ``cache_dir/ingest-<hash>.ome.zarr`` and return that path.

    ``options`` are ``IngestOptions`` fields (``pixel_size=0.1``, ``channel="max"``...) plus ``manifest``
    and ``progress``. The hash covers the sources' paths, sizes and mtimes and the options, so an edited
    file or a changed option gives a new store.
    """
    manifest = options.pop("manifest", None)
    progress = bool(options.pop("progress", False))
    block_bytes = int(options.pop("block_bytes", BLOCK_BYTES))
    if "chunks" in options and options["chunks"] is not None:
        options["chunks"] = tuple(options["chunks"])
    unknown = sorted(set(options) - set(IngestOptions.__dataclass_fields__))
    if unknown:
        raise IngestError(
            f"unknown ingest option(s) {', '.join(unknown)} (expected {', '.join(IngestOptions.__dataclass_fields__)})"
        )
    opts = IngestOptions(**options)
    cache = Path(cache_dir).expanduser()
    _items, _pairs, fp, _recorded = _prepare(list(sources), manifest, opts, exclude=[cache])
    path = cache / f"ingest-{fp[:16]}.ome.zarr"
    if path.exists() and recorded_fingerprint(path) == fp:
        return path
    return ingest(
        list(sources),
        path,
        manifest=manifest,
        options=opts,
        overwrite=True,
        progress=progress,
        block_bytes=block_bytes,
    ).path
