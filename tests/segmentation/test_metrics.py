"""Segmentation metrics: IoU / Dice from counts, boundaries, watershed instances, instance matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psr.metrics.segmentation import (
    boundaries,
    confusion_matrix,
    instances_from_boundary,
    instances_from_three_class,
    iou_dice,
    match_instances,
    regions_of,
    three_class_targets,
)
from tests.segmentation.conftest import discs


def test_iou_and_dice_match_their_definition() -> None:
    target = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0]])
    matrix = confusion_matrix(pred, target, 3)
    assert matrix.sum() == 6 and matrix[1, 1] == 2 and matrix[0, 1] == 1
    iou, dice = iou_dice(matrix)
    # class 1: intersection 2, union 3; class 2: intersection 1, union 2; class 0: 1 / 3
    assert iou.tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert dice.tolist() == pytest.approx([2 / 4, 4 / 5, 2 / 3])


def test_absent_class_is_nan_not_zero() -> None:
    iou, dice = iou_dice(
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2)
    )
    assert iou[0] == 1 and torch.isnan(iou[1]) and torch.isnan(dice[1])


def test_boundaries_are_the_object_pixels_next_to_another_id() -> None:
    label = torch.zeros(1, 8, 10, dtype=torch.long)
    label[0, 1:7, 1:5] = 1
    label[0, 1:7, 5:9] = 2
    edge = boundaries(label)[0]
    assert not edge[label[0] == 0].any()  # background is never a boundary
    assert edge[1:7, 4].all() and edge[1:7, 5].all()  # where the two objects touch
    assert edge[1, 1:9].all() and edge[1:7, 1].all()  # where they meet the background
    assert not edge[2:6, 2:4].any() and not edge[2:6, 6:8].any()  # interiors
    classes = three_class_targets(label)[0]
    assert classes[3, 2] == 1 and classes[3, 4] == 2 and classes[0, 0] == 0


def test_three_class_watershed_recovers_touching_discs() -> None:
    truth = discs(64, 6, 3).astype(np.int64)
    classes = three_class_targets(torch.from_numpy(truth)[None])[0].numpy()
    probs = np.stack([(classes == c).astype(np.float32) for c in range(3)])
    found = instances_from_three_class(probs)
    result = match_instances(found, truth, 0.5)
    assert (result.tp, result.fp, result.fn) == (6, 0, 0)
    assert result.f1 == 1.0 and result.ap == 1.0


def test_membrane_watershed_closes_a_gap_left_by_the_prediction() -> None:
    label = np.zeros((20, 40), np.int64)
    label[:, 19:21] = 1  # a membrane between two cells
    truth = regions_of(label, exclude=1)
    assert truth.max() == 2
    boundary = (label == 1).astype(np.float32)
    boundary[9:11, 19:21] = 0.3  # a weak spot: above the seed threshold, below the mask threshold
    found = instances_from_boundary(boundary, threshold=0.5, seed_threshold=0.2)
    assert len(np.unique(found[found > 0])) == 2
    assert match_instances(found, truth).tp == 2


def test_matching_counts_and_threshold() -> None:
    truth = np.zeros((10, 10), np.int32)
    truth[:5, :5] = 1  # 25 px
    truth[6:, 6:] = 2  # 16 px
    pred = np.zeros_like(truth)
    pred[:5, :4] = 7  # IoU 20/25 with object 1
    pred[6:, 8:] = 9  # IoU 8/16 with object 2
    pred[0, 9] = 3  # a spurious object
    at_half = match_instances(pred, truth, 0.5)
    assert (at_half.tp, at_half.fp, at_half.fn) == (2, 1, 0)
    assert at_half.scores()["mean_matched_iou"] == pytest.approx((0.8 + 0.5) / 2)
    strict = match_instances(pred, truth, 0.6)
    assert (strict.tp, strict.fp, strict.fn) == (1, 2, 1)
    assert strict.f1 == pytest.approx(2 / (2 + 3)) and strict.ap == pytest.approx(1 / 4)
    empty = match_instances(np.zeros_like(truth), truth)
    assert (empty.tp, empty.fn) == (0, 2) and empty.f1 == 0.0
