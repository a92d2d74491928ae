"""Image quality metrics on batched tensors."""

from psr.metrics.image import psnr, ssim

__all__ = ["psnr", "ssim"]
