"""3D DeepLabV3+ on a 3D ResNet-18/50 backbone whose residual blocks can be skipped per sample.

The segmentation network of AutoPath (Sun et al. 2020, "AutoPath: Image-Specific Inference for 3D
Segmentation", Front. Neurorobot. 14:49), after BlockDrop (Wu et al., CVPR 2018): a ResNet backbone
without its classification head, the last two stages dilated instead of strided (output stride 4),
ASPP (Chen et al. 2017) with an image-pooling branch, and a DeepLabV3+ decoder that fuses the stage-1
features before the final upsampling.

Every residual block is gated. ``forward(x, keep)`` takes ``keep`` of shape (B, N) (or (N,), shared
by the batch), N = :attr:`DeepLab3D.num_gated_blocks`; a block whose keep is 0 for a sample runs only
its shortcut for that sample (identity, or the 1x1x1 projection where the block changes width or
stride, as in BlockDrop), and its residual branch is not called at all when no sample keeps it.
``model.extra.drop_prob`` > 0 drops blocks at random during training (stochastic depth, Huang et
al. 2016, without rescaling so that a dropped block at test time sees the statistics it was trained
with); the paper trains plainly, which ``drop_prob: 0`` reproduces. ``model.extra.drop_rule`` says
how the rate is spread over the blocks: ``uniform`` (every block ``drop_prob``) or ``linear`` (Huang
et al.'s linear decay, as timm's ``drop_path_rate``: block l of N dropped with
``drop_prob * (l - 1) / (N - 1)``, so the first block is never dropped and the last at the full rate).

Strides follow the plan: the stem uses the plan's first downsampling stride and stage 2 the second,
so an axis the plan keeps at full resolution (a thick-slice z axis) is not strided here either.
Shapes: (B, C_in, D, H, W) -> logits (B, K, D, H, W); D, H, W multiples of :attr:`divisor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import ModelConfig, build_section
from leanseg.models.protocol import SegmentationModel
from leanseg.nn.blocks import ASPP, ConvNormAct
from leanseg.nn.norm import instance_norm
from leanseg.registry import MODELS

LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


class GatedBlock(nn.Module):
    """A residual block ``act(residual(x) + shortcut(x))`` that a per-sample keep mask can skip."""

    residual: nn.Module
    shortcut: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.LeakyReLU(0.01)
        self.calls = 0  # residual-branch calls, read by the tests that check skipping

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if keep is None or bool(keep.all()):
            self.calls += 1
            return self.act(self.residual(x) + self.shortcut(x))
        short = self.shortcut(x)
        if not bool(keep.any()):
            return self.act(short)
        idx = keep.nonzero().squeeze(1)
        self.calls += 1
        kept = self.act(self.residual(x.index_select(0, idx)) + short.index_select(0, idx))
        return self.act(short).index_copy(0, idx, kept.to(short.dtype))


def _shortcut(in_ch: int, out_ch: int, stride: Sequence[int]) -> nn.Module:
    if in_ch == out_ch and all(s == 1 for s in stride):
        return nn.Identity()
    return nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride=tuple(stride), bias=False), instance_norm(out_ch))


class BasicBlock(GatedBlock):
    """ResNet-18/34 block: two 3x3x3 convolutions."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: Sequence[int] = (1, 1, 1), dilation: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.residual = nn.Sequential(
            nn.Conv3d(in_ch, width, 3, stride=tuple(stride), padding=dilation, dilation=dilation, bias=False),
            instance_norm(width),
            nn.LeakyReLU(0.01),
            nn.Conv3d(width, out, 3, padding=dilation, dilation=dilation, bias=False),
            instance_norm(out),
        )
        self.shortcut = _shortcut(in_ch, out, stride)


class Bottleneck(GatedBlock):
    """ResNet-50 block: 1x1x1 reduce, 3x3x3 (strided, dilated), 1x1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: Sequence[int] = (1, 1, 1), dilation: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.residual = nn.Sequential(
            nn.Conv3d(in_ch, width, 1, bias=False),
            instance_norm(width),
            nn.LeakyReLU(0.01),
            nn.Conv3d(width, width, 3, stride=tuple(stride), padding=dilation, dilation=dilation, bias=False),
            instance_norm(width),
            nn.LeakyReLU(0.01),
            nn.Conv3d(width, out, 1, bias=False),
            instance_norm(out),
        )
        self.shortcut = _shortcut(in_ch, out, stride)


class DeepLab3D(SegmentationModel):
    """3D DeepLabV3+ with a gated ResNet-``depth`` backbone (18 or 50)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 18,
        base_features: int = 16,
        strides: Sequence[Sequence[int]] = ((2, 2, 2), (2, 2, 2)),
        aspp_dilations: Sequence[int] = (1, 2, 4, 6),
        aspp_features: int = 16,
        decoder_features: int = 32,
        drop_prob: float = 0.0,
        drop_rule: str = "uniform",
    ) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"depth must be one of {sorted(LAYOUTS)}")
        kind, counts = LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.strides = [tuple(int(v) for v in s) for s in strides]
        if drop_rule not in ("uniform", "linear"):
            raise ValueError(f"drop_rule must be 'uniform' or 'linear', got {drop_rule!r}")
        self.drop_prob = float(drop_prob)
        self.drop_rule = drop_rule
        w = base_features
        self.stem = ConvNormAct(in_channels, w, 3, stride=self.strides[0])
        # stage: (width, stride of its first block, dilation); stages 3-4 dilate instead of striding
        stages = [(w, (1, 1, 1), 1), (2 * w, self.strides[1], 1), (4 * w, (1, 1, 1), 2), (8 * w, (1, 1, 1), 4)]
        self.blocks = nn.ModuleList()
        self.stage_of_block: list[int] = []
        prev = w
        for s, ((width, stride, dil), n) in enumerate(zip(stages, counts)):
            for i in range(n):
                self.blocks.append(block(prev, width, stride if i == 0 else (1, 1, 1), dil))
                self.stage_of_block.append(s)
                prev = width * block.expansion
        low_ch = w * block.expansion
        self.aspp = ASPP(prev, aspp_features, aspp_dilations)
        self.low_proj = ConvNormAct(low_ch, decoder_features // 2, 1)
        self.decoder = nn.Sequential(
            ConvNormAct(self.aspp.out_channels + decoder_features // 2, decoder_features, 3),
            ConvNormAct(decoder_features, decoder_features, 3),
        )
        self.head = nn.Conv3d(decoder_features, out_channels, 1)

    @property
    def num_gated_blocks(self) -> int:
        return len(self.blocks)

    @property
    def block_drop_probs(self) -> torch.Tensor:
        """(N,) probability that training drops each gated block (stochastic depth)."""
        n = self.num_gated_blocks
        if self.drop_rule == "linear":
            return torch.linspace(0.0, self.drop_prob, n)
        return torch.full((n,), self.drop_prob)

    def block_macs(self, shape: Sequence[int]) -> torch.Tensor:
        """(N,) multiply-accumulates of each gated block's residual branch (what dropping it saves) for one
        input of spatial ``shape``, counted from the convolutions' output sizes on a dry run."""
        macs = torch.zeros(self.num_gated_blocks, dtype=torch.float64)
        hooks = []
        for i, blk in enumerate(self.blocks):
            for m in blk.residual.modules():
                if isinstance(m, nn.Conv3d):

                    def count(mod: nn.Conv3d, _inp: Any, out: torch.Tensor, i: int = i) -> None:
                        k = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                        macs[i] += out[0].numel() * k

                    hooks.append(m.register_forward_hook(count))
        was_training = self.training
        try:
            with torch.no_grad():
                self.eval()(torch.zeros(1, self.stem[0].in_channels, *shape))
        finally:
            self.train(was_training)
            for h in hooks:
                h.remove()
        return macs

    @property
    def divisor(self) -> tuple[int, int, int]:
        d = torch.tensor(self.strides).prod(dim=0)
        return tuple(int(v) for v in d)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        size = x.shape[-3:]
        n = self.num_gated_blocks
        if keep is not None:
            keep = keep.to(torch.bool)
            if keep.dim() == 1:
                keep = keep[None].expand(x.shape[0], n)
            if keep.shape != (x.shape[0], n):
                raise ValueError(f"keep must have shape ({x.shape[0]}, {n}) or ({n},), got {tuple(keep.shape)}")
        elif self.training and self.drop_prob > 0:
            keep = torch.rand(x.shape[0], n) >= self.block_drop_probs
        h = self.stem(x)
        low = h
        for i, blk in enumerate(self.blocks):
            h = blk(h, None if keep is None else keep[:, i])
            if self.stage_of_block[i] == 0:
                low = h
        h = self.aspp(h)
        low = self.low_proj(low)
        h = F.interpolate(h, size=low.shape[-3:], mode="trilinear", align_corners=False)
        h = self.decoder(torch.cat([h, low], dim=1))
        return F.interpolate(self.head(h), size=size, mode="trilinear", align_corners=False)


@dataclass(frozen=True)
class DeepLabSettings:
    """``model.extra`` of ``deeplab3d_r18`` / ``deeplab3d_r50``."""

    aspp_dilations: tuple[int, ...] = (1, 2, 4, 6)
    aspp_features: int = 16
    decoder_features: int = 32
    drop_prob: float = 0.0  # stochastic depth during training (0: the paper's plain training)
    drop_rule: str = "uniform"  # uniform | linear (Huang et al.: deeper blocks dropped more)


def _factory(depth: int):
    def make(in_channels: int, out_channels: int, cfg: ModelConfig, features: Sequence[int], strides: Sequence[Sequence[int]]) -> DeepLab3D:
        extra = asdict(build_section(DeepLabSettings, cfg.extra, "model.extra"))
        # the plan's first two downsampling strides; the plan gives (1,1,1) for its first stage
        down = [tuple(s) for s in strides if any(v > 1 for v in s)][:2]
        down += [(2, 2, 2)] * (2 - len(down))
        return DeepLab3D(
            in_channels,
            out_channels,
            depth=depth,
            base_features=cfg.base_features,
            strides=down,
            aspp_dilations=tuple(extra["aspp_dilations"]),
            aspp_features=extra["aspp_features"],
            decoder_features=extra["decoder_features"],
            drop_prob=extra["drop_prob"],
            drop_rule=extra["drop_rule"],
        )

    return make


MODELS.register("deeplab3d_r18", settings=DeepLabSettings)(_factory(18))
MODELS.register("deeplab3d_r50", settings=DeepLabSettings)(_factory(50))
