"""Running a network on tensors: ``infer`` (no gradients, bf16 autocast on CUDA, optionally the mean over
the 8 flips and rotations in Y/X), the CUDA settings of a prediction run, and ``predict_tensor``, which
runs a whole in-memory image through the network in blended tiles (evaluation's driver; files of any
size stream through ``psr.inference.predict.predict_image``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from psr.inference.tiling import balanced_tile, stitch, tile_grid


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def _undo_dihedral(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


def infer(net: nn.Module, batch: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """``net(batch)`` in float32 without gradients; bf16 autocast on CUDA only.

    ``batch``: ``(B, C, Y, X)`` or ``(B, C, Z, Y, X)`` on the net's device. With ``tta`` the prediction is
    the mean over the 8 symmetries of the square in Y/X (4 rotations × a flip), each undone on the output
    (lateral only in 3D).
    """
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if batch.device.type == "cuda"
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), amp:
        if not tta:
            return net(batch).float()
        total: torch.Tensor | None = None
        for flip in (False, True):
            for k in range(4):
                y = _undo_dihedral(net(_dihedral(batch, k, flip)).float(), k, flip)
                total = y if total is None else total + y
        assert total is not None
        return total / 8.0


def prepare_net(net: nn.Module, device: torch.device, spatial_dims: int, compile_net: bool) -> nn.Module:
    """On CUDA, 2D models run channels-last (tensor cores read NHWC); ``compile_net`` wraps the net in
    ``torch.compile`` (static shapes: every batch is padded to the full batch size)."""
    if device.type == "cuda" and spatial_dims == 2:
        net = net.to(memory_format=torch.channels_last)
    if compile_net:
        return torch.compile(net, dynamic=False)  # type: ignore[return-value]
    return net


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """Let cuDNN pick the fastest convolutions for the (fixed) tile shape, for this call only."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def predict_tensor(
    net: nn.Module,
    low: torch.Tensor,
    scale: int,
    out_channels: int,
    tile: int | None,
    overlap: int,
    batch_size: int,
    device: torch.device,
    tta: bool = False,
) -> torch.Tensor:
    """``net`` on a whole image ``(1, C, *S)`` → ``(1, out_channels, *S·scale)`` float32 on the CPU.

    Images larger than ``tile`` along Y or X run in tiles of at most ``tile`` pixels (as few as can cover
    the image, equally sized: ``balanced_tile``) overlapping by ``overlap`` (Z, for 3D models, stays
    whole), ``batch_size`` tiles per forward pass, blended with the windows of ``psr.inference.tiling``
    (tile borders are outweighed by the neighbouring tile's interior). With ``tta`` every forward pass is
    ``infer``'s mean over the 8 flips and rotations in Y/X (bf16 autocast on CUDA); without, float32.
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        if tta:
            return infer(net, x, tta=True)
        with torch.no_grad():
            return net(x).float()

    spatial = tuple(int(n) for n in low.shape[2:])
    factors = (1,) * (len(spatial) - 2) + (scale, scale)
    out_shape = (1, out_channels, *(n * f for n, f in zip(spatial, factors, strict=True)))
    if tile is None or max(spatial[-2:]) <= tile:
        return forward(low.to(device)).cpu().reshape(out_shape)
    tiles = (*spatial[:-2], *(balanced_tile(n, tile, overlap) for n in spatial[-2:]))
    overlaps = (0,) * (len(spatial) - 2) + (overlap, overlap)
    regions = tile_grid(spatial, tiles, overlaps)

    def pieces() -> Iterator[tuple[Any, np.ndarray]]:
        for i in range(0, len(regions), batch_size):
            chunk = regions[i : i + batch_size]
            batch = torch.cat([low[(slice(None), slice(None), *region)] for region in chunk]).to(device)
            pred = forward(batch).cpu().numpy()
            yield from zip(chunk, pred, strict=True)

    stitched = stitch(pieces(), spatial, overlaps, factors=factors)
    return torch.from_numpy(stitched).reshape(out_shape)
