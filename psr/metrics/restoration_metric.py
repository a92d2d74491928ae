"""The validation, test and cross-evaluation scores of a restoration: one ``torchmetrics.Metric``.

:class:`RestorationScores` accumulates, image by image, every score of :data:`IMAGE_SCORES` (PSNR and
SSIM: psr's own kernels, :mod:`psr.metrics.image`, each image with its target's own max − min as the data
range) of a restoration and of a baseline (the interpolated input) against the target and, optionally,
the training loss. Its states are sums and counts, so ``compute`` is the mean over every image seen, and
under DDP torchmetrics sums them over the processes before dividing: the logged figures describe the
whole set, whichever process saw which images.

A new validation score is a per-image kernel and one line in :data:`IMAGE_SCORES`: training logs it as
``val/<name>`` and ``val/baseline_<name>`` (``test/…`` on held-out pairs), cross-evaluation reports it,
and ``summary.json`` keeps it in every epoch's history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics import Metric

from psr.metrics.image import psnr, ssim
from psr.metrics.keys import LOSS, PSNR, SSIM, baseline


def plane_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image ``(B,)`` of ``(B, C, Y, X)`` or ``(B, C, Z, Y, X)`` batches. A 3D patch (often only a
    few planes deep, less than the SSIM window) scores the mean SSIM of its Z planes, each plane with the
    whole volume's max − min as the data range."""
    if pred.dim() == 4:
        return ssim(pred, target)
    b, c, z = target.shape[:3]
    flat = target.flatten(1)
    data_range = (flat.amax(1) - flat.amin(1)).clamp_min(1e-12).repeat_interleave(z)
    planes = ssim(
        pred.transpose(1, 2).reshape(b * z, c, *pred.shape[3:]),
        target.transpose(1, 2).reshape(b * z, c, *target.shape[3:]),
        data_range=data_range,
    )
    return planes.view(b, z).mean(1)


ImageScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# name -> per-image score ``(B,)`` of images against targets ``(B, C, [Z,] Y, X)``, each image with its
# target's own max − min as the data range. The order is the row order of ``image_scores``.
IMAGE_SCORES: dict[str, ImageScore] = {PSNR: psnr, SSIM: plane_ssim}


def image_scores(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(K, B)``: each score of :data:`IMAGE_SCORES` (PSNR in dB, SSIM, …) of each image of ``images``
    against ``target`` (same shapes), float64."""
    return torch.stack([score(images, target).double() for score in IMAGE_SCORES.values()])


class RestorationScores(Metric):
    """Mean per-image scores (:data:`IMAGE_SCORES`) of a restoration and of its baseline, and the mean loss.

    ``update(pred, target, baseline=..., loss=...)`` takes a batch ``(B, C, [Z,] Y, X)``: the restoration,
    its target and either the ``baseline`` images or their ``baseline_scores`` (``(K, B)`` from
    :func:`image_scores`, for a caller that has them already); ``loss`` is the batch's mean loss.
    ``compute()`` returns ``{"psnr", "ssim", …, "baseline_psnr", "baseline_ssim", …}`` (plus ``"loss"``
    when losses were given) as float64 scalars, means over images; empty when no image was scored.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    loss: torch.Tensor
    count: torch.Tensor
    loss_count: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The states (float64 sums, summed over DDP processes): one per score and baseline score, the
        # loss, and the counts. The score names are fixed when the metric is made.
        self.scores = (*IMAGE_SCORES, *(baseline(name) for name in IMAGE_SCORES))
        for key in (*self.scores, LOSS, "count", "loss_count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _apply(self, fn: Any, exclude_state: Any = "") -> torch.nn.Module:
        # Apple's MPS has no float64: the sums follow the module there as float32.
        if fn(torch.zeros(())).device.type == "mps":
            for key, default in self._defaults.items():
                if isinstance(default, torch.Tensor):
                    self._defaults[key] = default.float()
                    setattr(self, key, getattr(self, key).float())
        return super()._apply(fn, exclude_state)

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        baseline: torch.Tensor | None = None,
        baseline_scores: torch.Tensor | None = None,
        loss: torch.Tensor | float | None = None,
    ) -> None:
        if (baseline is None) == (baseline_scores is None):
            raise ValueError("RestorationScores.update needs either baseline images or baseline_scores")
        n = target.shape[0]
        if baseline_scores is None:
            assert baseline is not None
            baseline_scores = image_scores(baseline, target)
        k = len(self.scores) // 2
        if tuple(baseline_scores.shape) != (k, n):
            raise ValueError(
                f"baseline_scores has shape {tuple(baseline_scores.shape)}; expected ({k}, {n}) from image_scores"
            )
        own = image_scores(pred, target)
        dtype = self.count.dtype
        for key, values in zip(self.scores, (*own, *baseline_scores), strict=True):
            setattr(self, key, getattr(self, key) + values.sum().to(dtype))
        self.count += n
        if loss is not None:
            loss_value = torch.as_tensor(loss, device=self.count.device).detach().to(dtype)
            self.loss += loss_value * n
            self.loss_count += n

    def compute(self) -> dict[str, torch.Tensor]:
        if not float(self.count):
            return {}
        means = {LOSS: self.loss / self.loss_count} if float(self.loss_count) else {}
        means.update({key: getattr(self, key) / self.count for key in self.scores})
        return means
