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
    annotated images): MONAI's ``MaskedDiceLoss`` (softmax first, then the mask) and torch's cross-entropy with
    ``ignore_index``, so those voxels add nothing and nothing there is learnt.

    Without ignored voxels it equals :func:`dice_ce_loss`; ``tests/training`` checks both.
    """

    def __init__(self, ignore: int, smooth: float = 1e-5) -> None:
        super().__init__()
        from monai.losses import MaskedDiceLoss

        self.ignore = ignore
        self.dice = MaskedDiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        keep = label != self.ignore  # (B, 1, ...)
        if not keep.any():  # nothing annotated in this batch: no signal, and no NaN from an empty mean
            return logits.sum() * 0.0
        dice = self.dice(logits.float(), torch.where(keep, label, torch.zeros_like(label)), mask=keep.float())
        ce = torch.nn.functional.cross_entropy(logits.float(), label[:, 0].long(), ignore_index=self.ignore)
        return dice + ce


class RegionDiceBCE(torch.nn.Module):
    """nnU-Net's loss for region-based labels: one sigmoid output per region (its voxels hold any of the region's
    label values), soft Dice over the batch plus binary cross-entropy. (MONAI's ``DiceCELoss(sigmoid=True)`` takes
    softmax cross-entropy for more than one channel, so the two parts are put together here.)"""

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
