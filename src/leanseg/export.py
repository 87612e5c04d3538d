"""ONNX export for CPU deployment with ONNX Runtime (``leanseg predict --backend onnx``)."""

from __future__ import annotations

from pathlib import Path

import torch

from leanseg.checkpoint import load_run_model
from leanseg.errors import LeansegError
from leanseg.utils import atomic_path


def export_onnx(run_dir: Path | str, output: Path | str | None = None, opset: int = 18) -> Path:
    """Trace the run's model with dynamic batch and spatial sizes and write ``model.onnx`` atomically."""
    run_dir = Path(run_dir)
    model, plan, _ = load_run_model(run_dir)
    if model.whole_volume:
        raise LeansegError(
            f"The model in {run_dir} ({type(model).__name__}) chooses its regions per image, which one traced ONNX graph "
            "cannot; predict it with --backend eager or bf16."
        )
    out = Path(output) if output else (run_dir if run_dir.is_dir() else run_dir.parent) / "model.onnx"
    x = torch.zeros(2, plan.num_channels, *plan.patch_size)
    axes = {0: "batch", 2: "depth", 3: "height", 4: "width"}
    with atomic_path(out) as tmp, torch.inference_mode():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=opset,
            dynamo=False,
        )
    return out
