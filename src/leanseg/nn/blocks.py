"""Convolution, normalisation and residual blocks (instance norm + leaky ReLU, as in nnU-Net)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from leanseg.nn.norm import instance_norm, replace_instance_norms


def _pad(kernel: int | Sequence[int]) -> int | tuple[int, ...]:
    return kernel // 2 if isinstance(kernel, int) else tuple(k // 2 for k in kernel)


class ConvNormAct(nn.Sequential):
    """Conv3d -> instance norm (affine, :mod:`leanseg.nn.norm`) -> LeakyReLU(0.01); ``act=False`` leaves the activation out."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=_pad(kernel), bias=False),
            instance_norm(out_ch),
        ]
        if act:
            layers.append(nn.LeakyReLU(0.01, inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3x3 conv-norm layers with an identity (or strided 1x1x1 projection) shortcut.

    Shapes: (B, in_ch, D, H, W) -> (B, out_ch, D/s, H/s, W/s).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int | Sequence[int] = 1) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, kernel, stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel, 1, act=False)
        needs_proj = in_ch != out_ch or any(s != 1 for s in ((stride,) * 3 if isinstance(stride, int) else stride))
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False), instance_norm(out_ch)) if needs_proj else nn.Identity()
        )
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): MONAI's ``SimpleASPP`` branches plus an image-pooling branch.

    Shapes: (B, in_ch, D, H, W) -> (B, out_channels, D, H, W), ``out_channels = branch_ch * (len(dilations) + 1)``.
    """

    def __init__(self, in_ch: int, branch_ch: int, dilations: Sequence[int] = (1, 2, 4, 6)) -> None:
        from monai.networks.blocks import SimpleASPP

        super().__init__()
        kernels = [1] + [3] * (len(dilations) - 1)
        aspp = SimpleASPP(3, in_ch, branch_ch, kernels, list(dilations), norm_type="INSTANCE", acti_type="LEAKYRELU")
        self.branches = replace_instance_norms(aspp)
        # instance norm of a 1x1x1 map is undefined: the pooled branch has a bias and no norm
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(in_ch, branch_ch, 1), nn.LeakyReLU(0.01))
        self.out_channels = branch_ch * (len(dilations) + 1)
        self.project = ConvNormAct(self.out_channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-3:])
        return self.project(torch.cat([self.branches(x), pooled], dim=1))
