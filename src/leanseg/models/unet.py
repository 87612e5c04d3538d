"""Residual 3D U-Net (nnU-Net's ResEnc variant) and MONAI's ``UNet`` as a registered peer.

After Isensee et al., "nnU-Net Revisited" (MICCAI 2024): residual encoder stages, a plain
convolutional decoder with transposed-convolution upsampling, instance norm, leaky ReLU and optional
deep supervision. Shapes: input (B, C_in, D, H, W) -> logits (B, K, D, H, W); in training with deep
supervision, a list of logits from full resolution down to 1/8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from leanseg.config import ModelConfig, build_section
from leanseg.models.protocol import SegmentationModel
from leanseg.nn.blocks import ConvNormAct, ResidualBlock
from leanseg.nn.norm import replace_instance_norms
from leanseg.nn.vae import VAEBranch
from leanseg.registry import MODELS


class ResidualUNet(SegmentationModel):
    compiles_by_default = True  # measured: benchmarks/results/throughput.md (gradient checkpointing and the VAE aside)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[Sequence[int]] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
        kernel_size: int = 3,
        blocks_per_stage: int = 1,
        deep_supervision: bool = False,
        num_ds_heads: int = 3,
        gradient_checkpointing: bool = False,
        decoder_convs: int = 2,
        vae: bool = False,
    ) -> None:
        super().__init__()
        # recompute each stage in backward instead of storing its activations (torch.utils.checkpoint):
        # the baseline users try first for memory, compared with the invertible U-Nets
        self.gradient_checkpointing = gradient_checkpointing
        if len(features) != len(strides):
            raise ValueError("features and strides need one entry per stage")
        self.strides = [tuple(s) for s in strides]
        self.deep_supervision = deep_supervision
        self.stem = ConvNormAct(in_channels, features[0], kernel_size)
        self.encoder = nn.ModuleList()
        prev = features[0]
        for f, s in zip(features, self.strides):
            blocks = [ResidualBlock(prev, f, kernel_size, s)]
            blocks += [ResidualBlock(f, f, kernel_size) for _ in range(blocks_per_stage - 1)]
            self.encoder.append(nn.Sequential(*blocks))
            prev = f
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(len(features) - 1, 0, -1):
            s = self.strides[i]
            self.up.append(nn.ConvTranspose3d(features[i], features[i - 1], s, stride=s, bias=False))
            convs = [ConvNormAct(2 * features[i - 1], features[i - 1], kernel_size)]
            convs += [ConvNormAct(features[i - 1], features[i - 1], kernel_size) for _ in range(decoder_convs - 1)]
            self.decoder.append(nn.Sequential(*convs))
        # output heads for the finest decoder levels, coarse to fine: only the full-resolution one
        # without deep supervision, else ``num_ds_heads`` of them
        self.num_ds_heads = min(num_ds_heads, len(features) - 1) if deep_supervision else 1
        for i in range(self.num_ds_heads, 0, -1):
            self.heads.append(nn.Conv3d(features[i - 1], out_channels, 1))
        # Myronenko's VAE regulariser on the bottleneck (training only), as the invertible U-Nets have it
        self.vae = VAEBranch(features, self.strides, in_channels) if vae else None

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Input sizes must be multiples of this per axis."""
        d = torch.tensor(self.strides).prod(dim=0)
        return tuple(int(v) for v in d)  # type: ignore[return-value]

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | dict[str, Any]:
        run = self._checkpointed if self.gradient_checkpointing and self.training and torch.is_grad_enabled() else _call
        skips = []
        x = self.stem(image)
        for stage in self.encoder:
            x = run(stage, x)
            skips.append(x)
        x = skips.pop()
        out = self._decode(x, skips, run)
        if self.vae is not None and self.training:
            return {"logits": out, "aux_loss": self.vae.regulariser(image, x)}
        return out

    def _decode(self, x: torch.Tensor, skips: list[torch.Tensor], run: Any) -> torch.Tensor | list[torch.Tensor]:
        """The decoder from the bottleneck ``x`` up through ``skips``: logits, or in training with deep
        supervision the list of every head's logits, finest first."""
        decoded = []
        for up, dec in zip(self.up, self.decoder):
            x = run(dec, torch.cat([up(x), skips.pop()], dim=1))
            decoded.append(x)
        logits = self.heads[-1](decoded[-1])
        if self.deep_supervision and self.training:
            # coarser heads, from 1/2 resolution down; MONAI's DeepSupervisionLoss resizes the target
            lower = [self.heads[-2 - i](decoded[-2 - i]) for i in range(self.num_ds_heads - 1)]
            return [logits, *lower]
        return logits

    @staticmethod
    def _checkpointed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(module, x, use_reentrant=False)


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


@dataclass(frozen=True)
class ResUNetSettings:
    """``model.extra`` of ``resunet``."""

    num_ds_heads: int = 3  # deep-supervision outputs below the full resolution
    gradient_checkpointing: bool = False  # recompute each stage in backward instead of storing its activations
    decoder_convs: int = 2  # conv-norm-act layers per decoder stage (nnU-Net's ResEnc presets: 1)
    vae: bool = False  # Myronenko's VAE regulariser branch on the bottleneck (aux_loss = 0.1 L2 + 0.1 KL)


@dataclass(frozen=True)
class MonaiUNetSettings:
    """``model.extra`` of ``monai_unet``: passed to MONAI's ``UNet``."""

    num_res_units: int = 2
    norm: str = "instance"
    act: Any = ("leakyrelu", {"negative_slope": 0.01})
    dropout: float = 0.0


@MODELS.register("resunet", settings=ResUNetSettings)
def resunet(in_channels: int, out_channels: int, cfg: ModelConfig, features: Sequence[int], strides: Sequence[Sequence[int]]) -> nn.Module:
    return ResidualUNet(
        in_channels,
        out_channels,
        features=features,
        strides=strides,
        kernel_size=cfg.kernel_size,
        blocks_per_stage=cfg.blocks_per_stage,
        deep_supervision=cfg.deep_supervision,
        **asdict(build_section(ResUNetSettings, cfg.extra, "model.extra")),
    )


class _DivisorUNet(SegmentationModel):
    """MONAI ``UNet`` with the ``divisor`` attribute the predictor uses to pad inputs."""

    def __init__(self, net: nn.Module, strides: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = net
        d = torch.tensor([tuple(s) for s in strides]).prod(dim=0)
        self.divisor = tuple(int(v) for v in d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("monai_unet", settings=MonaiUNetSettings)
def monai_unet(
    in_channels: int, out_channels: int, cfg: ModelConfig, features: Sequence[int], strides: Sequence[Sequence[int]]
) -> nn.Module:
    """MONAI's ``UNet`` (Kerfoot et al. 2018) with residual units, instance norm, same widths and strides."""
    from monai.networks.nets import UNet

    kwargs = asdict(build_section(MonaiUNetSettings, cfg.extra, "model.extra"))
    kwargs["act"] = tuple(kwargs["act"]) if isinstance(kwargs["act"], list) else kwargs["act"]
    net = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(features),
        strides=tuple(tuple(s) for s in strides[1:]),
        kernel_size=cfg.kernel_size,
        **kwargs,
    )
    return _DivisorUNet(replace_instance_norms(net), strides)
