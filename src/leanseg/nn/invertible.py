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

Any :class:`InvertibleBlock` can sit in a chain: its ``inverse_and_grad`` rebuilds its input through
:meth:`~InvertibleBlock.inverse` and runs one forward with grad. So does the learned sampling of iUNets
(Etmann et al. 2020, "iUNets: learnable invertible up- and downsampling"): :class:`OrthogonalSqueeze`, a
stride-2 grouped 2x2x2 convolution whose kernel is an orthogonal 8x8 matrix per channel (initialised at the
Haar wavelet), its transpose as up-sampling (:class:`Inverse`), and :class:`ChannelMixing`, an orthogonal
1x1x1 convolution before a coupling's channel split. Unlike iUNets, which store the resampling's
activations, these rebuild their inputs in backward like the couplings, so the memory saving stays.
Orthogonality comes from :func:`torch.nn.utils.parametrizations.orthogonal`; they compute in float32 (or
float64) whatever the autocast, so that the inverse of a bf16 step rebuilds its input to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from leanseg.nn.blocks import ConvNormAct


class InvertibleBlock(nn.Module):
    """A bijection that a memory-saving :class:`InvertibleChain` can hold: ``forward``, ``inverse`` and a backward
    that needs only the block's output."""

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse_and_grad(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Rebuild the input from the output, then one forward with grad: the input, dL/dx, and dL/dp for
        ``list(self.parameters())`` (None where unused)."""
        with torch.no_grad():
            x = self.inverse(y.detach())
        params = list(self.parameters())
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            out = self(x_)
        got = torch.autograd.grad(out, [x_, *params], grad_y, allow_unused=True)
        return x, got[0], list(got[1:])


class AdditiveCoupling(InvertibleBlock):
    """``y1 = x1 + F(x2); y2 = x2 + G(y1)`` on a channel split. Shapes: (B, C, D, H, W) both ways, C even.

    ``mix``: an invertible block applied before the split (:class:`ChannelMixing`), so that which channels
    meet F and which meet G is learned rather than fixed."""

    def __init__(self, f: nn.Module, g: nn.Module, mix: InvertibleBlock | None = None) -> None:
        super().__init__()
        self.f = f
        self.g = g
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix is not None:
            x = self.mix(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = torch.chunk(y, 2, dim=1)
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2)
        x = torch.cat([x1, x2], dim=1)
        return x if self.mix is None else self.mix.inverse(x)

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
        x, grads = torch.cat([x1, x2], dim=1), [*got_f[1:], *got[1:]]
        if self.mix is None:
            return x, grad_x, grads
        x, grad_x, got_mix = self.mix.inverse_and_grad(x, grad_x)
        return x, grad_x, [*grads, *got_mix]


def residual_function(channels: int, kernel: int = 3) -> nn.Module:
    """F or G of a coupling: conv-IN-leaky ReLU, conv-IN (the residual branch of a ResNet block)."""
    return nn.Sequential(ConvNormAct(channels, channels, kernel), ConvNormAct(channels, channels, kernel, act=False))


def coupling_block(channels: int, kernel: int = 3, mixing: bool = False) -> AdditiveCoupling:
    """A coupling of two residual functions on half the channels each; ``mixing``: an orthogonal 1x1x1 channel
    mixing before its split."""
    if channels % 2:
        raise ValueError(f"an additive coupling needs an even channel count, got {channels}")
    half = channels // 2
    mix = ChannelMixing(channels) if mixing else None
    return AdditiveCoupling(residual_function(half, kernel), residual_function(half, kernel), mix)


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
            for block in chain.sequence():
                y = block(y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        chain: InvertibleChain = ctx.chain
        grads: dict[torch.nn.Parameter, torch.Tensor] = {}
        y = y.detach()
        for block in reversed(chain.sequence()):
            with torch.autocast(**ctx.autocast):
                y, grad_y, got = block.inverse_and_grad(y, grad_y)
            for p, g in zip(block.parameters(), got):
                if g is not None and p.requires_grad:
                    grads[p] = grads[p] + g if p in grads else g
        param_grads = tuple(grads.get(p) for p in chain.param_list())
        return (grad_y, None, *param_grads)


class InvertibleChain(nn.Module):
    """A sequence of invertible blocks with O(1) activation memory in its length.

    ``pre`` and ``post``: a block entered before the sequence and one left through after it (a U-Net level's
    down- and up-sampling), kept apart from ``blocks`` so that the couplings' state-dict keys do not depend on
    them. ``memory_saving=False`` runs plain autograd through the same blocks (the reference the tests
    compare gradients against).
    """

    def __init__(
        self, blocks: Sequence[nn.Module], memory_saving: bool = True, pre: nn.Module | None = None, post: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.pre = pre
        self.blocks = nn.ModuleList(blocks)
        self.post = post
        self.memory_saving = memory_saving

    def sequence(self) -> list[nn.Module]:
        """Every block in the order the forward pass runs them."""
        return [b for b in (self.pre, *self.blocks, self.post) if b is not None]

    def param_list(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_saving and torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return _ChainFunction.apply(x, self, *self.param_list())
        for block in self.sequence():
            x = block(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.sequence()):
            y = block.inverse(y)
        return y


def invertible_stage(
    channels: int,
    depth: int,
    kernel: int = 3,
    memory_saving: bool = True,
    mixing: bool = False,
    pre: nn.Module | None = None,
    post: nn.Module | None = None,
) -> InvertibleChain:
    """``depth`` couplings on ``channels`` (each after an orthogonal channel mixing where ``mixing``), between
    ``pre`` and ``post``."""
    return InvertibleChain([coupling_block(channels, kernel, mixing) for _ in range(depth)], memory_saving, pre, post)


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


class Squeeze(InvertibleBlock):
    """:func:`squeeze3d` as a block: (B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2), no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squeeze3d(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return unsqueeze3d(y)


class Inverse(InvertibleBlock):
    """A block run backwards (a down-sampling's transpose as the up-sampling), with its own parameters."""

    def __init__(self, block: InvertibleBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.inverse(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.block(y)


def haar_matrix() -> torch.Tensor:
    """The orthonormal 3D Haar transform of a 2x2x2 cell (rows: low-pass first), in :func:`squeeze3d`'s voxel order."""
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / 2**0.5
    return torch.kron(torch.kron(h, h), h)


class _Orthogonal(InvertibleBlock):
    """A block whose ``weight`` (a batch of square matrices) stays orthogonal: ``W = W0 @ exp(A - A^T)``, ``W0`` the
    initial value (torch's trivialisation), and which computes in float32 or wider whatever the autocast."""

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(init.contiguous().clone())
        orthogonal(self, "weight")

    def _fp32(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 in, float32 out; float64 stays
        with torch.autocast(x.device.type, enabled=False):
            return fn(x.to(dtype), self.weight.to(dtype))


class ChannelMixing(_Orthogonal):
    """An orthogonal 1x1x1 convolution on C channels (Glow's invertible 1x1 convolution, kept orthogonal so that its
    inverse is its transpose), initialised at the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__(torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fp32(lambda x, w: F.conv3d(x, w[..., None, None, None]), x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._fp32(lambda y, w: F.conv3d(y, w.t()[..., None, None, None]), y)


class OrthogonalSqueeze(_Orthogonal):
    """Learned invertible down-sampling (iUNets): (B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2) by a stride-2 grouped
    2x2x2 convolution whose kernel is an orthogonal 8x8 matrix per channel; the inverse is its transpose.
    ``init`` "haar" (the Haar wavelet) or "squeeze" (the identity: exactly :func:`squeeze3d`)."""

    def __init__(self, channels: int, init: str = "haar") -> None:
        base = haar_matrix() if init == "haar" else torch.eye(8)
        super().__init__(base.expand(channels, 8, 8))
        self.channels = channels

    def _kernel(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(self.channels * 8, 1, 2, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fp32(lambda x, w: F.conv3d(x, self._kernel(w), stride=2, groups=self.channels), x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._fp32(lambda y, w: F.conv_transpose3d(y, self._kernel(w), stride=2, groups=self.channels), y)
