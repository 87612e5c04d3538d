"""ONNX export for CPU deployment with ONNX Runtime (``leanseg predict --backend onnx``)."""

from __future__ import annotations

import copy
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from leanseg.checkpoint import load_run_model
from leanseg.models.protocol import OnnxPart
from leanseg.utils import atomic_path


def export_onnx(run_dir: Path | str, output: Path | str | None = None, opset: int = 18) -> list[Path]:
    """Trace the run's model with dynamic batch and spatial sizes and write its graphs atomically: ``model.onnx``
    for most models (``output``: that file), one file per network for a two-stage model (``output``: their folder).
    Every file goes to the run folder by default, where ``predict --backend onnx`` looks for it."""
    run_dir = Path(run_dir)
    model, plan, _ = load_run_model(run_dir)
    parts = model.onnx_parts(torch.zeros(2, plan.num_channels, *plan.patch_size))
    if output is not None and len(parts) == 1:
        targets = {name: Path(output) for name in parts}
    else:
        folder = Path(output) if output is not None else run_dir if run_dir.is_dir() else run_dir.parent
        targets = {name: folder / f"{name}.onnx" for name in parts}
    with ExitStack() as stack:  # every file renamed into place only once all are traced
        for name, part in parts.items():
            export_part(part, stack.enter_context(atomic_path(targets[name])), opset)
    return list(targets.values())


def export_part(part: OnnxPart, path: Path | str, opset: int = 18) -> None:
    """Trace one graph of a model's :meth:`onnx_parts` into ``path``, batch and spatial sizes dynamic."""
    names = part.input_names + part.output_names
    with torch.inference_mode():
        torch.onnx.export(
            baked(part.module),
            part.inputs,
            str(path),
            input_names=list(part.input_names),
            output_names=list(part.output_names),
            dynamic_axes={n: {0: "batch", 2: f"{n}_depth", 3: f"{n}_height", 4: f"{n}_width"} for n in names},
            opset_version=opset,
            dynamo=False,
        )


def baked(module: torch.nn.Module) -> torch.nn.Module:
    """``module``, or a copy whose parametrised weights (``torch.nn.utils.parametrize``: ``fully_invres``'s orthogonal
    resampling) are plain tensors at their current value: the tracer cannot export matrix_exp."""
    if not any(parametrize.is_parametrized(m) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    for m in [m for m in module.modules() if parametrize.is_parametrized(m)]:
        # a copy shares its parametrised class with the original, and removal edits that class: give it its own
        m.__class__ = type(m.__class__.__name__, m.__class__.__bases__, dict(m.__class__.__dict__))
        for name in list(m.parametrizations):
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module
