"""Object-wise recall, FROC and object Dice against cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanseg.objects import froc_curve, match_objects, object_metrics, recall_by_size, score_probabilities


def cube(shape, corner, size) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(c, c + size) for c in corner)] = True
    return m


def test_hits_misses_false_positives_and_object_dice_by_hand() -> None:
    shape = (20, 20, 20)
    ref = cube(shape, (1, 1, 1), 4) | cube(shape, (10, 10, 10), 2)  # two objects: 64 and 8 voxels
    # one prediction covering half of object 1 (32 voxels), one false positive far away, object 2 missed
    pred = cube(shape, (1, 1, 1), 4) & (np.indices(shape)[0] < 3)
    pred |= cube(shape, (15, 1, 15), 3)
    prob = np.where(pred, 0.6, 0.0)
    prob[15, 1, 15] = 0.9  # the false positive's best voxel
    c = match_objects(pred, ref, prob)
    assert c.num_targets == 2 and c.hits == [True, False]
    assert c.tp_scores == [pytest.approx(0.6)] and c.fp_scores == [pytest.approx(0.9)]
    assert c.object_dice == [pytest.approx(2 * 32 / (32 + 64)), 0.0]
    m = object_metrics([c])
    assert m["object_recall"] == 0.5 and m["fp_per_scan"] == 1.0
    assert m["object_dice"] == pytest.approx((2 / 3 + 0) / 2)


def test_probabilities_are_scored_as_their_label_map_with_foreground_confidence() -> None:
    shape = (16, 16, 16)
    ref = cube(shape, (1, 1, 1), 4)
    fg = np.where(cube(shape, (1, 1, 1), 4), 0.8, 0.1)
    fg[cube(shape, (10, 10, 10), 2)] = 0.7  # a false positive, less confident
    fg[12, 12, 12] = 0.45  # under one half: background in the label map, no object
    probs = np.stack([1 - fg, fg])
    c, pred = score_probabilities(probs, ref)
    assert c.hits == [True] and c.tp_scores == [pytest.approx(0.8)] and c.fp_scores == [pytest.approx(0.7)]
    assert pred.sum() == 64 + 8 and pred[ref].all()
    three = np.stack([1 - fg, fg * 0.4, fg * 0.6])  # two foreground classes: either one is object
    c3, pred3 = score_probabilities(three, ref)
    assert c3.hits == [True] and len(c3.fp_scores) == 1 and np.array_equal(pred3, pred)
    assert score_probabilities(np.stack([np.ones(shape), np.zeros(shape)]), np.zeros(shape))[0].num_targets == 0


def test_touching_predictions_merge_and_one_prediction_can_hit_two_objects() -> None:
    shape = (12, 12, 12)
    ref = cube(shape, (1, 1, 1), 3) | cube(shape, (1, 6, 1), 3)  # two separate objects
    pred = cube(shape, (1, 1, 1), 3) | cube(shape, (1, 4, 1), 3) | cube(shape, (1, 6, 1), 3)  # one bridged component
    c = match_objects(pred, ref)
    assert c.hits == [True, True] and c.fp_scores == []
    union = pred.sum()
    assert c.object_dice == [pytest.approx(2 * 27 / (union + 27))] * 2
    diagonal = cube(shape, (8, 8, 8), 1) | cube(shape, (9, 9, 9), 1)  # corner-touching voxels: one 26-connected object
    assert match_objects(diagonal, diagonal).num_targets == 1


def test_froc_curve_and_scores_by_hand() -> None:
    shape = (30, 10, 10)
    # scan A: 2 objects, hit with scores 0.9 and 0.4, one FP at 0.7 ; scan B: 1 object missed, one FP at 0.3
    ref_a = cube(shape, (1, 1, 1), 2) | cube(shape, (10, 1, 1), 2)
    pred_a = ref_a | cube(shape, (20, 1, 1), 2)
    prob_a = np.zeros(shape)
    prob_a[ref_a & (np.indices(shape)[0] < 5)] = 0.9
    prob_a[ref_a & (np.indices(shape)[0] >= 5)] = 0.4
    prob_a[cube(shape, (20, 1, 1), 2)] = 0.7
    ref_b = cube(shape, (1, 1, 1), 2)
    pred_b = cube(shape, (20, 5, 5), 2)
    a, b = match_objects(pred_a, ref_a, prob_a), match_objects(pred_b, ref_b, np.where(pred_b, 0.3, 0.0))
    fps, sens = froc_curve([a, b])
    # thresholds 0.3, 0.4, 0.7, 0.9 and none: FP/scan 1, 0.5, 0.5, 0, 0 ; sensitivity 2/3, 2/3, 1/3, 1/3, 0
    assert fps.tolist() == [1.0, 0.5, 0.0]
    assert sens.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    m = object_metrics([a, b])
    assert m["object_recall"] == pytest.approx(2 / 3)
    # LUNA16: sensitivity at 1/8, 1/4 -> interpolated between (0, 1/3) and (0.5, 2/3); >= 0.5 -> 2/3
    at = [1 / 3 + (f / 0.5) * (1 / 3) for f in (0.125, 0.25)] + [2 / 3] * 5
    assert m["froc_luna16"] == pytest.approx(np.mean(at))
    grid = np.round(np.arange(0, 5.0001, 0.01), 2)
    assert m["froc_avg_recall_0_5"] == pytest.approx(np.mean([1 / 3 + min(f, 0.5) / 0.5 / 3 for f in grid]))


def test_no_objects_gives_nan_not_a_crash() -> None:
    z = np.zeros((5, 5, 5), bool)
    m = object_metrics([match_objects(z, z)])
    assert math.isnan(m["object_recall"]) and math.isnan(m["froc_luna16"])


def test_recall_by_size_bins_objects_by_their_diameter_in_millimetres() -> None:
    shape = (40, 40, 40)
    # at 2 x 1 x 1 mm, cubes of 2, 4 and 8 voxels a side hold 16, 128 and 1024 mm^3: spheres of 3.1, 6.3, 12.5 mm
    ref = cube(shape, (1, 1, 1), 2) | cube(shape, (10, 10, 10), 4) | cube(shape, (25, 25, 25), 8)
    pred = cube(shape, (10, 10, 10), 4)  # only the middle one found
    c = match_objects(pred, ref, spacing=(2.0, 1.0, 1.0))
    assert c.sizes_mm == pytest.approx([(6 * v / math.pi) ** (1 / 3) for v in (16, 128, 1024)])
    tiny = match_objects(cube(shape, (1, 1, 1), 1), cube(shape, (1, 1, 1), 1), spacing=(1.0, 1.0, 1.0))  # 1.2 mm
    by = recall_by_size([c, tiny], ((3, 5), (5, 10), (10, 30)))
    assert by["3-5 mm"] == {"objects": 2, "recall": 0.5}  # the 3.1 mm miss and the 1.2 mm hit (below the first band)
    assert by["5-10 mm"] == {"objects": 1, "recall": 1.0} and by["10-30 mm"] == {"objects": 1, "recall": 0.0}
    assert match_objects(pred, ref).sizes_mm[1] == pytest.approx((6 * 64 / math.pi) ** (1 / 3))  # voxels without spacing
