"""3D RCAN for volumes ``(Z, Y, X)``: RCAN's blocks with 3×3×3 convolutions, upsampling Y and X only."""

from __future__ import annotations

from psr.models.rcan import RCAN


class RCAN3D(RCAN):
    """Residual channel-attention network on ``(B, C, Z, Y, X)`` stacks, upsampling laterally by ``scale``.

    Chen, Ding, Wu, ..., Shroff, "Three-dimensional residual channel attention networks denoise and sharpen
    fluorescence microscopy image volumes", Nature Methods 18, 678–687 (2021), after RCAN (Zhang et al.,
    ECCV 2018). The defaults follow 3D-RCAN: 5 residual groups of 3 blocks, 32 channels, reduction 8.

    Input ``(B, in_channels, Z, Y, X)`` → output ``(B, out_channels, Z, scale·Y, scale·X)``: Z is never
    upsampled (axial sampling is left to the acquisition). Convolutions and channel attention
    (``AdaptiveAvgPool3d``) are 3D, the pixel shuffle is lateral (``PixelShuffle3dLateral``), and the global
    residual adds the input resized in Y and X with linear interpolation, slice by slice. 3D-RCAN itself
    restores at the input size: ``scale=1`` is that network.
    """

    spatial_dims: int = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 4,
        n_feats: int = 32,
        n_groups: int = 5,
        n_blocks: int = 3,
        reduction: int = 8,
        res_scale: float = 1.0,
        global_residual: bool = True,
        dims: int = 3,
    ) -> None:
        super().__init__(
            dims=dims,
            in_channels=in_channels,
            out_channels=out_channels,
            scale=scale,
            n_feats=n_feats,
            n_groups=n_groups,
            n_blocks=n_blocks,
            reduction=reduction,
            res_scale=res_scale,
            global_residual=global_residual,
        )
