"""Tiny labelled data sets for the segmentation tests: discs on a noisy background, written as TIFFs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile


def discs(size: int, n: int, seed: int) -> np.ndarray:
    """An instance map ``(size, size)`` uint16 of ``n`` non-overlapping discs (ids 1..n)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.uint16)
    placed = 0
    while placed < n:
        cy, cx = rng.integers(6, size - 6, 2)
        r = int(rng.integers(3, 6))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (label[disc] == 0).all():
            placed += 1
            label[disc] = placed
    return label


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``(images, masks)`` folders of ``n`` images; ``semantic`` masks hold 0/1 classes, else instance ids."""

    def _write(n: int = 4, size: int = 48, semantic: bool = False) -> tuple[Path, Path]:
        images, masks = tmp_path / "images", tmp_path / "masks"
        images.mkdir(exist_ok=True)
        masks.mkdir(exist_ok=True)
        for i in range(n):
            label = discs(size, 4, i)
            noise = np.random.default_rng(100 + i).normal(0, 8, label.shape)
            image = (20 + 100 * (label > 0) + noise).astype(np.float32)
            tifffile.imwrite(images / f"{i}.tif", image)
            tifffile.imwrite(masks / f"{i}.tif", (label > 0).astype(np.uint8) if semantic else label)
        return images, masks

    return _write
