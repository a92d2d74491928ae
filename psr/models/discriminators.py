"""GAN discriminators: plain ``nn.Module`` critics that return realness logits (no sigmoid).

Three designs, each channel-agnostic (``in_channels``) and exposing ``in_channels`` and ``spatial_dims``:

- :class:`PatchGAN`: the N-layer PatchGAN of pix2pix (Isola et al., CVPR 2017), 2D or 3D, one logit per
  overlapping patch (70×70 pixels of receptive field at ``n_layers=3``).
- :class:`UNetSN`: the U-Net discriminator with spectral normalisation of Real-ESRGAN (Wang et al.,
  ICCVW 2021), one logit per pixel.
- :class:`VGGStyle`: the VGG-style discriminator of ESRGAN (Wang et al., ECCVW 2018), one logit per image.

The objectives that read these logits live in :mod:`psr.modules.losses` (``GANLoss``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _check_input(name: str, x: torch.Tensor, in_channels: int, spatial_dims: int) -> None:
    axes = "(B, C, Z, Y, X)" if spatial_dims == 3 else "(B, C, Y, X)"
    if x.dim() != 2 + spatial_dims or x.shape[1] != in_channels:
        expected = axes.replace("C", str(in_channels))
        raise ValueError(f"{name} expects {expected}, got a tensor of shape {tuple(x.shape)}")


class PatchGAN(nn.Module):
    """N-layer PatchGAN discriminator (Isola et al., "Image-to-Image Translation with Conditional
    Adversarial Networks", CVPR 2017; the ``NLayerDiscriminator`` of pix2pix/CycleGAN).

    Input ``(B, in_channels, [Z,] Y, X)`` → patch logits ``(B, 1, [Z',] Y', X')`` with
    ``S' = S // 2**n_layers - 2`` along every spatial axis (64 → 6 at ``n_layers=3``). Layers: a 4×4
    stride-2 convolution and LeakyReLU(0.2); ``n_layers - 1`` further stride-2 convolutions doubling the
    width (capped at 8× ``base_channels``) with normalisation; one stride-1 convolution; a 1-channel
    stride-1 convolution. ``dims=3`` swaps in Conv3d and 3D normalisation for volumes. Every spatial axis
    must be at least ``3 * 2**n_layers`` (24 at the default) so that one patch fits. Microscopy volumes
    are often thin: with ``downsample_z=False`` (3D only) the Z axis gets 3-tap, stride-1 kernels and
    keeps its size (``Z' = Z``, any ``Z >= 1``), while Y and X are treated as above.

    ``norm="instance"`` (InstanceNorm without affine parameters, as in CycleGAN) does not depend on the
    batch size, which is usually small for microscopy patches; ``norm="batch"`` is pix2pix's choice.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        n_layers: int = 3,
        dims: int = 2,
        norm: Literal["instance", "batch"] = "instance",
        downsample_z: bool = True,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"PatchGAN dims must be 2 or 3, got {dims!r}")
        if norm not in ("instance", "batch"):
            raise ValueError(f"PatchGAN norm must be 'instance' or 'batch', got {norm!r}")
        if n_layers < 1:
            raise ValueError(f"PatchGAN n_layers must be >= 1, got {n_layers}")
        self.in_channels = in_channels
        self.spatial_dims = dims
        self.n_layers = n_layers
        self.downsample_z = downsample_z or dims == 2
        conv: Callable[..., nn.Module] = nn.Conv2d if dims == 2 else nn.Conv3d
        norm_layer: type[nn.Module]
        if norm == "instance":
            norm_layer = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        else:
            norm_layer = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        # A convolution followed by batch norm needs no bias; instance norm without affine parameters
        # keeps the convolution's bias (pix2pix's ``use_bias``).
        bias = norm == "instance"

        kernel: int | tuple[int, ...] = 4
        down: int | tuple[int, ...] = 2
        if not self.downsample_z:  # Z: 3 taps, stride 1, padding 1 keep its size; Y, X as in 2D
            kernel, down = (3, 4, 4), (1, 2, 2)

        layers: list[nn.Module] = [
            conv(in_channels, base_channels, kernel, stride=down, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = base_channels
        for n in range(1, n_layers + 1):
            out = base_channels * min(2**n, 8)
            layers += [
                conv(width, out, kernel, stride=down if n < n_layers else 1, padding=1, bias=bias),
                norm_layer(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = out
        layers.append(conv(width, 1, kernel, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    @property
    def min_size(self) -> int:
        """The smallest spatial extent that yields one patch logit."""
        return 3 * 2**self.n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("PatchGAN", x, self.in_channels, self.spatial_dims)
        checked = x.shape[2:] if self.downsample_z else x.shape[3:]
        if min(checked) < self.min_size:
            axes = "every spatial axis" if self.downsample_z else "Y and X"
            hint = (
                "; for thin volumes set downsample_z=false"
                if self.spatial_dims == 3 and self.downsample_z
                else ""
            )
            raise ValueError(
                f"PatchGAN with n_layers={self.n_layers} needs {axes} to be at least "
                f"{self.min_size} pixels, got {tuple(x.shape[2:])}{hint}"
            )
        return self.net(x)


class UNetSN(nn.Module):
    """U-Net discriminator with spectral normalisation (Wang et al., "Real-ESRGAN: Training Real-World
    Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021; ``UNetDiscriminatorSN``).

    Input ``(B, in_channels, Y, X)`` → per-pixel realness logits ``(B, 1, Y, X)``. Three stride-2
    downsampling convolutions (``base_channels`` → 8×), three bilinear ×2 upsampling stages with additive
    skip connections, two refinement convolutions and a 1-channel output; every convolution except the
    first and the last is spectrally normalised (Miyato et al., ICLR 2018), which bounds the critic's
    Lipschitz constant without batch statistics. Inputs whose sides are not multiples of 8 are padded
    (reflect, or replicate for tiny inputs) and the logits are cropped back, so any size works.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 64) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.spatial_dims = 2
        f = base_channels
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("UNetSN", x, self.in_channels, 2)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % 8, (-w) % 8
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3))) + x2
        x5 = act(self.conv5(up(x4))) + x1
        x6 = act(self.conv6(up(x5))) + x0
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out)[..., :h, :w]


class VGGStyle(nn.Module):
    """VGG-style discriminator of ESRGAN (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
    Adversarial Networks", ECCVW 2018; BasicSR's ``VGGStyleDiscriminator``).

    Input ``(B, in_channels, S, S)`` with ``S = input_size`` → one logit per image ``(B, 1)``. Each stage
    is a 3×3 convolution and a 4×4 stride-2 convolution (batch norm and LeakyReLU(0.2) after each, except
    after the very first convolution), with widths ``base_channels · (1, 2, 4, 8, 8, ...)``; stages repeat
    until the feature map is 4×4, then two linear layers (→ 100 → 1). ESRGAN uses ``input_size`` 128 (five
    stages) or 256 (six), which this reproduces exactly; any power of two ≥ 8 works with fewer or more
    stages (64 → four). ``input_size`` may also be given per axis, ``(S, S)``, as patch sizes can be. The
    linear head fixes the input size: other sizes raise a ``ValueError``.
    """

    def __init__(
        self, in_channels: int = 1, base_channels: int = 64, input_size: int | Sequence[int] = 128
    ) -> None:
        super().__init__()
        sizes = [int(input_size)] if isinstance(input_size, int) else [int(s) for s in input_size]
        if len(sizes) == 2 and sizes[0] == sizes[1]:
            sizes = sizes[:1]  # a square patch written per axis, (S, S)
        if len(sizes) != 1:
            raise ValueError(
                f"VGGStyle is a 2D discriminator for square patches but input_size is {list(sizes)}; "
                "for volumes use patchgan with dims=3"
            )
        input_size = sizes[0]
        if input_size < 8 or input_size & (input_size - 1):
            raise ValueError(
                f"VGGStyle input_size must be a power of two >= 8 (ESRGAN uses 128 or 256), got {input_size}"
            )
        self.in_channels = in_channels
        self.spatial_dims = 2
        self.input_size = input_size
        n_stages = (input_size // 4).bit_length() - 1  # halvings from input_size down to 4
        f = base_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, f, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f, f, 4, 2, 1, bias=False),
            nn.BatchNorm2d(f),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = f
        for stage in range(1, n_stages):
            out = f * min(2**stage, 8)
            layers += [
                nn.Conv2d(width, out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(out, out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * 4 * 4, 100),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(100, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("VGGStyle", x, self.in_channels, 2)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"VGGStyle was built for {self.input_size}×{self.input_size} inputs (input_size="
                f"{self.input_size}) but got {x.shape[-2]}×{x.shape[-1]}: set input_size to the patch size"
            )
        return self.head(self.features(x))
