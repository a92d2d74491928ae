"""Tiling, windows and stitching: round trips on odd shapes in 2D and 3D, coverage, blending weights."""

from __future__ import annotations

import numpy as np
import pytest

from psr.inference.tiling import (
    FLOOR,
    blend_window,
    block_weights,
    n_tiles,
    scale_region,
    stitch,
    tile_grid,
    tile_starts,
    window_1d,
    window_sums,
)

CASES = [
    # (spatial shape, tile, overlap)
    ((37, 53), 16, 4),
    ((37, 53), 16, 8),
    ((37, 53), 13, 0),
    ((37, 53), (9, 20), (3, 6)),
    ((101, 7), 32, 16),  # one axis smaller than the tile
    ((5, 6), 64, 32),  # the whole image smaller than a tile
    ((9, 21, 30), (4, 8, 8), (2, 4, 2)),
    ((9, 21, 30), 8, 3),
    ((3, 17, 11), (16, 5, 7), (4, 2, 3)),
]


def test_tile_starts_cover_the_axis_and_shift_the_last_tile_inward() -> None:
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(104, 32, 8) == [0, 24, 48, 72]  # fits exactly: no extra tile
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(33, 32, 8) == [0, 1]
    with pytest.raises(ValueError, match="more than half the tile"):
        tile_starts(100, 32, 17)


@pytest.mark.parametrize(("shape", "tile", "overlap"), CASES)
def test_grid_covers_the_image_exactly_with_equal_tiles(shape, tile, overlap) -> None:  # noqa: ANN001
    grid = tile_grid(shape, tile, overlap)
    assert len(grid) == n_tiles(shape, tile, overlap)
    covered = np.zeros(shape, int)
    sizes = {tuple(s.stop - s.start for s in region) for region in grid}
    assert len(sizes) == 1  # one tile shape: tiles batch together
    for region in grid:
        assert all(0 <= s.start < s.stop <= n for s, n in zip(region, shape, strict=True))
        covered[region] += 1
    assert covered.min() >= 1


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize(("shape", "tile", "overlap"), CASES)
def test_tile_then_stitch_is_the_identity(shape, tile, overlap, kind: str) -> None:  # noqa: ANN001
    image = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    grid = tile_grid(shape, tile, overlap)
    out = stitch([(r, image[(slice(None), *r)]) for r in grid], shape, overlap, kind)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("shape", "tile", "overlap"), CASES)
def test_stitching_maps_input_tiles_to_output_tiles_by_the_scale(shape, tile, overlap) -> None:  # noqa: ANN001
    """A model that enlarges Y and X by 3 (Z by 1 in 3D): pixel replication is local, so tiled = whole."""
    factors = (3, 3) if len(shape) == 2 else (1, 3, 3)
    image = np.random.default_rng(1).random((1, *shape)).astype(np.float32)

    def enlarge(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, 3, -1), 3, -2)

    grid = tile_grid(shape, tile, overlap)
    out = stitch([(r, enlarge(image[(slice(None), *r)])) for r in grid], shape, overlap, "cosine", factors)
    assert out.shape == (1, *(n * f for n, f in zip(shape, factors, strict=True)))
    np.testing.assert_allclose(out, enlarge(image), rtol=0, atol=1e-5)
    assert scale_region((slice(2, 5), slice(0, 4)), (3, 3)) == (slice(6, 15), slice(0, 12))


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_windows_are_positive_and_neighbours_sum_to_one(kind: str) -> None:
    size, tile, overlap = 56, 32, 8
    left, right = window_1d(0, tile, size, overlap, kind), window_1d(24, 56, size, overlap, kind)
    assert left.min() > 0 and right.min() > 0
    assert left[0] == 1.0 and right[-1] == 1.0  # sides on the image border are not tapered
    total = np.zeros(size)
    total[:tile] += left
    total[24:] += right
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    margin = overlap // 4  # pixels that saw the tile border weigh (almost) nothing
    assert np.all(right[:margin] == FLOOR) and np.all(left[-margin:] == FLOOR)


def test_window_at_output_resolution_scales_ramps_and_margins() -> None:
    region, shape = (slice(8, 24), slice(0, 16)), (40, 16)
    w = blend_window(region, shape, 8, "linear", (2, 2))
    assert w.shape == (32, 32) and w.dtype == np.float32 and w.min() > 0
    assert np.all(w[: (8 // 4) * 2] <= FLOOR * 1.01)  # a margin of 2 input pixels = 4 output pixels
    np.testing.assert_allclose(w[:, 0], w[:, -1])  # X is one tile: flat


@pytest.mark.parametrize(("shape", "tile", "overlap"), CASES)
def test_summed_windows_are_separable(shape, tile, overlap) -> None:  # noqa: ANN001
    """Streaming prediction normalises by the outer product of per-axis sums; it equals the sum of windows."""
    factors = (2,) * len(shape)
    grid = tile_grid(shape, tile, overlap)
    brute = np.zeros([n * 2 for n in shape])
    for region in grid:
        brute[scale_region(region, factors)] += blend_window(region, shape, overlap, "cosine", factors)
    sums = window_sums(shape, tile, overlap, "cosine", factors)
    full = tuple(slice(0, n * 2) for n in shape)
    np.testing.assert_allclose(block_weights(sums, full), brute, rtol=1e-5)


def test_bad_tiling_fails_clearly() -> None:
    with pytest.raises(ValueError, match=r"tile=\[4, 4, 4\] has 3 values; there are 2 spatial axes"):
        tile_grid((10, 10), (4, 4, 4), 0)
    with pytest.raises(ValueError, match="axis 1 .*more than half the tile"):
        tile_grid((10, 100), 16, 9)
