"""Stage-two regions of the LowRes model: boxes, margins at the volume edges, merging components, writing back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanseg.models.lowres import box_fraction, low_res_boxes, paste_boxes, scale_box


def test_boxes_get_a_margin_clipped_at_the_volume_edges() -> None:
    p = np.zeros((10, 10, 10))
    p[0:2, 4:6, 8:10] = 0.9  # touches three faces
    p[5, 5, 5] = 0.6
    p[7, 7, 7] = 0.4  # below the threshold
    boxes = low_res_boxes(p, 0.5, margin=1)
    assert boxes == [(slice(0, 3), slice(3, 7), slice(7, 10)), (slice(4, 7), slice(4, 7), slice(4, 7))]


def test_touching_components_merge_into_one_box_and_separate_ones_do_not() -> None:
    p = np.zeros((12, 12, 12))
    p[2:4, 2:4, 2:4] = 1
    p[4, 4, 4] = 1  # corner-touching: one 26-connected component
    p[8:10, 8:10, 8:10] = 1
    boxes = low_res_boxes(p, 0.5, margin=0)
    assert boxes == [(slice(2, 5),) * 3, (slice(8, 10),) * 3]


def test_scaling_to_full_resolution_clips_to_the_full_shape() -> None:
    assert scale_box((slice(0, 3), slice(3, 7), slice(7, 10)), 8, (75, 80, 77)) == (slice(0, 24), slice(24, 56), slice(56, 77))
    assert scale_box((slice(1, 2),) * 3, (8, 8, 4), (64, 64, 32)) == (slice(8, 16), slice(8, 16), slice(4, 8))


def test_paste_writes_each_box_into_a_zero_map_and_overlaps_keep_the_max() -> None:
    b1, b2 = (slice(0, 4), slice(0, 4), slice(0, 4)), (slice(2, 6), slice(2, 6), slice(2, 6))
    o1, o2 = torch.full((1, 4, 4, 4), 0.3), torch.full((1, 4, 4, 4), 0.8)
    full = paste_boxes((8, 8, 8), [b1, b2], [o1, o2])
    assert full.shape == (1, 8, 8, 8)
    assert full[0, 0, 0, 0] == pytest.approx(0.3) and full[0, 3, 3, 3] == pytest.approx(0.8) and full[0, 7, 7, 7] == 0
    assert full.sum().item() == pytest.approx(0.3 * (64 - 8) + 0.8 * 64)
    assert box_fraction([b1, b2], (8, 8, 8)) == pytest.approx((64 + 64 - 8) / 512)
    with pytest.raises(ValueError, match="does not fit"):
        paste_boxes((8, 8, 8), [b1], [torch.zeros(1, 3, 4, 4)])
