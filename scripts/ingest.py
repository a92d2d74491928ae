"""Convert microscopy images into one OME-Zarr store that ``data.path`` can point at.

    python scripts/ingest.py ../shared/data/clean/w2s_avg400_train -o data/w2s.ome.zarr --val-fraction 0.1
    python scripts/ingest.py stack.ome.tif -o data/stack.ome.zarr --chunks 16,256,256
    python scripts/ingest.py --manifest dataset.yaml -o data/dataset.ome.zarr
    python scripts/ingest.py images/ --labels masks/ -o data/nuclei.ome.zarr    # segmentation: NGFF labels/

Sources are TIFF (multi-page, OME-TIFF, ImageJ hyperstacks), PNG / JPEG, folders, globs and zarr / OME-Zarr
stores. Re-running with the same sources and options does nothing; bad input prints one ``error: ...``
line on stderr and exits with code 2, leaving no store behind. The logic lives in ``psr.data.ingest``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Ingest TIFF / PNG / JPEG / zarr images into one OME-Zarr (NGFF 0.5) store with a train/val/test manifest.",
    )
    p.add_argument("sources", nargs="*", help="image files, folders, globs (quote them) or zarr stores")
    p.add_argument(
        "-o", "--output", required=True, help="the OME-Zarr store to write (e.g. data/name.ome.zarr)"
    )
    p.add_argument(
        "--labels",
        help="label masks (files, folder, glob) for segmentation: each mask goes into its image's NGFF labels/"
        " group (train with data=labelled data.images=<output> data.labels=null)",
    )
    p.add_argument(
        "--match",
        choices=("stem", "order"),
        default="stem",
        help="with --labels: masks named like their images (stem) or paired in sorted order",
    )
    p.add_argument(
        "--label-name", default="masks", help="with --labels: the label image's name (default masks)"
    )
    p.add_argument("--manifest", help="YAML manifest with images: (and splits) and pairs: (low/high/scale)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of images without a split for val")
    p.add_argument(
        "--test-fraction", type=float, default=0.0, help="share of images without a split for test"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random split by image")
    p.add_argument("--pixel-size", type=float, help="Y/X pixel size in --unit (overrides the metadata)")
    p.add_argument("--z-spacing", type=float, help="Z step in --unit (overrides the metadata)")
    p.add_argument(
        "--unit", help="unit of the sizes (micrometer, nanometer, um, nm...); metadata is converted"
    )
    p.add_argument("--axes", help="source axes, one letter of tczyx per axis (e.g. zyx for a plain stack)")
    p.add_argument("--channel", help="where an image has several channels: keep channel N, or max / mean")
    p.add_argument(
        "--single-channel", action="store_true", help="an image with several channels (RGB) is an error"
    )
    p.add_argument(
        "--chunks", help="chunk sizes of (z,) y, x, e.g. 256,256 or 16,256,256 (default 16,256,256)"
    )
    p.add_argument("--min-size", type=int, default=16, help="smallest Y and X accepted (default 16)")
    p.add_argument("--levels", type=int, default=2, help="pyramid levels, level 0 full size (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an output ingested from other inputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def ingest_labels(args: argparse.Namespace) -> Path:
    """Images and their masks into one OME-Zarr store (``psr.data.labelled_store.ingest_labelled``); an existing
    store is replaced only with --overwrite, and only once the new one is complete."""
    import os
    import shutil
    import uuid

    from psr.data.ingest import IngestError
    from psr.data.labelled_store import ingest_labelled
    from psr.io.units import convert, normalise_unit

    if args.manifest or not args.sources:
        raise IngestError(
            "--labels needs the images as sources (not --manifest): psr ingest IMAGES --labels MASKS"
        )
    out = Path(args.output)
    target = out
    if out.exists():
        if not args.overwrite:
            raise IngestError(f"{out} already exists; pass --overwrite to replace it")
        target = out.with_name(f".{out.name}.new-{uuid.uuid4().hex[:8]}")
    pixel = args.pixel_size
    if pixel is not None and args.unit is not None:  # the store's sizes are in micrometres
        pixel = convert(pixel, normalise_unit(args.unit), "micrometer")
    channel = None
    if args.channel is not None:
        from psr.data.ingest import parse_channel

        channel = parse_channel(args.channel)
    sources = args.sources[0] if len(args.sources) == 1 else list(args.sources)
    ingest_labelled(sources, args.labels, target, args.match, channel, args.label_name, pixel)
    if target != out:
        shutil.rmtree(out)
        os.replace(target, out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.labels:
        return _main_labels(args)
    from psr.data.ingest import IngestError, IngestOptions, ingest, parse_channel, parse_chunks
    from psr.faults import interrupt_exit_code, interrupt_name, os_error_sentence, stop_on_sigterm

    try:
        if args.sources and args.manifest:
            raise IngestError(
                "give either sources or --manifest, not both (list extra images in the manifest)"
            )
        options = IngestOptions(
            pixel_size=args.pixel_size,
            z_spacing=args.z_spacing,
            unit=args.unit,
            axes=args.axes,
            channel=parse_channel(args.channel) if args.channel is not None else None,
            single_channel=args.single_channel,
            chunks=parse_chunks(args.chunks) if args.chunks else None,
            min_size=args.min_size,
            levels=args.levels,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
        start = time.perf_counter()
        with stop_on_sigterm():  # SIGTERM (kill, SLURM) cleans up like Ctrl-C
            result = ingest(
                args.sources or None,
                args.output,
                manifest=args.manifest,
                options=options,
                overwrite=args.overwrite,
                progress=not args.quiet and sys.stderr.isatty(),
            )
    except IngestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"error: interrupted by {interrupt_name(err)}; no store was written", file=sys.stderr)
        return interrupt_exit_code(err)
    except OSError as err:  # a full disk, an unwritable folder: one line naming the store, not a traceback
        named = OSError(err.errno, err.strerror, args.output) if err.errno is not None else err
        if (sentence := os_error_sentence(named)) is None:
            raise
        print(f"error: {sentence}; no store was written", file=sys.stderr)
        return 2
    if result.up_to_date:
        print(f"{result.path} is up to date (same sources and options); nothing to do")
        return 0
    seconds = time.perf_counter() - start
    mb = result.bytes / 1e6
    print(
        f"wrote {result.n_images} images ({mb:.1f} MB uncompressed) to {Path(result.path)} "
        f"in {seconds:.1f} s ({mb / max(seconds, 1e-9):.1f} MB/s)"
    )
    return 0


def _main_labels(args: argparse.Namespace) -> int:
    from psr.data.labelled import LabelError
    from psr.errors import PsrError
    from psr.faults import interrupt_exit_code, interrupt_name, os_error_sentence, stop_on_sigterm

    start = time.perf_counter()
    try:
        with stop_on_sigterm():
            out = ingest_labels(args)
    except (PsrError, LabelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"error: interrupted by {interrupt_name(err)}; no store was written", file=sys.stderr)
        return interrupt_exit_code(err)
    except OSError as err:
        named = OSError(err.errno, err.strerror, args.output) if err.errno is not None else err
        if (sentence := os_error_sentence(named)) is None:
            raise
        print(f"error: {sentence}; no store was written", file=sys.stderr)
        return 2
    print(f"wrote images and their masks ({args.label_name}) to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
