"""Build a registered model from a config and a plan."""

from __future__ import annotations

from leanseg.config import ModelConfig
from leanseg.models.protocol import SegmentationModel
from leanseg.plan import Plan
from leanseg.registry import MODELS


def check_settings(cfg: ModelConfig) -> None:
    """Refuse an unknown model or an unknown or mistyped ``model.extra`` key before any work starts."""
    import leanseg.models  # noqa: F401  (registers the families)

    MODELS.settings(cfg.name, cfg.extra, "model.extra")


def build_model(cfg: ModelConfig, plan: Plan) -> SegmentationModel:
    """Instantiate ``cfg.name`` for the plan's channels, classes, widths and strides."""
    check_settings(cfg)
    if plan.regions and cfg.name in ("lowres", "nas_unet") or plan.regions and cfg.name.startswith("deeplab3d"):
        from leanseg.errors import LeansegError

        raise LeansegError(f"Region-based labels train the U-Net families only; '{cfg.name}' predicts one class per voxel.")
    model = MODELS.create(cfg.name, plan.num_channels, plan.num_outputs, cfg, features=plan.features, strides=plan.strides)
    if not isinstance(model, SegmentationModel):
        raise TypeError(f"model '{cfg.name}' is a {type(model).__name__}, not a leanseg.models.protocol.SegmentationModel")
    return model
