"""U-Net generators from segmentation-models-pytorch, applied to the upsampled input (PSSR style)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from psr.models.layers import check_scale, skip_channels, skip_source, upsample_lateral


class UNet(nn.Module):
    """segmentation-models-pytorch ``Unet`` on the input upsampled by ``scale`` (PSSR's recipe).

    Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI
    2015, with a ResNet encoder (He et al., CVPR 2016) as in PSSR: Fang, Monroe, Novak, ..., Manor, "Deep
    learning-based point-scanning super-resolution imaging", Nature Methods 18, 406–416 (2021).

    Input ``(B, in_channels, Y, X)`` → output ``(B, out_channels, scale·Y, scale·X)``. The low-resolution
    input is first resized to the target grid (``upsample_mode``), then restored by the U-Net; with
    ``residual`` the U-Net predicts a correction to that interpolation (of every channel when in and out
    channels match, of the centre frame for a multi-frame input such as ``in_channels=5, out_channels=1``;
    see ``psr.models.layers.skip_channels``). Inputs whose upsampled size is not a multiple of
    ``2**encoder_depth`` are reflect-padded and cropped back, so any image size works. Encoder weights are
    random unless ``encoder_weights`` names a pretrained set (e.g. ``imagenet``), which must be downloadable
    or already in the Hugging Face / torch hub cache.
    """

    spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 4,
        encoder_name: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] | list[int] = (256, 128, 64, 32, 16),
        encoder_weights: str | None = None,
        upsample_mode: str = "bilinear",
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_scale(scale, "UNet")
        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != encoder_depth:
            raise ValueError(
                f"UNet decoder_channels has {len(decoder_channels)} entries but encoder_depth is"
                f" {encoder_depth}: give one decoder width per encoder stage"
            )
        if upsample_mode not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(
                f"UNet upsample_mode must be 'nearest', 'bilinear' or 'bicubic', got {upsample_mode!r}"
            )
        self.scale = int(scale)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.upsample_mode = upsample_mode
        self.residual = residual and skip_channels(in_channels, out_channels) is not None
        self.multiple = 2**encoder_depth
        try:
            self.net = smp.Unet(
                encoder_name=encoder_name,
                encoder_depth=encoder_depth,
                encoder_weights=encoder_weights,
                decoder_channels=decoder_channels,
                in_channels=in_channels,
                classes=out_channels,
            )
        except KeyError as err:  # smp's message for an unknown encoder or weight set, which lists the options
            raise ValueError(f"UNet: {err.args[0] if err.args else err}") from err
        except OSError as err:  # hub downloads fail with OSError subclasses (offline, not cached, HTTP error)
            raise RuntimeError(
                f"UNet could not fetch the pretrained encoder weights encoder_weights={encoder_weights!r} for"
                f" encoder_name={encoder_name!r}: they are not in the local cache and the download failed"
                f" ({type(err).__name__}: this machine is offline or the hub is unreachable)."
                " Use encoder_weights=None (model.encoder_weights=null on the command line) for a randomly"
                " initialised encoder, or download the weights once on a machine with network access into the"
                " Hugging Face cache (HF_HOME) or torch hub cache (TORCH_HOME) and copy that cache here."
            ) from err
        self._drop_unused_encoder_stages()

    def _drop_unused_encoder_stages(self) -> None:
        """Remove encoder stages beyond ``encoder_depth``.

        segmentation-models-pytorch builds every stage of the backbone and skips the deeper ones in
        ``forward``; their parameters would never get a gradient (and DDP would stall on them).
        """
        encoder = self.net.encoder
        probe = torch.zeros(1, self.in_channels, 2 * self.multiple, 2 * self.multiple)
        self.net.zero_grad(set_to_none=True)
        self.net.eval()  # no batch-norm statistics updates from the probe
        self.net(probe).sum().backward()
        self.net.train()
        for name, child in list(encoder.named_children()):
            params = list(child.parameters())
            if params and all(p.grad is None for p in params):
                delattr(encoder, name)
        self.net.zero_grad(set_to_none=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects (B, {self.in_channels}, Y, X), got a tensor of shape {tuple(x.shape)}"
            )
        x = upsample_lateral(x, self.scale, self.upsample_mode)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        padded = x
        if pad_h or pad_w:
            # Reflection needs the pad to be smaller than the axis; tiny inputs fall back to edge padding.
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self.net(padded)[..., :h, :w]
        if self.residual:
            skip = skip_source(x, self.out_channels)
            assert skip is not None  # residual is only set when a skip exists
            out = out + skip
        return out
