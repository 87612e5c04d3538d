"""The base recipe's objective: MONAI's Dice + cross-entropy, over deep-supervision outputs where a model has them."""

from __future__ import annotations

from typing import Any


def dice_ce_loss() -> Any:
    """Dice + CE on softmax outputs against integer labels, foreground classes only, Dice over the whole batch."""
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def deep_supervision_loss() -> Any:
    """:func:`dice_ce_loss` on every deep-supervision output, exponentially down-weighted (MONAI's "exp" mode)."""
    from monai.losses import DeepSupervisionLoss

    return DeepSupervisionLoss(dice_ce_loss(), weight_mode="exp")
