"""Build a registered model from a config and a plan."""

from __future__ import annotations

from torch import nn

from leanseg.config import ModelConfig
from leanseg.data.fingerprint import Plan
from leanseg.registry import MODELS


def build_model(cfg: ModelConfig, plan: Plan) -> nn.Module:
    """Instantiate ``cfg.name`` for the plan's channels, classes, widths and strides."""
    import leanseg.models  # noqa: F401  (registers the families)

    return MODELS.create(cfg.name, plan.num_channels, plan.num_classes, cfg, features=plan.features, strides=plan.strides)
