"""Learning-rate schedules and optimisers, from ``cfg.train``."""

from __future__ import annotations

import math
from typing import Any

import torch

from leanseg.config import TrainConfig
from leanseg.errors import LeansegError


def lr_at(cfg_lr: float, schedule: str, progress: float) -> float:
    """The learning rate at ``progress`` in [0, 1] of a run: poly (exponent 0.9, nnU-Net's), cosine or constant."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return cfg_lr * (1 - p) ** 0.9
    if schedule == "cosine":
        return cfg_lr * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "constant":
        return cfg_lr
    raise LeansegError(f"Unknown schedule '{schedule}'; use poly, cosine or constant.")


def make_optimizer(params: Any, t: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, Adam (L2 weight decay) or AdamW (decoupled), with ``t``'s rate, momentum and decay."""
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    raise LeansegError(f"Unknown optimizer '{t.optimizer}'; use sgd, adam or adamw.")


def use_bf16(t: TrainConfig) -> bool:
    """bf16 autocast: ``t.bf16``, or (``None``) wherever the CPU has native bf16 (2x faster steps there; 20x slower
    where bf16 is emulated, so a forced ``True`` there is warned about)."""
    from leanseg.utils import cpu_has_fast_bf16, warn_emulated_bf16

    if t.bf16:
        warn_emulated_bf16("train.bf16")
    return cpu_has_fast_bf16() if t.bf16 is None else t.bf16
