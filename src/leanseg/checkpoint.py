"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked against the model.

A checkpoint holds only tensors and plain Python values (so the safe loader accepts it): the model and
optimiser states, the iteration reached, the resolved config and plan, and a signature of the
architecture that a load compares before touching any weight.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from leanseg import __version__
from leanseg.config import ExperimentConfig
from leanseg.errors import LeansegError
from leanseg.plan import Plan
from leanseg.utils import atomic_path

FORMAT = "leanseg-checkpoint"
FORMAT_VERSION = 1


def model_signature(cfg: ExperimentConfig, plan: Plan) -> str:
    """Hash of what fixes the architecture: model name and settings, widths, strides, channels, classes."""
    arch = {
        "model": cfg.model.name,
        "kernel": cfg.model.kernel_size,
        "blocks": cfg.model.blocks_per_stage,
        "extra": cfg.model.extra,
        "features": list(plan.features),
        "strides": [list(s) for s in plan.strides],
        "in": plan.num_channels,
        "out": plan.num_outputs,
    }
    return hashlib.sha1(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]


def save_checkpoint(path: Path, model: torch.nn.Module, cfg: ExperimentConfig, plan: Plan, **state: Any) -> None:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "leanseg_version": __version__,
        "signature": model_signature(cfg, plan),
        "config": cfg.to_dict(),
        "plan": plan.to_dict(),
        "model": model.state_dict(),
        **state,
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LeansegError(f"Checkpoint {path} does not exist; train first (`leanseg train`) or pass the right run folder.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or unsafe files
        raise LeansegError(
            f"Checkpoint {path} cannot be loaded safely ({type(e).__name__}); it is damaged or not a leanseg checkpoint: retrain or restore it."
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LeansegError(f"{path} is not a leanseg checkpoint; pass a file written by `leanseg train`.")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise LeansegError(
            f"Checkpoint {path} has format version {ckpt.get('format_version')} but this leanseg reads {FORMAT_VERSION}; "
            "retrain with this version or install the leanseg that wrote it."
        )
    return ckpt


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], cfg: ExperimentConfig, plan: Plan, path: Path) -> None:
    """Load ``ckpt`` into ``model`` after checking that it was written for the same architecture."""
    want = model_signature(cfg, plan)
    if ckpt.get("signature") != want:
        other = ckpt.get("config", {}).get("model", {}).get("name", "?")
        raise LeansegError(
            f"Checkpoint {path} belongs to another model ('{other}', signature {ckpt.get('signature')}) than the one "
            f"configured ('{cfg.model.name}', {want}); pass the matching run folder or the same model settings."
        )
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise LeansegError(f"Checkpoint {path} holds no weights a model can take; retrain or restore it.")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # missing, unexpected or wrong-shape tensors under an intact signature
        raise LeansegError(
            f"Checkpoint {path} does not fit its own model ({str(e).splitlines()[0].rstrip(':.')}); it is damaged: retrain or restore it."
        ) from None
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise LeansegError(
            f"Checkpoint {path} holds NaN or infinite weights ({bad}); the training diverged or the file is damaged: retrain."
        )


def load_pretrained(model: torch.nn.Module, ckpt: dict[str, Any], path: Path) -> int:
    """Start ``model`` from the weights of ``ckpt`` for fine-tuning (``train.init_checkpoint``).

    Unlike :func:`load_weights` the architecture signature may differ (training-only settings such
    as LowRes's ``stage`` or a drop probability), but every tensor the two share by name must have
    the same shape, and at least one must be shared. Returns the number of tensors loaded.
    """
    own = model.state_dict()
    theirs = ckpt["model"]
    shared = [k for k in theirs if k in own]
    wrong = [k for k in shared if tuple(theirs[k].shape) != tuple(own[k].shape)]
    if not shared or wrong:
        what = (
            f"'{wrong[0]}' has shape {tuple(theirs[wrong[0]].shape)}, not {tuple(own[wrong[0]].shape)}"
            if wrong
            else "no weight names in common"
        )
        raise LeansegError(
            f"Checkpoint {path} does not fit the configured model ({what}); pass a checkpoint of the same model family and plan."
        )
    model.load_state_dict({k: theirs[k] for k in shared}, strict=False)
    return len(shared)


def find_checkpoint(run_dir: Path) -> Path:
    """A checkpoint file as it is, or a run folder's final (else latest) checkpoint."""
    from leanseg.runfolder import RunFolder

    run_dir = Path(run_dir)
    return run_dir if run_dir.is_file() else RunFolder(run_dir).checkpoint()


def load_run_model(run_dir: Path) -> tuple[torch.nn.Module, Plan, ExperimentConfig]:
    """The trained model, its plan and config from a run folder (or a checkpoint file)."""
    from leanseg.models import build_model

    path = find_checkpoint(Path(run_dir))
    ckpt = load_checkpoint(path)
    try:
        cfg = ExperimentConfig.from_dict(ckpt.get("config", {}))
    except LeansegError as e:
        raise LeansegError(f"The config in checkpoint {path} is damaged: {e}") from None
    plan = Plan.from_dict(ckpt.get("plan"), f"The plan in checkpoint {path}")
    model = build_model(cfg.model, plan)
    load_weights(model, ckpt, cfg, plan, path)
    model.eval()
    return model, plan, cfg
