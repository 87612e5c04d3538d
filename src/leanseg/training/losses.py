"""The base recipe's objective: MONAI's Dice + cross-entropy, over deep-supervision outputs where a model has them."""

from __future__ import annotations

from typing import Any

import torch


def dice_ce_loss() -> Any:
    """Dice + CE on softmax outputs against integer labels, foreground classes only, Dice over the whole batch."""
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def deep_supervision_loss(ignore: int | None = None, regions: Any = None) -> Any:
    """:func:`dice_ce_loss` (:class:`IgnoringDiceCE` where the dataset has an ``ignore`` label, :class:`RegionDiceBCE`
    where its labels are regions) on every deep-supervision output, exponentially down-weighted (MONAI's "exp" mode;
    it resizes the labels by nearest neighbour, so label values, ignored ones included, stay what they are)."""
    from monai.losses import DeepSupervisionLoss

    if regions:
        if ignore is not None:
            from leanseg.errors import LeansegError

            raise LeansegError("Region-based labels with an 'ignore' label are not supported yet; drop one of them.")
        return DeepSupervisionLoss(RegionDiceBCE(regions), weight_mode="exp")
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


class RegionDiceBCE(torch.nn.Module):
    """nnU-Net's loss for region-based labels: one sigmoid output per region (its voxels hold any of the region's
    label values), soft Dice over the batch plus binary cross-entropy."""

    def __init__(self, regions: Any, smooth: float = 1e-5) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.regions = [tuple(int(v) for v in r) for r in regions]
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        target = region_targets(label, self.regions)
        return self.dice(logits.float(), target) + torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


def region_targets(label: torch.Tensor, regions: Any) -> torch.Tensor:
    """(B, 1, ...) label values -> (B, R, ...) float masks, one per region."""
    values = label[:, 0].long()
    return torch.stack([torch.isin(values, torch.tensor(r, device=label.device)) for r in regions], 1).float()
