"""Instance normalisation that stays fast in torch's channels-last 3D layout: one factory for every family.

``InstanceNorm3d(C, affine=True)`` is ``GroupNorm(C, C)``: per-sample, per-channel statistics and a per-channel
affine. The two differ in their kernels. ``instance_norm`` forces a contiguous (NCDHW) tensor, so in channels-last
every call reorders its input and output; compiled ``group_norm`` fuses into one pass in either layout. So
:class:`InstanceNorm` runs ``instance_norm`` on a contiguous tensor in eager mode (exactly today's kernel and
numbers) and ``group_norm`` elsewhere (channels-last, or under ``torch.compile``). Its state-dict keys (``weight``,
``bias``, none without an affine) are ``InstanceNorm3d``'s, so every checkpoint loads as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm(nn.GroupNorm):
    """Instance normalisation of (B, C, D, H, W), equal in function and state dict to ``nn.InstanceNorm3d(C, affine=...)``
    (no running statistics)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, num_features, eps=eps, affine=affine)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous() and not torch.compiler.is_compiling():
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def instance_norm(num_features: int, affine: bool = True, eps: float = 1e-5) -> InstanceNorm:
    """The normalisation of every leanseg network (residual U-Net, DeepLabV3/AutoPath, NAS, invertible, LowRes)."""
    return InstanceNorm(num_features, eps=eps, affine=affine)


def replace_instance_norms(module: nn.Module) -> nn.Module:
    """Swap every ``nn.InstanceNorm3d`` inside ``module`` (MONAI-built parts: ASPP branches, MONAI's UNet) for an
    :class:`InstanceNorm` with the same parameters; running statistics are refused (a different function)."""
    for name, child in module.named_children():
        if isinstance(child, nn.InstanceNorm3d):
            if child.track_running_stats:
                raise ValueError("InstanceNorm3d with running statistics has no channels-last twin; keep it as it is.")
            norm = InstanceNorm(child.num_features, eps=child.eps, affine=child.affine)
            if child.affine:
                norm.load_state_dict(child.state_dict())
            setattr(module, name, norm)
        else:
            replace_instance_norms(child)
    return module
