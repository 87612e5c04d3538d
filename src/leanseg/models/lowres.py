"""LowRes two-stage inference ("Accelerating 3D Medical Image Segmentation by Adaptive Small-Scale Target
Localization", J. Imaging 7(2):35, 2021): regions of interest for stage two. The networks come next.

A low-resolution probability map is thresholded, split into 26-connected components, and each
component gets a bounding box with a margin (in low-resolution voxels), clipped to the volume; the
boxes are scaled to full resolution by the downsampling factor. Stage two segments each box and
writes it back into a full-size map that starts at zero; where boxes overlap, the larger value wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Box = tuple[slice, slice, slice]


def low_res_boxes(prob: np.ndarray, threshold: float = 0.5, margin: int = 1) -> list[Box]:
    """Bounding boxes (with ``margin`` voxels, clipped to the map) of the components of ``prob >= threshold``.

    Args:
        prob: (D, H, W) low-resolution probability map.
    Returns:
        One tuple of slices per component, in component order.
    """
    import scipy.ndimage as ndi

    from leanseg.objects import components

    labels, n = components(np.asarray(prob) >= threshold)
    boxes = []
    for sl in ndi.find_objects(labels, max_label=n):
        if sl is None:
            continue
        boxes.append(tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(sl, labels.shape)))
    return boxes  # type: ignore[return-value]


def scale_box(box: Box, factor: int | Sequence[int], full_shape: Sequence[int]) -> Box:
    """A low-resolution box in full-resolution voxels (``factor`` per axis), clipped to ``full_shape``."""
    f = (factor,) * 3 if isinstance(factor, int) else tuple(factor)
    return tuple(slice(s.start * k, min(s.stop * k, n)) for s, k, n in zip(box, f, full_shape))  # type: ignore[return-value]


def box_fraction(boxes: Sequence[Box], shape: Sequence[int]) -> float:
    """Share of the volume's voxels inside at least one box."""
    covered = np.zeros(tuple(shape), bool)
    for b in boxes:
        covered[b] = True
    return float(covered.mean())


def paste_boxes(shape: Sequence[int], boxes: Sequence[Box], outputs: Sequence[torch.Tensor], channels: int = 1) -> torch.Tensor:
    """A zero (C, D, H, W) map with each output (C, d, h, w) written into its box (element-wise max where boxes overlap)."""
    full = torch.zeros((channels, *shape), dtype=outputs[0].dtype if outputs else torch.float32)
    for b, out in zip(boxes, outputs):
        region = full[(slice(None), *b)]
        if tuple(out.shape[-3:]) != tuple(region.shape[-3:]):
            raise ValueError(f"output {tuple(out.shape)} does not fit its box {tuple(region.shape)}")
        full[(slice(None), *b)] = torch.maximum(region, out)
    return full
