"""Validation Dice on preprocessed cases (nnU-Net's pseudo-Dice: no resampling back to the original grid)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.config import ExperimentConfig
from leanseg.data.preprocess import CachedCase
from leanseg.plan import Plan


def validate(
    model: torch.nn.Module, cache_dir: Path, case_ids: list[str], plan: Plan, cfg: ExperimentConfig, bf16: bool = False
) -> dict[str, float]:
    """Dice per foreground class (``val_dice_<k>``) and their mean (``val_dice``); the model is left in train mode."""
    from leanseg.inference import torch_net

    net = torch_net(model, "bf16" if bf16 else "eager")
    icfg = replace(cfg.inference, mode="whole") if model.whole_volume else cfg.inference
    arr = case_dice(net, cache_dir, case_ids, plan, plan.patch_size, model.divisor, icfg)
    model.train()
    classes = [k for k in plan.labels if k != 0]
    out = {f"val_dice_{k}": float(np.nanmean(arr[:, i])) for i, k in enumerate(classes)}
    out["val_dice"] = mean_dice(arr)
    return out


def case_dice(
    net: Callable[[torch.Tensor], torch.Tensor],
    cache_dir: Path,
    case_ids: list[str],
    plan: Plan,
    patch_size: Sequence[int],
    divisor: Any,
    icfg: Any,
) -> np.ndarray:
    """Foreground Dice per case and class (cases x classes; NaN: class absent) of ``net`` on preprocessed cases."""
    from leanseg.inference import label_map, predict_probabilities
    from leanseg.metrics import dice, dice_per_class, without_ignored

    classes = [k for k in plan.labels if k != 0]
    scores = []
    for cid in case_ids:
        case = CachedCase(cache_dir, cid)
        probs = predict_probabilities(net, torch.from_numpy(np.array(case.image)), patch_size, divisor, icfg, sigmoid=bool(plan.regions))
        ref = np.asarray(case.label).reshape(probs.shape[1:])
        if plan.regions:  # region i predicted where its sigmoid passes 0.5, present where the label holds one of its values
            scores.append([dice(probs[i].numpy() > 0.5, np.isin(ref, r)) for i, r in enumerate(plan.regions)])
            continue
        pred, ref = without_ignored(label_map(probs).numpy(), ref, plan.ignore_label)
        scores.append(dice_per_class(pred, ref, classes))
    return np.asarray(scores, dtype=float)


def mean_dice(case_dice: np.ndarray) -> float:
    """The mean over foreground classes of each class's mean over cases (cases x classes in; NaN: class absent)."""
    return float(np.nanmean(np.nanmean(case_dice, axis=0)))
