"""The sources of an ingest: a YAML manifest (images with splits, real low / high pairs) or paths, folders
and globs, expanded into files and stores, and the fingerprint that tells whether a store is up to date."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psr.data.ingest.options import IngestError
from psr.io.formats import format_names, is_image
from psr.io.omezarr import SPLITS
from psr.io.read_zarr import is_zarr

INGEST_VERSION = 1

# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ImageEntry:
    path: str
    split: str | None = None


@dataclass(frozen=True)
class PairEntry:
    low: str
    high: str
    scale: int = 1
    split: str = "val"


@dataclass(frozen=True)
class Manifest:
    """A dataset description: clean images (with optional splits) and real low / high pairs."""

    images: tuple[ImageEntry, ...] = ()
    pairs: tuple[PairEntry, ...] = ()
    base: Path = field(default_factory=Path)  # paths are relative to this folder

    def as_dict(self) -> dict[str, Any]:
        return {"images": [asdict(e) for e in self.images], "pairs": [asdict(p) for p in self.pairs]}


def _check_split(value: Any, where: str) -> str:
    if value not in SPLITS:
        raise IngestError(f"{where}: split '{value}' is not one of {', '.join(SPLITS)}")
    return str(value)


def load_manifest(path: str | Path) -> Manifest:
    """Read a YAML manifest (``images:`` entries with optional ``split``, ``pairs:`` with ``low``/``high``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"manifest {path} does not exist (expected a YAML file with images: and pairs:)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise IngestError(f"manifest {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return manifest_from_mapping(data, path.parent, f"manifest {path}")


def manifest_from_mapping(data: Any, base: str | Path, where: str = "manifest") -> Manifest:
    """A manifest from its parsed form (``{images: [...], pairs: [...]}``), paths relative to ``base``.

    ``where`` names the manifest in error messages (a file, or a config key such as ``data.manifest``).
    """
    if not isinstance(data, Mapping) or not set(data) <= {"images", "pairs"}:
        found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise IngestError(f"{where}: found {found}, expected a mapping with keys images and/or pairs")
    images: list[ImageEntry] = []
    for i, item in enumerate(data.get("images") or []):
        at = f"{where}: images[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, Mapping) or "path" not in item or not set(item) <= {"path", "split"}:
            raise IngestError(f"{at}: found {item!r}, expected {{path: ..., split: train|val|test}}")
        split = _check_split(item["split"], at) if item.get("split") is not None else None
        images.append(ImageEntry(str(item["path"]), split))
    pairs: list[PairEntry] = []
    for i, item in enumerate(data.get("pairs") or []):
        at = f"{where}: pairs[{i}]"
        if not isinstance(item, Mapping) or not {"low", "high"} <= set(item) <= {
            "low",
            "high",
            "scale",
            "split",
        }:
            raise IngestError(f"{at}: found {item!r}, expected {{low: ..., high: ..., scale: 1, split: val}}")
        scale = item.get("scale", 1)
        if isinstance(scale, float) and scale.is_integer():
            scale = int(scale)
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise IngestError(f"{at}: scale {scale!r} is not a positive integer")
        split = _check_split(item.get("split", "val"), at)
        pairs.append(PairEntry(str(item["low"]), str(item["high"]), scale, split))
    if not images and not pairs:
        raise IngestError(f"{where} names no images and no pairs")
    return Manifest(tuple(images), tuple(pairs), Path(base))


def expand_source(
    given: str, base: Path | None = None, exclude: Sequence[Path] = ()
) -> list[tuple[str, Path]]:
    """Files / zarr stores named by a path, folder or glob, as ``(path as given, resolved path)``, sorted.

    A folder contributes its image files (any format of ``psr.io.formats``) and zarr stores, not its subfolders; files of
    other formats in a folder or glob are ignored, but a file named directly must have a known format.
    """
    base = base or Path.cwd()
    excluded = {p.resolve() for p in exclude}
    joined = Path(given).expanduser()
    full = joined if joined.is_absolute() else base / joined

    def keep(p: Path) -> bool:
        return not p.name.startswith(".") and p.resolve() not in excluded and is_image(p)

    def shown(p: Path) -> str:
        # the path as the user wrote it: relative paths stay relative to the manifest / working folder
        return str(p) if joined.is_absolute() else os.path.relpath(p, base)

    if glob.has_magic(str(given)):
        matches = [Path(m) for m in sorted(glob.glob(str(full), recursive=True))]
        found = [p for p in matches if keep(p)]
        if not found:
            raise IngestError(
                f"'{given}' matches no image (found {len(matches)} paths, expected image files ({format_names()}) or zarr stores)"
            )
        return [(shown(p), p.resolve()) for p in found]
    if not full.exists():
        raise IngestError(
            f"'{given}' does not exist (expected an image file, a folder, a glob or a zarr store)"
        )
    if is_zarr(full):
        return [(str(given), full.resolve())]
    if full.is_dir():
        found = [p for p in sorted(full.iterdir()) if keep(p)]
        if not found:
            raise IngestError(
                f"folder '{given}' holds no image (expected image files ({format_names()}) or zarr stores in it)"
            )
        return [(shown(p), p.resolve()) for p in found]
    if not is_image(full):
        raise IngestError(
            f"'{given}' has an unknown format '{full.suffix}' (expected {format_names()} or a zarr store)"
        )
    return [(str(given), full.resolve())]


def _stat_source(path: Path) -> dict[str, Any]:
    if path.is_dir():
        size, mtime, count = 0, 0, 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                st = os.stat(os.path.join(root, name))
                size, mtime, count = size + st.st_size, max(mtime, st.st_mtime_ns), count + 1
        return {"path": str(path), "size": size, "mtime_ns": mtime, "files": count}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(paths: Sequence[Path], options: dict[str, Any]) -> str:
    """SHA-256 of the sources' resolved paths, sizes and mtimes, the options and the ingest version."""
    key = {"version": INGEST_VERSION, "sources": [_stat_source(p) for p in paths], "options": options}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Item:
    """A resolved source file / store with the manifest role and split it was named with."""

    source: str
    path: Path
    split: str | None = None
    role: str = "clean"


def _collect(
    sources: Sequence[str | Path] | None, manifest: Manifest | None, exclude: Sequence[Path]
) -> tuple[list[_Item], list[tuple[Path, Path, PairEntry]]]:
    """Expand sources / manifest entries into unique files (later entries override a file's split)."""
    items: dict[Path, _Item] = {}
    pairs: list[tuple[Path, Path, PairEntry]] = []
    if sources is not None:
        for given in sources:
            for shown, path in expand_source(str(given), exclude=exclude):
                items.setdefault(path, _Item(shown, path))
    if manifest is not None:
        for entry in manifest.images:
            for shown, path in expand_source(entry.path, manifest.base, exclude):
                item = items.setdefault(path, _Item(shown, path))
                item.split = entry.split if entry.split is not None else item.split
        for pair in manifest.pairs:
            lows = expand_source(pair.low, manifest.base, exclude)
            highs = expand_source(pair.high, manifest.base, exclude)
            for (low_shown, low), (high_shown, high) in _match_pairs(pair, lows, highs):
                for shown, path, role in ((low_shown, low, "low"), (high_shown, high, "high")):
                    item = items.setdefault(path, _Item(shown, path))
                    if item.role != "clean" and item.role != role:
                        raise IngestError(
                            f"{path} is a '{item.role}' image of one pair and '{role}' of another"
                        )
                    item.role, item.split = role, pair.split
                pairs.append((low, high, pair))
    return list(items.values()), pairs


def _wildcard_key(pattern: str) -> Callable[[Path], str] | None:
    """For a glob whose wildcards are all in the file name: the part of a name its wildcards matched."""
    name = Path(pattern).name
    if glob.has_magic(str(Path(pattern).parent)) or not glob.has_magic(name):
        return None
    magic = [i for i, ch in enumerate(name) if ch in "*?["]
    prefix, suffix = name[: magic[0]], name[name.rfind("*") + 1 :] if "*" in name else ""
    if any(ch in suffix for ch in "?[]"):
        return None
    return lambda p: p.name[len(prefix) : len(p.name) - len(suffix)]


def _match_pairs(
    pair: PairEntry, lows: list[tuple[str, Path]], highs: list[tuple[str, Path]]
) -> list[tuple[tuple[str, Path], tuple[str, Path]]]:
    """Pair the files two globs match by what their wildcards matched (``*-low.tif`` / ``*-high.tif``)."""
    low_key, high_key = _wildcard_key(pair.low), _wildcard_key(pair.high)
    if len(lows) == len(highs) == 1:
        return [(lows[0], highs[0])]
    if low_key is None or high_key is None:
        raise IngestError(
            f"pair low '{pair.low}' / high '{pair.high}' match {len(lows)} and {len(highs)} files; "
            "expected one file each, or globs with wildcards in the file name only (paired by what they match)"
        )
    by_key = {high_key(p): (shown, p) for shown, p in highs}
    low_keys = {low_key(p) for _shown, p in lows}
    missing_high = [low_key(p) for _shown, p in lows if low_key(p) not in by_key]
    missing_low = [k for k in by_key if k not in low_keys]
    if missing_high or missing_low:
        raise IngestError(
            f"pair low '{pair.low}' / high '{pair.high}': "
            + "; ".join(
                part
                for part in (
                    f"no high image for {', '.join(missing_high)}" if missing_high else "",
                    f"no low image for {', '.join(missing_low)}" if missing_low else "",
                )
                if part
            )
            + " (expected every low file to have a high file with the same wildcard part)"
        )
    return [((shown, p), by_key[low_key(p)]) for shown, p in lows]
