"""``psr.inference.forward.predict_tensor``, the in-memory tile driver: equal tiles, as few as cover the
image, blended into what the whole image gives."""

from __future__ import annotations

import pytest
import torch

from psr.inference.forward import infer, predict_tensor
from psr.inference.tiling import balanced_tile, tile_grid
from tests.inference.conftest import IsotropicNet, LocalNet


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [(2048, 1024, 64, 726), (100, 128, 16, 100), (128, 128, 16, 128), (130, 64, 16, 54), (40, 16, 8, 16)],
)
def test_balanced_tiles_are_as_few_and_as_small_as_cover_the_axis(
    size: int, tile: int, overlap: int, expected: int
) -> None:
    edge = balanced_tile(size, tile, overlap)
    assert edge == expected
    fewest = len(tile_grid((size,), tile, overlap))
    regions = tile_grid((size,), edge, overlap)
    assert len(regions) == fewest and regions[-1][0].stop == size


@pytest.mark.parametrize("dims", [2, 3])
def test_tiled_tensor_prediction_equals_the_whole_image(dims: int) -> None:
    """LocalNet's receptive-field radius (2) is within the margin (overlap // 4 = 3): tiles do not show."""
    net = LocalNet(scale=2, dims=dims).eval()
    low = torch.rand(1, 1, *((5,) * (dims - 2)), 50, 70, generator=torch.Generator().manual_seed(3))
    cpu = torch.device("cpu")
    whole = predict_tensor(net, low, 2, 1, None, 12, 4, cpu)
    tiled = predict_tensor(net, low, 2, 1, 24, 12, 4, cpu)
    assert whole.shape == tiled.shape == (1, 1, *((5,) * (dims - 2)), 100, 140)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-4)
    seams = predict_tensor(net, low, 2, 1, 24, 0, 4, cpu)  # the same tiles without overlap show
    assert float((seams - whole).abs().max()) > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(whole, net(low), rtol=0, atol=0)


def test_tensor_prediction_with_tta_averages_the_eight_symmetries() -> None:
    net = IsotropicNet(scale=2).eval()
    low = torch.rand(1, 1, 40, 36, generator=torch.Generator().manual_seed(4))
    out = predict_tensor(net, low, 2, 1, 16, 8, 3, torch.device("cpu"), tta=True)
    torch.testing.assert_close(out, infer(net, low, tta=False), rtol=0, atol=1e-5)
