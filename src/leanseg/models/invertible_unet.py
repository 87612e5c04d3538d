"""Partially and fully invertible residual U-Nets with an optional VAE regulariser.

After Yamazaki, Rathour and Le, "Invertible Residual Network with Regularization for Effective
Volumetric Segmentation", with the VAE branch of Myronenko, "3D MRI brain tumor segmentation using
autoencoder regularization" (BrainLes 2018).

- ``partially_invres``: the U-Net with a chain of invertible couplings inside every encoder and
  decoder stage; max-pooling down and trilinear interpolation up (those two are not invertible).
- ``fully_invres``: down- and up-sampling are invertible too: each 2x2x2 cell to 8x channels and back,
  by the 3D pixel shuffle (``sampling: squeeze``) or by a learned orthogonal 8x8 matrix per channel with
  an orthogonal channel mixing before every coupling (``sampling: learned``, after iUNets, Etmann et al.
  2020). At each encoder level three quarters of the channels go over the skip connection and one
  quarter is down-sampled, so the widths double per level as in a plain U-Net (C -> C/4 * 8 = 2C); the
  decoder up-samples 2C -> C/4 and concatenates the C * 3/4 skip channels. Everything between the stem
  and the head is a bijection.
- With ``vae=True`` a VAE branch (:mod:`leanseg.nn.vae`: a Gaussian latent and a decoder mirroring the
  encoder) reconstructs the input from the bottleneck; in training the model then returns
  ``{"logits", "aux_loss"}`` where ``aux_loss = 0.1 * L2 + 0.1 * KL`` (the paper's weights), and the
  trainer adds it to Dice + CE.

``depth`` couplings per stage (default 1): one coupling holds four 3x3x3 convolution layers (two in F,
two in G, on half the channels each), as many layers as two residual units of the plain U-Net.
``encoder_depths`` sets the encoder's couplings level by level instead, e.g. Myronenko's (1, 2, 2, 4): the
parameters then grow where the voxels are few (hippocampus, float32, benchmarks/results/invertible.md: 2.20 M
parameters at 1.19x the step time of ``depth`` 1), and the activations held stay one chain's per stage.

Shapes: (B, C_in, D, H, W) -> logits (B, K, D, H, W); sizes must be multiples of 2^(stages-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import ModelConfig, build_section
from leanseg.models.protocol import SegmentationModel
from leanseg.nn.blocks import ConvNormAct
from leanseg.nn.invertible import Inverse, InvertibleBlock, InvertibleChain, OrthogonalSqueeze, Squeeze, invertible_stage
from leanseg.nn.vae import VAEBranch
from leanseg.registry import MODELS

SAMPLINGS = ("squeeze", "learned")  # fully_invres's resampling: the pixel shuffle, or iUNets' orthogonal learned one


class _InvertibleUNet(SegmentationModel):
    """What both variants share: stem, invertible encoder and decoder stages, head, optional VAE."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128),
        depth: int = 1,
        kernel_size: int = 3,
        vae: bool = False,
        memory_saving: bool = True,
        encoder_depths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.features = tuple(features)
        self.divisor = (2 ** (len(features) - 1),) * 3
        self.stem = ConvNormAct(in_channels, features[0], kernel_size)
        enc_depths = tuple(encoder_depths) if encoder_depths is not None else (depth,) * len(features)
        if len(enc_depths) != len(features) or min(enc_depths) < 1:
            raise ValueError(f"encoder_depths needs one count of at least 1 per level ({len(features)}), got {enc_depths}")
        self.enc = nn.ModuleList([self._stage(i, d, kernel_size, memory_saving, decoder=False) for i, d in enumerate(enc_depths)])
        self.dec = nn.ModuleList([self._stage(i, depth, kernel_size, memory_saving, decoder=True) for i in range(len(features) - 1)])
        self.head = nn.Conv3d(features[0], out_channels, 1)
        strides = ((1, 1, 1),) + ((2, 2, 2),) * (len(features) - 1)
        self.vae = VAEBranch(features, strides, in_channels) if vae else None

    def _stage(self, level: int, depth: int, kernel: int, memory_saving: bool, decoder: bool) -> InvertibleChain:
        """The chain of couplings at ``level`` of the encoder or the decoder."""
        return invertible_stage(self.features[level], depth, kernel, memory_saving)

    def _finish(self, x: torch.Tensor, logits: torch.Tensor, bottleneck: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.vae is None or not self.training:
            return logits
        return {"logits": logits, "aux_loss": self.vae.regulariser(x, bottleneck)}


class PartiallyInvertibleUNet(_InvertibleUNet):
    def __init__(self, in_channels: int, out_channels: int, features: Sequence[int] = (16, 32, 64, 128), **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, features, **kwargs)
        pairs = range(len(features) - 1)
        self.down = nn.ModuleList([ConvNormAct(features[i], features[i + 1], 1) for i in pairs])
        self.up = nn.ModuleList([ConvNormAct(features[i + 1], features[i], 1) for i in pairs])
        self.merge = nn.ModuleList([ConvNormAct(2 * features[i], features[i], 1) for i in pairs])

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        h = self.stem(x)
        skips = []
        for i, stage in enumerate(self.enc):
            h = stage(h)
            if i < len(self.down):
                skips.append(h)
                h = self.down[i](F.max_pool3d(h, 2))
        bottleneck = h
        for i in reversed(range(len(self.dec))):
            skip = skips[i]
            h = self.up[i](F.interpolate(h, size=skip.shape[2:], mode="trilinear", align_corners=False))
            h = self.dec[i](self.merge[i](torch.cat([h, skip], dim=1)))
        return self._finish(x, self.head(h), bottleneck)


class FullyInvertibleUNet(_InvertibleUNet):
    """``sampling``: "squeeze" (the parameter-free 3D pixel shuffle) or "learned" (an orthogonal 2x2x2 convolution
    per channel initialised at the Haar wavelet, its transpose up, and an orthogonal channel mixing before every
    coupling). Each level's down-sampling opens the next encoder chain and each up-sampling closes a decoder chain
    (the bottleneck's is a chain of its own, so the VAE sees the bottleneck), so every resampling rebuilds its
    input in backward as the couplings do."""

    def __init__(
        self, in_channels: int, out_channels: int, features: Sequence[int] = (16, 32, 64, 128), sampling: str = "squeeze", **kwargs: Any
    ) -> None:
        for a, b in zip(features[:-1], features[1:]):
            if b != 2 * a or a % 8:
                raise ValueError(f"fully_invres needs widths that double from a multiple of 8, got {tuple(features)}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"fully_invres sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling = sampling
        super().__init__(in_channels, out_channels, features, **kwargs)
        memory_saving = kwargs.get("memory_saving", True)
        self.bottleneck_up = InvertibleChain([], memory_saving, post=self._up(len(features) - 1))

    def _stage(self, level: int, depth: int, kernel: int, memory_saving: bool, decoder: bool) -> InvertibleChain:
        learned = self.sampling == "learned"
        pre = self._down(level) if level > 0 and not decoder else None
        post = self._up(level) if level > 0 and decoder else None
        return invertible_stage(self.features[level], depth, kernel, memory_saving, learned, pre, post)

    def _down(self, level: int) -> InvertibleBlock:
        """The level-1 -> level resampling, on the quarter of level-1's channels that does not go over the skip."""
        quarter = self.features[level - 1] // 4
        return OrthogonalSqueeze(quarter) if self.sampling == "learned" else Squeeze()

    def _up(self, level: int) -> InvertibleBlock:
        return Inverse(self._down(level))

    def _keep(self, level: int) -> int:
        return 3 * self.features[level] // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        core, bottleneck = self.core(self.stem(x))
        return self._finish(x, self.head(core), bottleneck)

    def core(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything between stem and head, a bijection: the decoder's output, and the bottleneck for the VAE."""
        skips = []
        for i, stage in enumerate(self.enc):
            h = stage(h)  # from level 1 on, the stage opens with its down-sampling
            if i < len(self.enc) - 1:
                skips.append(h[:, : self._keep(i)])
                h = h[:, self._keep(i) :]
        bottleneck = h
        h = self.bottleneck_up(h)
        for i in reversed(range(len(self.dec))):
            h = self.dec[i](torch.cat([skips[i], h], dim=1))  # from level 1 on, the stage closes with its up-sampling
        return h, bottleneck

    def core_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`core`: the decoder output back to the stem output."""
        skips = []
        h = y
        for i in range(len(self.dec)):
            z = self.dec[i].inverse(h)
            skips.append(z[:, : self._keep(i)])
            h = z[:, self._keep(i) :]
        h = self.enc[-1].inverse(self.bottleneck_up.inverse(h))
        for i in reversed(range(len(self.enc) - 1)):
            h = self.enc[i].inverse(torch.cat([skips[i], h], dim=1))
        return h


@dataclass(frozen=True)
class InvertibleSettings:
    """``model.extra`` of ``partially_invres`` / ``fully_invres``."""

    depth: int = 1  # couplings per stage
    encoder_depths: tuple[int, ...] | None = None  # couplings per encoder level (Myronenko's 1, 2, 2, 4); None: depth
    vae: bool = False  # the VAE regulariser branch (aux_loss = 0.1 L2 + 0.1 KL)
    memory_saving: bool = True  # recompute activations from the couplings' inverses in backward


@dataclass(frozen=True)
class FullyInvertibleSettings(InvertibleSettings):
    """``model.extra`` of ``fully_invres``: the invertible settings and how it resamples."""

    sampling: str = "squeeze"  # "squeeze" (3D pixel shuffle) or "learned" (orthogonal 2x2x2 + channel mixing, iUNets)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            from leanseg.errors import LeansegError

            raise LeansegError(f"model.extra.sampling of fully_invres must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}.")


def _kwargs(cfg: ModelConfig, settings: type = InvertibleSettings) -> dict:
    return asdict(build_section(settings, cfg.extra, "model.extra"))


@MODELS.register("partially_invres", settings=InvertibleSettings)
def partially_invres(
    in_channels: int, out_channels: int, cfg: ModelConfig, features: Sequence[int], strides: Sequence[Sequence[int]]
) -> nn.Module:
    _isotropic(strides, "partially_invres")
    return PartiallyInvertibleUNet(in_channels, out_channels, features, kernel_size=cfg.kernel_size, **_kwargs(cfg))


@MODELS.register("fully_invres", settings=FullyInvertibleSettings)
def fully_invres(
    in_channels: int, out_channels: int, cfg: ModelConfig, features: Sequence[int], strides: Sequence[Sequence[int]]
) -> nn.Module:
    _isotropic(strides, "fully_invres")
    return FullyInvertibleUNet(in_channels, out_channels, features, kernel_size=cfg.kernel_size, **_kwargs(cfg, FullyInvertibleSettings))


def _isotropic(strides: Sequence[Sequence[int]], name: str) -> None:
    if any(tuple(s) != (2, 2, 2) for s in strides[1:]):
        from leanseg.errors import LeansegError

        raise LeansegError(f"{name} pools by 2 on every axis; set model.strides to [[1,1,1],[2,2,2],...] for this dataset.")
