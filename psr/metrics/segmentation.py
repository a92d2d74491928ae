"""Segmentation metrics and post-processing: per-class IoU / Dice from a confusion matrix (batched tensors),
instance masks from foreground / boundary probability maps by seeded watershed (scikit-image), and the
matching-based instance F1 and average precision at an IoU threshold.

Semantic scores accumulate a ``(classes, classes)`` confusion matrix over a whole set (pixels of every
image pooled), the usual definition of a data set's IoU. Instance scores follow the matching convention of
the 2018 Data Science Bowl and StarDist (Schmidt et al., MICCAI 2018): a predicted object and a true object
match when their IoU reaches the threshold (one-to-one, by the Hungarian assignment); precision
``TP/(TP+FP)``, recall ``TP/(TP+FN)``, F1, and the "average precision" ``TP/(TP+FP+FN)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Three-class targets for instance segmentation: background, object interior, object boundary.
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """``(classes, classes)`` int64 counts, rows the true class and columns the predicted one, of class
    maps ``pred`` and ``target`` of any equal shape (e.g. ``(B, Y, X)``)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    index = target.reshape(-1).long() * classes + pred.reshape(-1).long()
    counts = torch.bincount(index, minlength=classes * classes)
    return counts[: classes * classes].reshape(classes, classes)


def iou_dice(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU and Dice ``(classes,)`` float64 from a confusion matrix; NaN for a class that is
    neither in the target nor in the prediction."""
    m = matrix.double()
    inter = m.diagonal()
    truth, predicted = m.sum(1), m.sum(0)
    union = truth + predicted - inter
    nan = torch.full_like(inter, float("nan"))
    iou = torch.where(union > 0, inter / union.clamp_min(1), nan)
    dice = torch.where(union > 0, 2 * inter / (truth + predicted).clamp_min(1), nan)
    return iou, dice


def boundaries(instances: torch.Tensor) -> torch.Tensor:
    """Boundary pixels ``(B, Y, X)`` bool of instance maps ``(B, Y, X)`` (0 = background): object pixels
    with a 4-neighbour of another id (another object or the background). Batched, on the device."""
    x = instances.float()[:, None]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    centre = padded[..., 1:-1, 1:-1]
    neighbours = (
        padded[..., :-2, 1:-1],
        padded[..., 2:, 1:-1],
        padded[..., 1:-1, :-2],
        padded[..., 1:-1, 2:],
    )
    differs = torch.zeros_like(centre, dtype=torch.bool)
    for n in neighbours:
        differs |= n != centre
    return (differs & (centre > 0))[:, 0]


def three_class_targets(instances: torch.Tensor) -> torch.Tensor:
    """Instance maps ``(B, Y, X)`` → class maps ``(B, Y, X)`` int64: background 0, interior 1, boundary 2."""
    out = (instances > 0).long() * INTERIOR
    return torch.where(boundaries(instances), torch.full_like(out, BOUNDARY), out)


def watershed_instances(
    elevation: np.ndarray, seeds: np.ndarray, mask: np.ndarray, min_seed_size: int = 4
) -> np.ndarray:
    """Instances ``(Y, X)`` int32: the connected components of ``seeds`` (those of at least
    ``min_seed_size`` pixels) flooded over ``elevation`` within ``mask`` (scikit-image's watershed)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    markers, n = ndimage.label(seeds)
    if n and min_seed_size > 1:
        sizes = np.bincount(markers.ravel())
        small = sizes < min_seed_size
        small[0] = False
        markers[small[markers]] = 0
        markers, _ = ndimage.label(markers > 0)
    return np.asarray(watershed(elevation, markers, mask=mask), dtype=np.int32)


def instances_from_three_class(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Instances from three-class probabilities ``(3, Y, X)`` (background, interior, boundary): seeds where
    the interior is the most likely class, flooded over the boundary probability within the foreground
    (background probability below ``threshold``)."""
    seeds = probs.argmax(0) == INTERIOR
    return watershed_instances(probs[BOUNDARY], seeds, probs[BACKGROUND] < threshold)


def instances_from_boundary(
    boundary: np.ndarray, threshold: float = 0.5, seed_threshold: float = 0.2
) -> np.ndarray:
    """Regions enclosed by boundaries (membranes), from a boundary probability ``(Y, X)``: seeds where a
    boundary is very unlikely (``< seed_threshold``), flooded over the probability within
    ``boundary < threshold`` (so a gap in a predicted membrane does not merge two cells)."""
    return watershed_instances(boundary, boundary < seed_threshold, boundary < threshold)


def regions_of(labels: np.ndarray, exclude: int) -> np.ndarray:
    """The connected regions (4-connectivity) of a class map ``(Y, X)`` outside class ``exclude`` (e.g.
    the cells between membranes), as instances int32."""
    from scipy import ndimage

    regions, _ = ndimage.label(labels != exclude)
    return np.asarray(regions, dtype=np.int32)


@dataclass(frozen=True)
class Matching:
    """Counts of an instance matching at one IoU threshold, and the scores derived from them."""

    tp: int
    fp: int
    fn: int
    matched_iou: float  # the summed IoU of the matched pairs

    def __add__(self, other: Matching) -> Matching:
        return Matching(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.matched_iou + other.matched_iou
        )

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else float("nan")

    @property
    def ap(self) -> float:
        """``TP / (TP + FP + FN)``: the Data Science Bowl 2018 / StarDist "average precision"."""
        total = self.tp + self.fp + self.fn
        return self.tp / total if total else float("nan")

    def scores(self) -> dict[str, float]:
        return {
            "f1": self.f1,
            "ap": self.ap,
            "precision": self.precision,
            "recall": self.recall,
            "mean_matched_iou": self.matched_iou / self.tp if self.tp else float("nan"),
            "tp": float(self.tp),
            "fp": float(self.fp),
            "fn": float(self.fn),
        }


def match_instances(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> Matching:
    """One-to-one matching of the objects of ``pred`` and ``truth`` (instance maps of equal shape, 0 =
    background) whose IoU is at least ``threshold``, maximising the matched IoU (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_area = np.bincount(p_inv)
    t_area = np.bincount(t_inv)
    overlap = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids))
    overlap = overlap.reshape(len(t_ids), len(p_ids))
    # Drop background rows/columns (id 0 sorts first when present).
    t_keep = t_ids != 0
    p_keep = p_ids != 0
    overlap = overlap[np.ix_(t_keep, p_keep)]
    t_area, p_area = t_area[t_keep], p_area[p_keep]
    n_true, n_pred = overlap.shape
    if n_true == 0 or n_pred == 0:
        return Matching(0, n_pred, n_true, 0.0)
    union = t_area[:, None] + p_area[None, :] - overlap
    iou = overlap / np.maximum(union, 1)
    candidate = iou >= threshold
    rows, cols = linear_sum_assignment(np.where(candidate, -iou, 0.0))
    good = candidate[rows, cols]
    tp = int(good.sum())
    return Matching(tp, n_pred - tp, n_true - tp, float(iou[rows[good], cols[good]].sum()))
