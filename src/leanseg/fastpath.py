"""The CPU's fast path: which kind of CPU this is, whether a run compiles, and compiling with a fallback.

The fast path is ``torch.compile`` of the network with weights and batches in torch's channels-last 3D layout
(oneDNN's native layout for bf16 and fp32 convolutions; :class:`leanseg.nn.norm.InstanceNorm` compiles to one fused
pass there). In eager mode channels-last is slower (the norm's eager backward), so the layout follows the
compilation: compiled means channels-last, eager means NCDHW. Whether compiling pays is measured per kind of CPU by
``benchmarks/throughput`` (``benchmarks/results/throughput.md``) and written into :data:`COMPILE_PAYS`; a run
compiles by default only where it does and where it is long enough to repay the warm-up (:func:`should_compile`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from leanseg.utils import cpu_kind

# Does the compiled channels-last step beat eager NCDHW on this kind of CPU? From benchmarks/results/throughput.md
# (the default training step, hippocampus patch, batch 2, 2 threads), except "amx": the Intel probe of issue 55
# (0.130 s against 0.22 s), not yet rerun by the benchmark.
COMPILE_PAYS = {"amx": True, "avx512_bf16": True, "avx2": True}
# The first compile of a process takes 25-31 s (3.8 s from inductor's disk cache); real hippocampus training saved
# 0.044 s an iteration on Zen 4 (0.300 -> 0.256 s), so 1000 iterations repay even a cold compile. A run of fewer
# iterations or a shorter budget than these stays eager by default.
COMPILE_MIN_ITERATIONS = 1000
COMPILE_MIN_MINUTES = 5.0


def compile_supported() -> str | None:
    """None where ``torch.compile`` can run here, else why not (one clause)."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python or platform"
    return None


def should_compile(
    setting: bool | None,
    device: torch.device,
    iterations: int | None = None,
    minutes: float | None = None,
    model: nn.Module | None = None,
) -> bool:
    """``setting`` where it is given; ``None`` (auto): for a ``model`` whose family was measured compiled
    (``compiles_by_default``) on a CPU whose kind measured faster, for a run of at least
    :data:`COMPILE_MIN_ITERATIONS` iterations or :data:`COMPILE_MIN_MINUTES` minutes (CUDA: eager, not measured).
    Prediction passes neither: compiled bf16 sliding windows measured no faster on Zen 4 (results/throughput.md),
    so it compiles only where ``inference.compile`` asks."""
    if setting is not None:
        return setting
    if device.type != "cpu" or not COMPILE_PAYS.get(cpu_kind(), False) or not _measured(model):
        return False
    return (iterations or 0) >= COMPILE_MIN_ITERATIONS or (minutes or 0.0) >= COMPILE_MIN_MINUTES


def _measured(model: nn.Module | None) -> bool:
    """The family was measured compiled, and this model runs as measured: no recomputation, no VAE branch."""
    if model is None or not getattr(model, "compiles_by_default", False):
        return False
    return not getattr(model, "gradient_checkpointing", False) and getattr(model, "vae", None) is None


class FastPath:
    """``module`` as a function of NCDHW batches: compiled and channels-last where ``compiled``, else as it is.

    ``owner`` is the model whose weights take the layout (``module`` may wrap it: DDP). One static graph is compiled,
    for the first input shape (the training patch, the sliding window); an input of any other shape (a whole volume,
    a short last batch of windows) runs eager, so prediction never recompiles per case. Dynamic shapes were tried:
    torch 2.13's inductor fails to lower the residual U-Net with symbolic sizes (``ValueRangeError``). Where
    compilation fails (no C++ compiler, an unsupported platform) it warns once, naming ``setting``, returns the model
    to NCDHW and runs eager from then on.
    """

    def __init__(self, module: nn.Module, compiled: bool, setting: str, owner: nn.Module | None = None) -> None:
        self.module, self.owner, self.setting = module, owner or module, setting
        self.compiled, self._fn, self._shape = False, None, None
        reason = compile_supported() if compiled else None
        if reason:
            self._fall_back(reason)
        elif compiled:
            self.compiled, self._fn = True, torch.compile(module, dynamic=False)
        self.owner.to(memory_format=self.layout)

    @staticmethod
    def layout_of(compiled: bool) -> torch.memory_format:
        """The weights' and batches' layout: channels-last where compiled, NCDHW where eager."""
        return torch.channels_last_3d if compiled else torch.contiguous_format

    @property
    def layout(self) -> torch.memory_format:
        return self.layout_of(self.compiled)

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> Any:
        if self._fn is None:
            return self.module(x, **kwargs)
        x = x.contiguous(memory_format=self.layout)
        self._shape = self._shape or x.shape
        if x.shape != self._shape:
            return self.module(x, **kwargs)
        try:
            return self._fn(x, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:
            self._fall_back(str(e).strip().splitlines()[0])
            return self.module(x, **kwargs)

    @contextmanager
    def eager(self) -> Iterator[None]:
        """The owner in NCDHW for an eager pass (validation during training), back in this path's layout after."""
        self.owner.to(memory_format=torch.contiguous_format)
        try:
            yield
        finally:
            self.owner.to(memory_format=self.layout)

    def _fall_back(self, reason: str) -> None:
        warnings.warn(f"{self.setting} is on, but {reason}; running eager (NCDHW) instead.", stacklevel=3)
        self.compiled, self._fn = False, None
        self.owner.to(memory_format=torch.contiguous_format)
