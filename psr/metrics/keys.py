"""The names psr logs its scores under, written once: ``"val/psnr"`` is ``VAL_PSNR``.

A logged key is ``<stage>/<score>``: the stage (``train``, ``val``, ``test``, and cross-evaluation's own
prefixes) and the score (``psnr``, ``ssim``, the bilinear baseline's ``baseline_psnr`` and
``baseline_ssim``, their difference ``gain_db``, ``loss``). The monitored metric is
``conf/module/restoration.yaml``'s ``monitor`` (``VAL_PSNR``); ``optimized_metric`` and the checkpoint
callback interpolate it (``${module.monitor}``) rather than repeat it.
"""

from __future__ import annotations

TRAIN, VAL, TEST = "train", "val", "test"
LOSS, PSNR, SSIM = "loss", "psnr", "ssim"
BASELINE_PSNR, BASELINE_SSIM, GAIN_DB = "baseline_psnr", "baseline_ssim", "gain_db"
SCORES = (LOSS, PSNR, SSIM, BASELINE_PSNR, BASELINE_SSIM)  # what each validation step accumulates


def baseline(score: str) -> str:
    """The baseline's name for a score: ``baseline(PSNR) == BASELINE_PSNR``."""
    return f"baseline_{score}"


def metric_key(stage: str, score: str) -> str:
    """``"<stage>/<score>"``, e.g. ``metric_key(VAL, PSNR) == "val/psnr"``."""
    return f"{stage}/{score}"


TRAIN_LOSS = metric_key(TRAIN, LOSS)
VAL_LOSS = metric_key(VAL, LOSS)
VAL_PSNR = metric_key(VAL, PSNR)
VAL_SSIM = metric_key(VAL, SSIM)
VAL_BASELINE_PSNR = metric_key(VAL, BASELINE_PSNR)
VAL_BASELINE_SSIM = metric_key(VAL, BASELINE_SSIM)
VAL_GAIN_DB = metric_key(VAL, GAIN_DB)
DEFAULT_MONITOR = VAL_PSNR

# Segmentation (module=segmentation): mean foreground IoU / Dice, per class under ``<key>/<class>``,
# pixel accuracy and, for instance masks, matching scores (``f1``, ``ap``, ``precision``, ``recall``).
IOU, DICE, PIXEL_ACCURACY, F1, AP = "iou", "dice", "pixel_accuracy", "f1", "ap"
VAL_IOU = metric_key(VAL, IOU)
VAL_DICE = metric_key(VAL, DICE)
VAL_F1 = metric_key(VAL, F1)
VAL_AP = metric_key(VAL, AP)
SEGMENTATION_MONITOR = VAL_IOU
