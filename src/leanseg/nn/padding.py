"""Padding volumes to the sizes a network's pooling needs, and cropping back."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pad_to_multiple(
    x: torch.Tensor, divisor: tuple[int, int, int], minimum: tuple[int, int, int] | None = None
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad (B, C, D, H, W) symmetrically so each spatial size is a multiple of ``divisor`` (and >= ``minimum``).

    Returns the padded tensor and the slices that crop the result back.
    """
    sizes = x.shape[-3:]
    pads, crop = [], []
    for s, d, m in zip(sizes, divisor, minimum or (0, 0, 0)):
        target = max(int(np.ceil(s / d) * d), int(np.ceil(m / d) * d))
        before = (target - s) // 2
        pads.append((before, target - s - before))
        crop.append(slice(before, before + s))
    flat = [v for p in reversed(pads) for v in p]
    return F.pad(x, flat), (slice(None), slice(None), *crop)
