"""Invertible additive coupling and memory-frugal chains of couplings.

After Gomez et al., "The Reversible Residual Network" (NeurIPS 2017), as used by Yamazaki, Rathour
and Le, "Invertible Residual Network with Regularization for Effective Volumetric Segmentation".
MemCNN, which the paper used, is unmaintained and pulls a CUDA torchvision, so the autograd Function
is ours.

An :class:`AdditiveCoupling` splits channels into (x1, x2) and computes
``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``; its inverse is ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``.
:class:`InvertibleChain` runs a sequence of couplings through one autograd Function that keeps
*only the chain's output*: the forward pass runs under ``no_grad`` (no block input or intermediate is
stored), and the backward pass walks the blocks from last to first, rebuilding each block's input
from its output. The inverse evaluates F and G on the very inputs the forward pass gave them, so
their graphs yield the gradients with no further recomputation: a step costs one extra forward of
the couplings. Activation memory is one block's worth whatever the depth (tested through
saved-tensor hooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from leanseg.nn.blocks import ConvNormAct


class AdditiveCoupling(nn.Module):
    """``y1 = x1 + F(x2); y2 = x2 + G(y1)`` on a channel split. Shapes: (B, C, D, H, W) both ways, C even."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = torch.chunk(y, 2, dim=1)
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)

    def inverse_and_grad(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Rebuild the input from the output and back-propagate ``grad_y`` through the block.

        The inverse evaluates G(y1) and F(x2) on exactly the inputs the forward pass gave them, so
        their graphs serve for the gradients too: one forward and one backward of F and G, no
        separate recomputation (MemCNN's memory-saving backward, written out).

        Returns:
            the input x, dL/dx, and dL/dp for ``list(self.parameters())`` (None where unused).
        """
        y1, y2 = torch.chunk(y.detach(), 2, dim=1)
        gy1, gy2 = torch.chunk(grad_y, 2, dim=1)
        f_params, g_params = list(self.f.parameters()), list(self.g.parameters())
        with torch.enable_grad():
            y1_ = y1.requires_grad_(True)
            g = self.g(y1_)
        got = torch.autograd.grad(g, [y1_, *g_params], gy2, allow_unused=True)
        gy1_total = gy1 + got[0]  # y1 reaches the loss directly and through G
        x2 = (y2 - g).detach()
        with torch.enable_grad():
            x2_ = x2.requires_grad_(True)
            f = self.f(x2_)
        got_f = torch.autograd.grad(f, [x2_, *f_params], gy1_total, allow_unused=True)
        x1 = (y1 - f).detach()
        grad_x = torch.cat([gy1_total, gy2 + got_f[0]], dim=1)
        return torch.cat([x1, x2], dim=1), grad_x, [*got_f[1:], *got[1:]]


def residual_function(channels: int, kernel: int = 3) -> nn.Module:
    """F or G of a coupling: conv-IN-leaky ReLU, conv-IN (the residual branch of a ResNet block)."""
    return nn.Sequential(ConvNormAct(channels, channels, kernel), ConvNormAct(channels, channels, kernel, act=False))


def coupling_block(channels: int, kernel: int = 3) -> AdditiveCoupling:
    if channels % 2:
        raise ValueError(f"an additive coupling needs an even channel count, got {channels}")
    half = channels // 2
    return AdditiveCoupling(residual_function(half, kernel), residual_function(half, kernel))


class _ChainFunction(torch.autograd.Function):
    """Forward without a graph; backward by inversion, one block at a time."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, chain: InvertibleChain, *params: torch.Tensor) -> torch.Tensor:
        ctx.chain = chain
        # backward must rebuild and recompute under the same autocast state (as torch.utils.checkpoint does)
        ctx.autocast = {
            "device_type": x.device.type,
            "enabled": torch.is_autocast_enabled(x.device.type),
            "dtype": torch.get_autocast_dtype(x.device.type),
        }
        with torch.no_grad():
            y = x
            for block in chain.blocks:
                y = block(y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        chain: InvertibleChain = ctx.chain
        grads: dict[torch.nn.Parameter, torch.Tensor] = {}
        y = y.detach()
        for block in reversed(chain.blocks):
            with torch.autocast(**ctx.autocast):
                y, grad_y, got = block.inverse_and_grad(y, grad_y)
            for p, g in zip(block.parameters(), got):
                if g is not None and p.requires_grad:
                    grads[p] = grads[p] + g if p in grads else g
        param_grads = tuple(grads.get(p) for p in chain.param_list())
        return (grad_y, None, *param_grads)


class InvertibleChain(nn.Module):
    """A sequence of invertible blocks with O(1) activation memory in its length.

    ``memory_saving=False`` runs plain autograd through the same blocks (the reference the tests
    compare gradients against).
    """

    def __init__(self, blocks: Sequence[nn.Module], memory_saving: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving

    def param_list(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_saving and torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return _ChainFunction.apply(x, self, *self.param_list())
        for block in self.blocks:
            x = block(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y


def invertible_stage(channels: int, depth: int, kernel: int = 3, memory_saving: bool = True) -> InvertibleChain:
    return InvertibleChain([coupling_block(channels, kernel) for _ in range(depth)], memory_saving)


def squeeze3d(x: torch.Tensor) -> torch.Tensor:
    """3D pixel unshuffle: (B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2), an invertible permutation."""
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * 8, d // 2, h // 2, w // 2)


def unsqueeze3d(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze3d`: (B, 8C, D, H, W) -> (B, C, 2D, 2H, 2W)."""
    b, c8, d, h, w = x.shape
    c = c8 // 8
    x = x.reshape(b, c, 2, 2, 2, d, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, d * 2, h * 2, w * 2)
