"""The weight-sharing U-Net (supernet) of resource-optimised NAS (Bae et al., MICCAI 2019, after ENAS).

One :class:`SuperNet` holds every weight any child can use; a child is an architecture dict from
:class:`~leanseg.models.nas_space.ArchitectureSpace` and runs as ``supernet(x, arch)``, taking its
weights from the shared set, so training one child improves the weights every later child starts
from and the final child needs no retraining. Each operation choice with weights has its own (a
3x3x3 convolution per dilation rate, ENAS-style); pooling type and activation choices have none.

The base: S encoder stages of two 3x3x3 convolutions (instance norm, the stage's activation), the
second optional, each stage with an optional 1x1x1-convolution shortcut from its input (residual
stages); pooling between stages; a decoder that upsamples (trilinear, then a 1x1x1 convolution to
the level's width), concatenates the level's skip (a 1x1x1 convolution halving the
channels), and applies two convolutions; an optional long skip added at each decoder level after a
1x1x1 convolution, from the level's own encoder stage or, in the paper's space, from any other (resampled:
average pooling from a finer stage before the convolution, trilinear upsampling from a coarser one after
it); deep supervision summed from decoder levels 1-3 (coarser logits upsampled).
Shapes: (B, C, D, H, W) -> logits (B, K, D, H, W), each size a multiple of the child's total stride.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import ModelConfig, build_section
from leanseg.models.nas_space import ArchitectureSpace, long_skip_source
from leanseg.models.protocol import SegmentationModel
from leanseg.nn.norm import instance_norm
from leanseg.registry import MODELS

DILATIONS = (1, 2, 3)


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "leakyrelu":
        return F.leaky_relu(x, 0.01)
    if name == "elu":
        return F.elu(x)
    raise ValueError(f"unknown activation {name}")


class SharedConv(nn.Module):
    """A 3x3x3 convolution + instance norm per dilation rate; the child picks one."""

    def __init__(self, in_ch: int, out_ch: int, dilations: tuple[int, ...] = DILATIONS) -> None:
        super().__init__()
        self.ops = nn.ModuleDict(
            {
                str(d): nn.Sequential(nn.Conv3d(in_ch, out_ch, 3, padding=d, dilation=d, bias=False), instance_norm(out_ch))
                for d in dilations
            }
        )

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        return self.ops[str(dilation)](x)


class SuperNet(nn.Module):
    def __init__(self, space: ArchitectureSpace) -> None:
        super().__init__()
        self.space = space
        S, C, K = space.num_stages, space.in_channels, space.num_classes
        w = [space.base_features * 2**s for s in range(S)]
        self.widths = w
        self.enc1 = nn.ModuleList([SharedConv(C if s == 0 else w[s - 1], w[s], (1,) if s == 0 else DILATIONS) for s in range(S)])
        self.enc2 = nn.ModuleList([SharedConv(w[s], w[s], (1,) if s == 0 else DILATIONS) for s in range(S)])
        self.shortcut = nn.ModuleList(
            [nn.Sequential(nn.Conv3d(C if s == 0 else w[s - 1], w[s], 1, bias=False), instance_norm(w[s])) for s in range(S)]
        )
        # decoder level s (0-based, S - 2 down to 0) receives level s + 1
        self.up = nn.ModuleList([nn.Conv3d(w[s + 1], w[s], 1, bias=False) for s in range(S - 1)])
        self.skip = nn.ModuleList([nn.Conv3d(w[s], w[s] // 2, 1, bias=False) for s in range(S - 1)])
        self.long = nn.ModuleList([nn.Conv3d(w[s], w[s], 1, bias=False) for s in range(S - 1)])  # same-level long skips
        self.cross = nn.ModuleDict(  # cross-resolution long skips, "<source stage>_<decoder level>", where the space has them
            {f"{j}_{n}": nn.Conv3d(w[j - 1], w[n - 1], 1, bias=False) for j, n in _cross_pairs(space)}
        )
        self.dec1 = nn.ModuleList([SharedConv(w[s] + w[s] // 2, w[s], (1,)) for s in range(S - 1)])
        self.dec2 = nn.ModuleList([SharedConv(w[s], w[s], (1,)) for s in range(S - 1)])
        self.heads = nn.ModuleList([nn.Conv3d(w[s], K, 1) for s in range(min(3, S - 1))])

    def forward(self, x: torch.Tensor, arch: dict[str, Any]) -> torch.Tensor:
        S = self.space.num_stages
        strides = self.space.strides(arch)
        skips = []
        for s in range(S):
            n = s + 1  # 1-based stage, as in the decision names
            if s > 0:
                pool = F.max_pool3d if arch[f"pool_type_{s}"] == "max" else F.avg_pool3d
                x = pool(x, strides[s - 1], strides[s - 1])
            act = arch[f"activation_{n}"]
            residual = arch.get(f"residual_{n}", "off") == "on"  # absent in searches from before it existed
            y = self.enc1[s](x, arch.get(f"dilation_{n}_1", 1))
            if arch[f"conv2_enc_{n}"] == "conv":
                y = self.enc2[s](_act(act, y), arch.get(f"dilation_{n}_2", 1))
            x = _act(act, y + self.shortcut[s](x) if residual else y)
            skips.append(x)
        x = skips[-1]
        logits = None
        for s in range(S - 2, -1, -1):
            n = s + 1
            act = arch[f"activation_{n}"]
            enc = skips[s]
            x = self.up[s](F.interpolate(x, size=enc.shape[-3:], mode="trilinear"))
            skip = self.skip[s](enc) if arch[f"skip_{n}"] == "on" else x.new_zeros((x.shape[0], self.widths[s] // 2, *x.shape[2:]))
            x = _act(act, self.dec1[s](torch.cat([x, skip], 1)))
            if arch[f"conv2_dec_{n}"] == "conv":
                x = _act(act, self.dec2[s](x))
            source = long_skip_source(arch, n)
            if source is not None:
                x = x + self._long_skip(skips[source - 1], source, n, strides, x.shape[-3:])
            if s < len(self.heads):  # deep supervision: logits of levels 1-3, summed at full resolution
                out = self.heads[s](x)
                logits = out if logits is None else out + F.interpolate(logits, size=out.shape[-3:], mode="trilinear")
        assert logits is not None
        return logits

    def _long_skip(self, enc: torch.Tensor, source: int, level: int, strides: list[tuple[int, int, int]], size: torch.Size) -> torch.Tensor:
        """Encoder stage ``source``'s features for decoder ``level`` (1-based), projected to its width and resampled."""
        if source == level:
            return self.long[level - 1](enc)
        conv = self.cross[f"{source}_{level}"]
        if source < level:  # finer: pool first, so the convolution runs on the coarser grid
            # the encoder's poolings in between, as one window (floored like theirs): static sizes, so ONNX exports it
            window = tuple(int(v) for v in np.prod(strides[source - 1 : level - 1], axis=0))
            return conv(F.avg_pool3d(enc, window, window))
        return F.interpolate(conv(enc), size=size, mode="trilinear")

    def total_stride(self, arch: dict[str, Any]) -> tuple[int, int, int]:
        """A child's input sizes must be multiples of this per axis."""
        d = [1, 1, 1]
        for st in self.space.strides(arch):
            d = [a * b for a, b in zip(d, st)]
        return tuple(d)  # type: ignore[return-value]

    def child_parameters(self, arch: dict[str, Any]) -> int:
        """Number of shared weights a child uses."""
        used: dict[int, int] = {}

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            for p in module.parameters(recurse=False):
                used[id(p)] = p.numel()

        hooks = [m.register_forward_hook(hook) for m in self.modules() if not list(m.children())]
        was_training = self.training
        try:
            with torch.no_grad():
                self.eval()(torch.zeros(1, self.space.in_channels, *self.space.patch_size(arch)), arch)
        finally:
            self.train(was_training)
            for h in hooks:
                h.remove()
        return sum(used.values())


def _cross_pairs(space: ArchitectureSpace) -> list[tuple[int, int]]:
    """(source stage, decoder level) of every cross-resolution long skip the space offers."""
    pairs = []
    for d in space.decisions:
        if d.name.startswith("long_skip_"):
            level = int(d.name.rsplit("_", 1)[1])
            sources = {long_skip_source({d.name: c}, level) for c in d.choices}
            pairs += [(j, level) for j in sorted(s for s in sources if s is not None and s != level)]
    return pairs


class ChildNet(SuperNet, SegmentationModel):
    """One chosen architecture with the supernet's weights: a plain model for the trainer and predictor."""

    def __init__(self, space: ArchitectureSpace, arch: dict[str, Any]) -> None:
        super().__init__(space)
        self.arch = space.normalise(arch)
        self.divisor = self.total_stride(self.arch)

    def forward(self, x: torch.Tensor, arch: dict[str, Any] | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.arch if arch is None else arch)


@dataclass(frozen=True)
class NasUNetSettings:
    """``model.extra`` of ``nas_unet``, written by the architecture search."""

    arch: dict[str, Any] = field(default_factory=dict)  # the chosen child's decisions
    space: dict[str, Any] = field(default_factory=dict)  # the search space it was chosen from


@MODELS.register("nas_unet", settings=NasUNetSettings)
def nas_unet(in_channels: int, out_channels: int, cfg: ModelConfig, features: Any, strides: Any) -> nn.Module:
    """The child an architecture search chose (``model.extra``: ``arch`` and ``space``, written by the search)."""
    from leanseg.errors import LeansegError

    s = build_section(NasUNetSettings, cfg.extra, "model.extra")
    if not s.arch or not s.space:
        raise LeansegError(
            "model nas_unet needs model.extra.arch and model.extra.space; use the run folder `leanseg search architecture` wrote."
        )
    return ChildNet(ArchitectureSpace.from_dict(s.space), s.arch)


def estimate_activation_bytes(space: ArchitectureSpace, arch: dict[str, Any], batch: int = 2, bytes_per_value: int = 4) -> int:
    """Bytes autograd keeps for backward when a child trains on a batch of its patches, from the
    architecture alone (nothing is built), so a child that would not fit is never sampled.

    Per convolution layer: its output (kept by the norm) and the activation's output (kept by the
    next layer), plus the normalised map for leaky ReLU (which keeps its input); max-pooling
    indices (int64); the interpolated map each decoder projection keeps; the concatenation the
    first decoder convolution keeps. ``tests`` compare it with a count of the saved tensors.
    """
    S = space.num_stages
    w = [space.base_features * 2**s for s in range(S)]
    sizes = [float(np.prod(space.patch_size(arch)))]
    for st in space.strides(arch):
        sizes.append(sizes[-1] / (st[0] * st[1] * st[2]))
    values = 0.0
    for s in range(S):
        n = s + 1
        per_layer = 3 if arch[f"activation_{n}"] == "leakyrelu" else 2
        convs = 2 if arch[f"conv2_enc_{n}"] == "conv" else 1
        values += per_layer * convs * w[s] * sizes[s]
        if arch.get(f"residual_{n}", "off") == "on":
            values += w[s] * sizes[s]  # the shortcut convolution's output, kept by its norm
        if s > 0 and arch[f"pool_type_{s}"] == "max":
            values += 2 * w[s - 1] * sizes[s]  # int64 indices
        source = long_skip_source(arch, n) if s < S - 1 else None
        if source is not None and source < n:
            values += w[source - 1] * sizes[s]  # the pooled map a finer stage's long skip convolves
        if s < S - 1:
            convs = 2 if arch[f"conv2_dec_{n}"] == "conv" else 1
            values += w[s + 1] * sizes[s]  # the interpolated map the 1x1x1 projection keeps
            values += 1.5 * w[s] * sizes[s]  # the concatenation the first convolution keeps
            values += w[s] * sizes[s]  # the level's output, kept by the coarser logits' sum / the next level
            values += per_layer * convs * w[s] * sizes[s]
    return int(values * batch * bytes_per_value)
