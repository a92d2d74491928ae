"""Reading and writing images as OME-Zarr (NGFF) with zarr v3, from local folders or fsspec URLs.

An *image source* is one multiscale OME-Zarr image (NGFF 0.4 or 0.5), a bare zarr array, or a zarr
group / folder holding several of them. ``discover_images`` flattens any of these into a list of
``ImageRef`` records that name the full-resolution array and its axes, without reading pixel data.

A source may also be a URL (``http(s)://``, ``s3://``, ``gs://``, ``file://``), read through zarr's
fsspec store. HTTP cannot list a folder, so a remote collection needs consolidated metadata
(``zarr.consolidate_metadata``) or a psr manifest in its root attributes (see ``read_manifest``); a URL
of a single OME-Zarr image needs neither.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from psr.atomic import durable_replace

AXES_ORDER = "tczyx"
MANIFEST_VERSION = 1
SPLITS = ("train", "val", "test")
ROLES = ("clean", "low", "high")
# The fsspec package each remote protocol needs, for a clear message when it is missing.
_PROTOCOL_PACKAGES = {
    "http": "aiohttp",
    "https": "aiohttp",
    "s3": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
}


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return "://" in str(path)


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL that is not ``file://`` (read through fsspec, never written)."""
    return is_url(path) and not str(path).startswith("file://")


def local_path(path: str | os.PathLike[str]) -> str:
    """``path`` with a ``file://`` scheme removed; other paths and URLs unchanged."""
    text = str(path)
    return text[len("file://") :] if text.startswith("file://") else text


def _fsspec_store(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    """A read-only zarr fsspec store for ``url``; a missing fsspec backend is one clear error."""
    from zarr.storage import FsspecStore

    try:
        return FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=True)
    except ImportError as err:
        protocol = url.split("://", 1)[0]
        package = _PROTOCOL_PACKAGES.get(protocol, f"the fsspec backend for {protocol}://")
        raise ValueError(
            f"data path '{url}' needs the {package} package to read {protocol}:// URLs, which is not installed;"
            f" install it (pip install {package}) or copy the store to a local folder"
        ) from err


def _open_remote(url: str, path: str, storage_options: Mapping[str, Any] | None, kind: str) -> Any:
    """Open the node at ``path`` of the store at ``url`` (``kind``: "array", "group" or "any").

    A node that does not exist is ``FileNotFoundError`` naming the URL; anything else that stops the
    store from opening (no connection, no credentials) is one ``ValueError`` naming it.
    """
    store = _fsspec_store(url, storage_options)
    where = f"{url}/{path}".rstrip("/")
    try:
        if kind == "array":
            return zarr.open_array(store, path=path, mode="r")
        if kind == "group":
            return zarr.open_group(store, path=path, mode="r")
        return zarr.open(store, path=path, mode="r")
    except (FileNotFoundError, KeyError) as err:
        raise FileNotFoundError(
            f"data path '{where}' does not exist (expected an OME-Zarr image, a zarr array, or a group of them)"
        ) from err
    except Exception as err:  # noqa: BLE001 - network and credential errors of any fsspec backend
        if type(err).__name__ in ("GroupNotFoundError", "ArrayNotFoundError", "NodeNotFoundError"):
            raise FileNotFoundError(
                f"data path '{where}' does not exist (expected an OME-Zarr image, a zarr array, or a group of"
                " them)"
            ) from err
        raise ValueError(
            f"data path '{where}' cannot be opened ({type(err).__name__}: {err}); check the URL, the network"
            " and data.storage_options (e.g. {anon: true} for a public s3 bucket)"
        ) from err


def open_node(
    store: str, path: str = "", storage_options: Mapping[str, Any] | None = None, kind: str = "any"
) -> Any:
    """Open the zarr node at ``path`` inside ``store`` (a folder or a URL) read-only.

    Sub-groups are opened directly (not through the root's consolidated metadata), so their attributes
    are always current.
    """
    if is_remote(store):
        return _open_remote(store, path, storage_options, kind)
    root = local_path(store)
    if kind == "array":
        return zarr.open_array(root, path=path, mode="r")
    if kind == "group":
        return zarr.open_group(root, path=path, mode="r", use_consolidated=False if path else None)
    return zarr.open(root, path=path, mode="r")


@dataclass(frozen=True)
class ImageRef:
    """One image inside a zarr store: where its full-resolution array lives and what its axes are."""

    store: str  # the zarr store root: a folder, or a URL read through fsspec
    array_path: str  # path of the array inside the store ("" for a bare array at the root)
    axes: str  # e.g. "cyx", "tczyx": one letter per array axis
    shape: tuple[int, ...]
    dtype: str
    pixel_size: dict[str, float]  # physical size per spatial axis where the metadata has it
    # The image's name in the store: its OME-Zarr group (the array itself for a bare array).
    image_path: str = ""
    storage_options: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return f"{self.store}/{self.array_path}".rstrip("/")

    @property
    def remote(self) -> bool:
        """Whether the store is read through fsspec (then psr never writes to it)."""
        return is_remote(self.store)

    def open(self) -> zarr.Array:
        """The full-resolution array, read-only (a fresh handle: open one per process)."""
        node = open_node(self.store, self.array_path, self.storage_options, kind="array")
        if not isinstance(node, zarr.Array):
            raise ValueError(f"{self.name} is a zarr group where an array was expected")
        return node


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


def _refs_in(
    store: str,
    group: zarr.Group,
    prefix: str,
    depth: int,
    storage_options: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> Iterator[ImageRef]:
    """Images in ``group`` (at ``prefix`` in ``store``); ``names``: its child groups, where the store
    cannot list them (a manifest's image names over HTTP)."""
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
        yield ImageRef(
            store, path, axes, tuple(arr.shape), str(arr.dtype), pixel_size, prefix, storage_options
        )
        return
    if depth > 3:
        return
    if names is not None:
        for name in names:
            child = group[name]
            full = f"{prefix}/{name}".strip("/")
            if isinstance(child, zarr.Group):
                yield from _refs_in(store, child, full, depth + 1, storage_options)
            else:
                yield _bare_ref(store, full, child, storage_options)
        return
    for name in sorted(group.group_keys()):
        yield from _refs_in(
            store, _group(group, name), f"{prefix}/{name}".strip("/"), depth + 1, storage_options
        )
    for name in sorted(group.array_keys()):
        yield _bare_ref(store, f"{prefix}/{name}".strip("/"), _array(group, name), storage_options)


def _bare_ref(store: str, path: str, arr: zarr.Array, storage_options: dict[str, Any] | None) -> ImageRef:
    axes = _default_axes(arr.ndim)
    return ImageRef(store, path, axes, tuple(arr.shape), str(arr.dtype), {}, path, storage_options)


def discover_images(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: Mapping[str, Any] | None = None,
) -> list[ImageRef]:
    """List every image under ``paths`` (OME-Zarr images, bare arrays, or groups/folders of them).

    A path may be a URL read through fsspec (``storage_options`` go to its filesystem, e.g.
    ``{"anon": True}`` for a public s3 bucket). Raises ``FileNotFoundError`` naming the path when it does
    not exist and ``ValueError`` when it holds no image or cannot be opened.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    options = dict(storage_options) if storage_options else None
    refs: list[ImageRef] = []
    for raw in paths:
        if is_remote(raw):
            refs.extend(_discover_remote(str(raw), options))
            continue
        path = Path(local_path(raw)).expanduser()
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
                found.append(_bare_ref(str(candidate), "", node, None))
            else:
                found.extend(_refs_in(str(candidate), node, "", 0))
        if not found:
            raise ValueError(
                f"data path '{raw}' holds no zarr image (expected an OME-Zarr image, a zarr array, or a folder of them)"
            )
        refs.extend(found)
    return refs


def _discover_remote(url: str, storage_options: dict[str, Any] | None) -> list[ImageRef]:
    """Images of the store at ``url``: one image, or a collection listed by its consolidated metadata,
    its psr manifest or (where the filesystem can list, e.g. s3) its folders."""
    url = url.rstrip("/")
    node = _open_remote(url, "", storage_options, "any")
    if isinstance(node, zarr.Array):
        return [_bare_ref(url, "", node, storage_options)]
    names = None
    if _ome_multiscales(dict(node.attrs)) is None and node.metadata.consolidated_metadata is None:
        manifest = parse_manifest(dict(node.attrs), url)
        if manifest is not None and manifest.images:
            names = sorted(manifest.images)
    try:
        found = list(_refs_in(url, node, "", 0, storage_options, names))
    except (FileNotFoundError, KeyError) as err:
        raise FileNotFoundError(f"data path '{url}': an image it lists does not exist ({err})") from err
    except Exception as err:  # noqa: BLE001 - a filesystem that cannot list folders
        raise ValueError(
            f"data path '{url}' cannot list its images ({type(err).__name__}: {err}); consolidate its metadata"
            " (zarr.consolidate_metadata) or point data.path at one OME-Zarr image"
        ) from err
    if not found:
        raise ValueError(
            f"data path '{url}' holds no zarr image that can be listed remotely; consolidate its metadata"
            " (zarr.consolidate_metadata), add a psr manifest, or point data.path at one OME-Zarr image"
        )
    return found


# --- the psr manifest: splits and pairs written by the ingest tool -----------------------------------
@dataclass(frozen=True)
class ManifestImage:
    """One image of a store's manifest: where it came from, its split and its role in pairs."""

    source: str
    split: str  # train | val | test
    role: str  # clean | low | high


@dataclass(frozen=True)
class ManifestPair:
    """A real low/high pair of images of the store, by their names (image group paths)."""

    low: str
    high: str
    scale: int
    split: str


@dataclass(frozen=True)
class StoreManifest:
    """``{"psr": {"manifest": ...}}`` of a store's root group: image splits and real pairs."""

    images: dict[str, ManifestImage]
    pairs: tuple[ManifestPair, ...]


def parse_manifest(attrs: Mapping[str, Any], store: str) -> StoreManifest | None:
    """The manifest in root attributes ``attrs`` of ``store``, or ``None`` when there is none.

    Raises ``ValueError`` naming the store and key for a malformed manifest.
    """
    psr = attrs.get("psr")
    if not isinstance(psr, Mapping) or "manifest" not in psr:
        return None
    raw = psr["manifest"]
    where = f"store {store}: psr.manifest"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} is a {type(raw).__name__}; expected a mapping with images and pairs")
    version = raw.get("version", MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        raise ValueError(f"{where}.version is {version!r}; this psr reads version {MANIFEST_VERSION}")
    images: dict[str, ManifestImage] = {}
    for name, entry in dict(raw.get("images") or {}).items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}.images.{name} is {entry!r}; expected a mapping with split and role")
        split, role = entry.get("split", "train"), entry.get("role", "clean")
        if split not in SPLITS:
            raise ValueError(f"{where}.images.{name}.split is {split!r}; expected one of {', '.join(SPLITS)}")
        if role not in ROLES:
            raise ValueError(f"{where}.images.{name}.role is {role!r}; expected one of {', '.join(ROLES)}")
        images[str(name).strip("/")] = ManifestImage(str(entry.get("source", "")), split, role)
    pairs: list[ManifestPair] = []
    for i, entry in enumerate(raw.get("pairs") or []):
        if not isinstance(entry, Mapping) or "low" not in entry or "high" not in entry:
            raise ValueError(f"{where}.pairs[{i}] is {entry!r}; expected a mapping with low and high")
        split = entry.get("split", "val")
        if split not in SPLITS:
            raise ValueError(f"{where}.pairs[{i}].split is {split!r}; expected one of {', '.join(SPLITS)}")
        scale = entry.get("scale", 1)
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"{where}.pairs[{i}].scale is {scale!r}; expected a positive integer")
        pairs.append(ManifestPair(str(entry["low"]).strip("/"), str(entry["high"]).strip("/"), scale, split))
    return StoreManifest(images, tuple(pairs))


def read_manifest(store: str, storage_options: Mapping[str, Any] | None = None) -> StoreManifest | None:
    """The manifest of the store rooted at ``store`` (a folder or URL), or ``None`` when it has none."""
    node = open_node(store, "", storage_options)
    return parse_manifest(dict(node.attrs), store)


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
    levels: int = 2,
    channel_names: Sequence[str] = (),
) -> Path:
    """Write in-memory ``images`` as OME-Zarr images (NGFF 0.5, zstd) under one zarr group at ``path``.

    Each image goes through ``psr.io.writer.OmeZarrWriter`` with ``levels`` resolution levels (arrays
    ``s0``, ``s1``...; training reads level 0) and ``omero`` metadata; the root lists them for viewers
    (``OME/``). The store is written under a temporary name beside ``path`` and renamed when complete,
    so a crash never leaves a store that looks finished.
    """
    from psr.io.writer import OmeZarrWriter, write_collection_root

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    names = list(names) if names is not None else [f"img_{i:03d}" for i in range(len(images))]
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name, image in zip(names, images, strict=True):
            if image.ndim != len(axes):
                raise ValueError(f"image {name} has {image.ndim} axes but axes='{axes}'")
            spatial = {ax: float(v) for ax, v in (pixel_size or {}).items() if ax in axes}
            writer = OmeZarrWriter(
                root.create_group(name),
                axes,
                image.shape,
                image.dtype,
                name=name,
                levels=levels,
                chunks=chunks,
                pixel_size=spatial,
                unit=unit if spatial else None,
                channel_names=channel_names,
            )
            writer.write({}, image)
            writer.close()
        write_collection_root(root, names)
        if attributes:
            root.attrs.update(attributes)
        try:
            durable_replace(tmp, path)
        except OSError:
            if not path.exists():
                raise
            # Another process finished the same store first: keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
