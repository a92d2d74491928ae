"""Live acquisition: ``watch_folder`` restores every image file that appears in a folder, as it appears,
with ``psr.inference.predict.predict_image``; a file counts as complete once its size and modification time
stop changing."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from psr.inference.checkpoint import LoadedModel
from psr.inference.errors import PredictionError
from psr.inference.images import open_input
from psr.inference.writers import output_format
from psr.io.formats import image_stem

log = logging.getLogger(__name__)


def _image_stem(path: Path) -> str | None:
    """The name of an image file without its image suffix (any of ``psr.io``'s reader table, CZI / ND2 /
    LIF included; ``.ome.tif`` counts as one), or None for a file that is not an image prediction reads,
    or a hidden one (a temporary name)."""
    return None if path.name.startswith(".") else image_stem(path.name)


def _signature(path: Path) -> tuple[int, int] | None:
    """Size and latest modification time (ns) of a file, or of every file in a zarr folder; None when
    it vanished meanwhile."""
    try:
        if path.is_dir():
            files = [f.stat() for f in path.rglob("*") if f.is_file()]
            return sum(f.st_size for f in files), max((f.st_mtime_ns for f in files), default=0)
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def watch_folder(
    model: LoadedModel,
    folder: str | Path,
    output: str | Path,
    *,
    suffix: str = ".tif",
    interval: float = 0.5,
    timeout: float = 60.0,
    axes: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Restore every image file that appears in ``folder`` into the folder ``output``, as it appears.

    A file (any format of ``psr.io``'s reader table, or a zarr folder; hidden names are ignored) is complete when its size and
    modification time are unchanged across two polls ``interval`` seconds apart; its restoration is
    written to ``output/<stem><suffix>`` (``.tif``, ``.ome.zarr``...) by ``predict_image`` with
    ``options``. Files already there when watching starts are restored too; one whose output exists is
    skipped unless ``overwrite``. A file that cannot be opened is waited for until it changes; one that
    cannot be predicted is logged and skipped (and retried if it changes). Watching stops after
    ``timeout`` seconds without a new or changing file, or on Ctrl-C. Returns a summary: files restored, frames, seconds spent predicting, frames/s, and each file's summary.
    """
    from psr.inference.predict import predict_image  # which imports this module to offer watch_folder

    source = Path(folder).expanduser().absolute()
    target = Path(output).expanduser().absolute()
    if not source.is_dir():
        raise PredictionError(f"input {folder} is not a folder; watch=true watches a folder for new images")
    if target == source:
        raise PredictionError(
            f"output {output} is the watched folder; with watch=true pick another folder for the results"
        )
    output_format(f"image{suffix}")  # the suffix names an output format
    if target.exists() and not target.is_dir():
        raise PredictionError(f"output {output} is a file; with watch=true it must be a folder")
    target.mkdir(parents=True, exist_ok=True)
    overwrite = bool(options.pop("overwrite", False))
    previous: dict[Path, tuple[int, int] | None] = {}
    handled: dict[Path, tuple[int, int] | None] = {}
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    unreadable: dict[Path, str] = {}
    busy = 0.0
    frames = 0
    last_activity = time.monotonic()
    log.info("psr: watching %s for new images (stops after %g s without one, or Ctrl-C)", source, timeout)
    try:
        while True:
            current = {p: _signature(p) for p in sorted(source.iterdir()) if _image_stem(p) is not None}
            if any(previous.get(p) != sig and handled.get(p) != sig for p, sig in current.items()):
                last_activity = time.monotonic()
            for path, sig in current.items():
                if sig is None or handled.get(path) == sig or previous.get(path) != sig or sig[0] == 0:
                    continue  # gone, done, still changing (or first seen), or empty
                handled[path] = sig
                destination = target / f"{_image_stem(path)}{suffix}"
                if destination.exists() and not overwrite:
                    log.info(
                        "psr: %s already has %s; skipped (overwrite=true redoes it)", path.name, destination
                    )
                    skipped.append(str(path))
                    continue
                try:
                    image = open_input(path, axes)
                except Exception as err:  # noqa: BLE001 - a truncated file trips up readers in many ways
                    # not complete after all, or not an image: wait for it to change
                    log.info("psr: %s is not readable (yet); waiting for it to change: %s", path.name, err)
                    unreadable[path] = str(err)
                    continue
                unreadable.pop(path, None)
                started = time.perf_counter()
                try:
                    with image:
                        summary = predict_image(model, image, destination, overwrite=overwrite, **options)
                except PredictionError as err:
                    log.warning("psr: skipped %s: %s", path.name, err)
                    skipped.append(str(path))
                    continue
                finally:
                    busy += time.perf_counter() - started
                    last_activity = time.monotonic()
                results.append(summary)
                frames += int(summary["planes"])
                log.info(
                    "psr: restored %s → %s (%d frame(s) in %.2f s); %d file(s), %.2f frames/s",
                    path.name,
                    destination.name,
                    summary["planes"],
                    summary["seconds"],
                    len(results),
                    frames / busy if busy > 0 else float("inf"),
                )
            previous = current
            if time.monotonic() - last_activity > timeout:
                log.info("psr: no new image in %s for %g s; stopped watching", source, timeout)
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        log.info("psr: stopped watching %s (Ctrl-C)", source)
    for path, reason in unreadable.items():
        log.warning("psr: skipped %s: %s", path.name, reason)
        skipped.append(str(path))
    return {
        "input": str(source),
        "output": str(target),
        "files": len(results),
        "skipped": skipped,
        "frames": frames,
        "seconds": round(busy, 3),
        "frames_per_second": frames / busy if busy > 0 else 0.0,
        "results": results,
    }
