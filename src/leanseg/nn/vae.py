"""The VAE regulariser of Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization"
(BrainLes 2018), as the invertible U-Nets' paper uses it: a second decoder reconstructs the input image from the
encoder's bottleneck through a Gaussian latent, and ``0.1 * L2 + 0.1 * KL`` joins the segmentation loss.

The decoder mirrors the encoder: per level, a 1x1x1 convolution to the level's width, upsampling by the
level's stride and one residual block, then a 1x1x1 convolution to the image's channels. Myronenko flattens a
fixed-size crop into the latent's dense layer; here the reduced bottleneck is average-pooled to a ``grid``^3
first, so the branch fits any patch size.

Shapes: bottleneck (B, features[-1], d, h, w) -> reconstruction (B, image_channels, *size), mu and logvar (B, latent).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.nn.blocks import ConvNormAct, ResidualBlock

VAE_WEIGHTS = (0.1, 0.1)  # Myronenko's (and the invertible paper's) weights of L2 and KL


def vae_loss_terms(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Myronenko's terms: L2 = mean squared reconstruction error; KL = mean(mu^2 + var - log var - 1)."""
    l2 = F.mse_loss(recon.float(), x.float())
    kl = torch.mean(mu.float().pow(2) + logvar.float().exp() - logvar.float() - 1.0)
    return l2, kl


class VAEBranch(nn.Module):
    """Bottleneck -> ``width`` channels pooled to ``grid``^3 -> N(mu, var) of ``latent`` dims -> the encoder mirrored.

    ``features`` and ``strides``: the encoder's widths and per-level strides (the first level's stride is the stem's,
    1); the decoder climbs back level by level to the full resolution.
    """

    def __init__(
        self,
        features: Sequence[int],
        strides: Sequence[Sequence[int]],
        image_channels: int,
        latent: int = 128,
        grid: int = 4,
        width: int = 16,
    ) -> None:
        super().__init__()
        self.grid, self.width = grid, width
        self.reduce = ConvNormAct(features[-1], width, 3)
        self.to_stats = nn.Linear(width * grid**3, 2 * latent)
        self.from_latent = nn.Linear(latent, width * grid**3)
        self.expand = ConvNormAct(width, features[-1], 1)
        self.levels = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(features[i + 1], features[i], 1),
                nn.Upsample(scale_factor=tuple(float(s) for s in strides[i + 1]), mode="trilinear", align_corners=False),
                ResidualBlock(features[i], features[i]),
            )
            for i in reversed(range(len(features) - 1))
        )
        self.out = nn.Conv3d(features[0], image_channels, 1)

    def forward(self, feats: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.adaptive_avg_pool3d(self.reduce(feats), self.grid).flatten(1)
        mu, logvar = self.to_stats(h).float().chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        g = self.from_latent(z).view(-1, self.width, self.grid, self.grid, self.grid)
        g = F.interpolate(self.expand(g), size=tuple(feats.shape[2:]), mode="trilinear", align_corners=False)
        for level in self.levels:
            g = level(g)
        if tuple(g.shape[2:]) != tuple(size):  # an input not a multiple of the strides' product
            g = F.interpolate(g, size=tuple(size), mode="trilinear", align_corners=False)
        return self.out(g), mu, logvar

    def regulariser(self, x: torch.Tensor, bottleneck: torch.Tensor) -> torch.Tensor:
        """``0.1 * L2 + 0.1 * KL`` of reconstructing ``x`` (B, C, D, H, W) from ``bottleneck``: the trainer's ``aux_loss``."""
        recon, mu, logvar = self(bottleneck, x.shape[2:])
        l2, kl = vae_loss_terms(x, recon, mu, logvar)
        return VAE_WEIGHTS[0] * l2 + VAE_WEIGHTS[1] * kl
