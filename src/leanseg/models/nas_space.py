"""The macro search space of resource-optimised NAS (Bae et al., "Resource Optimized Neural Architecture
Search for 3D Medical Image Segmentation", MICCAI 2019), as data.

An architecture is a dict ``{decision name: choice}``; :class:`ArchitectureSpace` lists the decisions
and their choices, maps them to and from points of the unit cube (so the strategy search's
controllers, random search included, work on it unchanged) and filters out children whose memory
estimate exceeds a limit. The network built from an architecture is :mod:`leanseg.models.nas_unet`.

Decisions (S encoder stages, S - 1 poolings; our reading of the paper's macro space):

* ``patch_<group>``: the input patch, five choices per axis group (axes of similar spacing share
  one), from the dataset's median shape in voxels times 1, 2^-1/2, 1/2, 2^-3/2, 1/4, each rounded
  up to a multiple of the network's divisor;
* ``pool_stride_<s>`` (s >= 3): 2 or 1 (stages 1 and 2 always pool by 2); at build time an axis
  pools only while its feature map stays at least 4 voxels long;
* ``pool_type_<s>``: max or average;
* ``dilation_<s>_<c>``: 1, 2 or 3 for convolution c of encoder stage s (1 at stage 1);
* ``activation_<s>``: ReLU, leaky ReLU or ELU for stage s (encoder and decoder);
* ``conv2_enc_<s>`` / ``conv2_dec_<s>``: the second convolution of a stage, or a zero operation
  (drop-path: the stage keeps only its first);
* ``residual_<s>``: encoder stage s plain, or residual (its convolutions plus a 1x1x1 convolution
  shortcut from the stage's input, as nnU-Net's residual encoder); our addition to the paper's space:
  the child chosen from its plain-only space stayed 1.4 Dice points under the residual U-Net on
  hippocampus;
* ``skip_<s>``: the U-Net skip at level s (1x1x1 convolution halving channels, concatenated), or zero;
* ``long_skip_<s>``: an extra long skip into decoder level s, or none. In the paper's space (``cross_skips``,
  the default) its source is any encoder stage j (``enc_<j>``), resampled to level s (average pooling from a
  finer stage, trilinear upsampling from a coarser one) around a matching 1x1x1 convolution and added; without
  ``cross_skips`` the choice is ``on`` (from encoder stage s, the space of searches before issue 30).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leanseg.errors import LeansegError

ACTIVATIONS = ("relu", "leakyrelu", "elu")
PATCH_FACTORS = (1.0, 2**-0.5, 0.5, 2**-1.5, 0.25)


@dataclass(frozen=True)
class Decision:
    name: str
    choices: tuple[Any, ...]

    def index(self, u: float) -> int:
        """The choice a unit-interval coordinate falls in (equal-width bins)."""
        return min(int(float(u) * len(self.choices)), len(self.choices) - 1) if u > 0 else 0


@dataclass(frozen=True)
class ArchitectureSpace:
    """The decisions, in the order a controller emits them, plus what building a child needs."""

    decisions: tuple[Decision, ...]
    num_stages: int
    axis_groups: tuple[tuple[int, ...], ...]
    in_channels: int
    num_classes: int
    base_features: int = 16

    # the SearchSpace interface the strategy-search controllers use
    @property
    def dim(self) -> int:
        return len(self.decisions)

    @property
    def keys(self) -> list[str]:
        return [d.name for d in self.decisions]

    def values(self, unit: Sequence[float]) -> dict[str, Any]:
        if len(unit) != self.dim:
            raise ValueError(f"expected {self.dim} coordinates, got {len(unit)}")
        return {d.name: d.choices[d.index(u)] for d, u in zip(self.decisions, unit)}

    def unit(self, arch: dict[str, Any]) -> np.ndarray:
        """Bin centres of an architecture's choices."""
        return np.array([(d.choices.index(arch[d.name]) + 0.5) / len(d.choices) for d in self.decisions])

    def normalise(self, arch: dict[str, Any]) -> dict[str, Any]:
        """An architecture read back from JSON or YAML (lists) with its patch choices as tuples again."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}

    def indices(self, arch: dict[str, Any]) -> list[int]:
        return [d.choices.index(arch[d.name]) for d in self.decisions]

    def from_indices(self, idx: Sequence[int]) -> dict[str, Any]:
        return {d.name: d.choices[int(i)] for d, i in zip(self.decisions, idx)}

    def largest(self) -> dict[str, Any]:
        """The paper's first child: the largest patch, every operation and every skip present."""
        arch = {}
        for d in self.decisions:
            if d.name.startswith("patch_"):
                arch[d.name] = max(d.choices)
            elif d.name.startswith(("conv2_", "skip_")):
                arch[d.name] = "conv" if d.name.startswith("conv2_") else "on"
            elif d.name.startswith("long_skip_"):
                arch[d.name] = "on" if "on" in d.choices else f"enc_{d.name.rsplit('_', 1)[1]}"  # from its own level
            elif d.name.startswith("residual_"):
                arch[d.name] = "on"
            else:
                arch[d.name] = d.choices[0]
        return arch

    def residual_unet(self) -> dict[str, Any]:
        """The space's residual U-Net: :meth:`largest` with dilation 1, leaky ReLU, max pooling of stride 2 and no
        long skips (residual stages where the space has them): the child closest to leanseg's base U-Net."""
        arch = self.largest()
        fixed = {"dilation_": 1, "activation_": "leakyrelu", "long_skip_": "off", "pool_type_": "max", "pool_stride_": 2}
        for d in self.decisions:
            for prefix, value in fixed.items():
                if d.name.startswith(prefix):
                    arch[d.name] = value
        return arch

    def patch_size(self, arch: dict[str, Any]) -> tuple[int, int, int]:
        size = [0, 0, 0]
        for g, axes in enumerate(self.axis_groups):
            for a in axes:
                size[a] = int(arch[f"patch_{g}"][axes.index(a)])
        return tuple(size)  # type: ignore[return-value]

    def strides(self, arch: dict[str, Any]) -> list[tuple[int, int, int]]:
        """Pooling stride of each of the S - 1 poolings, per axis; an axis stops pooling below 4 voxels."""
        size = np.asarray(self.patch_size(arch), dtype=float)
        out = []
        for s in range(2, self.num_stages + 1):
            want = 2 if s <= 3 else int(arch[f"pool_stride_{s - 1}"])
            st = tuple(int(want if size[a] / want >= 4 else 1) for a in range(3))
            size = size / np.asarray(st)
            out.append(st)
        return out  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_stages": self.num_stages,
            "axis_groups": [list(g) for g in self.axis_groups],
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "base_features": self.base_features,
            "decisions": [{"name": d.name, "choices": [list(c) if isinstance(c, tuple) else c for c in d.choices]} for d in self.decisions],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchitectureSpace:
        decisions = tuple(Decision(x["name"], tuple(tuple(c) if isinstance(c, list) else c for c in x["choices"])) for x in d["decisions"])
        return cls(
            decisions,
            int(d["num_stages"]),
            tuple(tuple(g) for g in d["axis_groups"]),
            d["in_channels"],
            d["num_classes"],
            d["base_features"],
        )


def long_skip_source(arch: dict[str, Any], level: int) -> int | None:
    """The encoder stage (1-based) whose features the long skip into decoder ``level`` adds, or None: ``enc_<j>``
    names it, ``on`` (same-level spaces) is the level's own stage."""
    choice = arch[f"long_skip_{level}"]
    if choice == "off":
        return None
    return level if choice == "on" else int(str(choice).removeprefix("enc_"))


def arch_to_json(arch: dict[str, Any]) -> dict[str, Any]:
    """An architecture with its patch choices as lists, for JSON and YAML (``ArchitectureSpace.normalise`` reads it back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}


def axis_groups(spacing: Sequence[float]) -> tuple[tuple[int, ...], ...]:
    """Axes whose spacing is within 2x of the finest form one group; the others (thick slices) another."""
    fine = min(spacing)
    a = tuple(i for i in range(3) if spacing[i] <= 2 * fine)
    b = tuple(i for i in range(3) if spacing[i] > 2 * fine)
    return (a, b) if b else (a,)


def architecture_space(
    median_shape: Sequence[int],
    spacing: Sequence[float],
    in_channels: int,
    num_classes: int,
    num_stages: int = 4,
    base_features: int = 16,
    cross_skips: bool = True,
) -> ArchitectureSpace:
    """The macro space for a dataset: its median shape (voxels at the target spacing) fixes the patch choices;
    ``cross_skips``: a long skip may come from any encoder stage (the paper's), else from its own level only."""
    if num_stages < 3:
        raise LeansegError(f"A searched U-Net needs at least 3 stages (deep supervision from stages 1-3); got {num_stages}.")
    divisor = 2 ** (num_stages - 1)
    groups = axis_groups(spacing)
    decisions: list[Decision] = []
    for g, axes in enumerate(groups):
        choices = []
        for f in PATCH_FACTORS:
            c = tuple(max(divisor, int(math.ceil(median_shape[a] * f / divisor) * divisor)) for a in axes)
            if c not in choices:
                choices.append(c)
        decisions.append(Decision(f"patch_{g}", tuple(choices)))
    for s in range(1, num_stages):
        if s >= 3:
            decisions.append(Decision(f"pool_stride_{s}", (2, 1)))
        decisions.append(Decision(f"pool_type_{s}", ("max", "avg")))
    for s in range(1, num_stages + 1):
        for c in (1, 2):
            if s >= 2:
                decisions.append(Decision(f"dilation_{s}_{c}", (1, 2, 3)))
        decisions.append(Decision(f"activation_{s}", ACTIVATIONS))
        decisions.append(Decision(f"conv2_enc_{s}", ("conv", "zero")))
        decisions.append(Decision(f"residual_{s}", ("off", "on")))
    for s in range(1, num_stages):
        decisions.append(Decision(f"conv2_dec_{s}", ("conv", "zero")))
        decisions.append(Decision(f"skip_{s}", ("on", "zero")))
        sources = tuple(f"enc_{j}" for j in range(1, num_stages + 1)) if cross_skips else ("on",)
        decisions.append(Decision(f"long_skip_{s}", ("off", *sources)))
    return ArchitectureSpace(tuple(decisions), num_stages, groups, in_channels, num_classes, base_features)
