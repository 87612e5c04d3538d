"""The base recipe's objective: MONAI's Dice + cross-entropy, over deep-supervision outputs where a model has them."""

from __future__ import annotations

from typing import Any

import torch


def dice_ce_loss() -> Any:
    """Dice + CE on softmax outputs against integer labels, foreground classes only, Dice over the whole batch."""
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def deep_supervision_loss(ignore: int | None = None) -> Any:
    """:func:`dice_ce_loss` (or :class:`IgnoringDiceCE` where the dataset has an ``ignore`` label) on every
    deep-supervision output, exponentially down-weighted (MONAI's "exp" mode; it resizes the labels by nearest
    neighbour, so ignored voxels stay ignored)."""
    from monai.losses import DeepSupervisionLoss

    return DeepSupervisionLoss(dice_ce_loss() if ignore is None else IgnoringDiceCE(ignore), weight_mode="exp")


class IgnoringDiceCE(torch.nn.Module):
    """:func:`dice_ce_loss` that leaves out the voxels labelled ``ignore`` (nnU-Net's ignore label, for partly
    annotated images): they add no cross-entropy and count in no class's Dice, so nothing there is learnt.

    Without ignored voxels it equals :func:`dice_ce_loss` (foreground Dice over the batch, smoothing 1e-5, plus
    the mean cross-entropy); ``tests/training`` checks both.
    """

    def __init__(self, ignore: int, smooth: float = 1e-5) -> None:
        super().__init__()
        self.ignore, self.smooth = ignore, smooth

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        keep = label != self.ignore  # (B, 1, ...)
        target = torch.where(keep, label, torch.zeros_like(label)).long()[:, 0]
        k = logits.shape[1]
        onehot = torch.nn.functional.one_hot(target, k).movedim(-1, 1).float()
        probs = torch.softmax(logits.float(), 1)
        w = keep.float()
        dims = (0, *range(2, logits.ndim))
        inter = (probs[:, 1:] * onehot[:, 1:] * w).sum(dims)
        denom = ((probs[:, 1:] + onehot[:, 1:]) * w).sum(dims)
        dice = 1 - ((2 * inter + self.smooth) / (denom + self.smooth)).mean()
        ce = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
        return dice + (ce * w[:, 0]).sum() / w.sum().clamp_min(1.0)
