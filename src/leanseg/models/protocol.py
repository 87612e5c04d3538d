"""What the trainer and the predictor may ask of a model: one base class instead of duck typing.

Every registered model family derives from :class:`SegmentationModel`; :func:`leanseg.models.build_model`
refuses a factory that returns anything else. A model's ``forward(x)`` takes (B, C, D, H, W) with D, H, W
multiples of :attr:`~SegmentationModel.divisor` and returns one of:

* logits (B, K, D, H, W);
* a list of logits, finest first, for deep supervision (training only);
* ``{"logits": ..., "aux_loss": scalar}``: an auxiliary loss the trainer adds to Dice + CE (the invertible
  U-Nets' VAE branch);
* anything :meth:`~SegmentationModel.training_loss` understands, where :attr:`~SegmentationModel.has_own_loss`
  is set (LowRes: one loss per stage).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

Graph = Callable[..., tuple[torch.Tensor, ...]]  # an ONNX Runtime session as a function: tensors in, outputs out


class OnnxPart(NamedTuple):
    """One graph that ``leanseg export`` writes: the module, example inputs to trace it, its input and output names."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


class SegmentationModel(nn.Module):
    """Base of every model family (see the module docstring for the outputs).

    Attributes:
        divisor: every spatial input size must be a multiple of this, per axis (D, H, W); the predictor pads to it.
        whole_volume: the predictor runs the model on whole volumes instead of sliding windows (LowRes crops its own
            regions of interest).
        has_own_loss: training calls :meth:`training_loss` instead of the trainer's Dice + CE.
        num_gated_blocks: residual blocks that a per-sample keep mask can skip (AutoPath); 0 for none. A model with
            gated blocks takes ``forward(x, keep)`` with ``keep`` (B, num_gated_blocks) of 0/1.
        last_stats: timings of the last forward pass, reported by the predictor (assigned anew, never mutated).
        onnx_graphs: the names of the ONNX graphs of :meth:`onnx_parts`, each written as ``<name>.onnx``.
        compiles_by_default: ``train.compile`` unset compiles this family where the CPU's kind measured faster
            (:func:`leanseg.fastpath.should_compile`); set only for families the throughput benchmark measured
            (Python control flow between layers, custom backward passes or per-sample gates stay eager).
    """

    divisor: Any = (1, 1, 1)
    whole_volume: ClassVar[bool] = False
    has_own_loss: ClassVar[bool] = False
    num_gated_blocks: Any = 0
    last_stats: Mapping[str, float] = {}
    onnx_graphs: ClassVar[tuple[str, ...]] = ("model",)
    compiles_by_default: ClassVar[bool] = False

    def onnx_parts(self, example: torch.Tensor) -> dict[str, OnnxPart]:
        """The graphs to export for ONNX Runtime, traced on ``example`` (B, C, D, H, W): the whole model as one graph.
        A model that runs Python between its networks (LowRes's loop over boxes) exports one graph per network."""
        return {"model": OnnxPart(self, (example,), ("image",), ("logits",))}

    def onnx_forward(self, graphs: Mapping[str, Graph]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Inference on the exported graphs (name -> session): a batch (B, C, D, H, W) -> what ``forward`` returns."""
        graph = graphs["model"]
        return lambda x: graph(x)[0]

    def training_loss(self, output: Any, label: torch.Tensor) -> torch.Tensor:
        """The model's own objective for ``output`` of a training forward pass and ``label`` (B, 1, D, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} sets has_own_loss but defines no training_loss")
