"""``scripts/bench_loader.py``'s synthetic stores: noisy phantom frames, and zarr stores of uint16 images
written block by block from them (each block a random rotation, flip and roll of one frame), with their
size on disk.

Not a command: ``bench_loader.py`` imports it (see its docstring for what the stores are for).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GiB = 2**30


def on_disk_bytes(path: Path) -> int:
    """Bytes a folder occupies on disk (allocated blocks of every file under it)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def noisy_frames(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct ``size``² uint16 frames: phantom structure times 8, with Poisson shot noise."""
    from psr.data.phantoms import PhantomSpec, render_phantom

    rng = np.random.default_rng(seed)
    spec = PhantomSpec(size=size)
    frames = []
    for i in range(n):
        expected = render_phantom(seed, 1000 + i, spec).astype(np.float32) * 8.0
        frames.append(np.minimum(rng.poisson(expected), 65535).astype(np.uint16))
    return frames


def _block(frames: Sequence[np.ndarray], rng: np.random.Generator, depth: int) -> np.ndarray:
    """A ``(depth, S, S)`` block; each plane a random rotation, flip and roll of one of the frames.

    Planes are drawn independently: shifted copies of one plane inside a 3D chunk would let zstd find
    their noise again and compress the chunk to a fraction of what a real volume takes.
    """
    planes = []
    for _ in range(depth):
        frame = np.rot90(frames[int(rng.integers(len(frames)))], int(rng.integers(4)))
        if rng.random() < 0.5:
            frame = frame[::-1]
        planes.append(np.roll(frame, tuple(int(v) for v in rng.integers(0, frame.shape[0], 2)), (0, 1)))
    return np.stack(planes)


@dataclass(frozen=True)
class StoreInfo:
    path: str
    images: int
    image_shape: tuple[int, ...]
    chunks: tuple[int, ...]
    raw_bytes: int
    disk_bytes: int


def write_store(
    path: Path,
    image_shape: tuple[int, ...],
    chunks: tuple[int, ...],
    frames: Sequence[np.ndarray],
    *,
    n_images: int | None = None,
    target_bytes: int | None = None,
    seed: int = 0,
) -> StoreInfo:
    """A zarr group of uint16 images ``(1, Y, X)`` (axes cyx) or ``(1, Z, Y, X)`` (czyx), zstd, written
    block by block under a temporary name and renamed when complete.

    Writes ``n_images`` images, or as many as it takes for the store to reach ``target_bytes`` on disk.
    Y and X must be multiples of the frame size, Z a multiple of the chunk depth.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    if (n_images is None) == (target_bytes is None):
        raise ValueError("write_store needs exactly one of n_images and target_bytes")
    size = frames[0].shape[0]
    depth_chunk = chunks[1] if len(image_shape) == 4 else 1
    depth = image_shape[1] if len(image_shape) == 4 else 1
    if image_shape[-1] % size or image_shape[-2] % size or depth % depth_chunk:
        raise ValueError(f"image shape {image_shape} does not tile into {size}² frames and chunks {chunks}")
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    root = zarr.open_group(str(tmp), mode="w")
    disk = 0
    count = 0
    try:
        while (n_images is not None and count < n_images) or (
            target_bytes is not None and disk < target_bytes
        ):
            name = f"img_{count:05d}"
            arr = root.create_array(
                name, shape=image_shape, chunks=chunks, dtype="uint16", compressors=ZstdCodec(level=3)
            )
            for z0 in range(0, depth, depth_chunk):
                for y0 in range(0, image_shape[-2], size):
                    for x0 in range(0, image_shape[-1], size):
                        block = _block(frames, rng, depth_chunk)
                        if len(image_shape) == 4:
                            arr[0, z0 : z0 + depth_chunk, y0 : y0 + size, x0 : x0 + size] = block
                        else:
                            arr[0, y0 : y0 + size, x0 : x0 + size] = block[0]
            disk += on_disk_bytes(tmp / name)
            count += 1
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoreInfo(
        str(path),
        count,
        image_shape,
        chunks,
        count * int(np.prod(image_shape)) * 2,
        on_disk_bytes(path),
    )
