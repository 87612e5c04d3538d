"""The AutoPath policy network, and policy files bound to the segmentation model they were trained for.

After Sun et al. 2020 (AutoPath) and Wu et al. 2018 (BlockDrop): a small 3D CNN sees a downsampled
copy of the image, or of the segmentation network's stem features (``autopath.policy_input=stem``:
the stem, one convolution, runs once more for the policy), and outputs one drop probability per gated block. It only
produces masks; it never imports the segmentation model (the stem is reached as ``model.stem``), and a
model never imports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import AutoPathConfig
from leanseg.errors import LeansegError
from leanseg.nn.blocks import ConvNormAct
from leanseg.utils import atomic_path

FORMAT = "leanseg-policy"
SOURCES = ("image", "stem")  # what the policy sees: the preprocessed image, or the segmentation network's stem output


class PolicyNet(nn.Module):
    """(B, C, D, H, W) image at any size -> (B, N) drop probabilities in [bound, 1 - bound]."""

    def __init__(
        self,
        in_channels: int,
        num_blocks: int,
        size: Sequence[int] = (32, 32, 32),
        features: Sequence[int] = (8, 16, 32),
        bound: float = 0.05,
        source: str = "image",
    ) -> None:
        super().__init__()
        if not 0 <= bound < 0.5:
            raise ValueError("bound must lie in [0, 0.5)")
        if source not in SOURCES:
            raise LeansegError(f"autopath.policy_input must be one of {', '.join(SOURCES)}, got {source!r}.")
        self.source = source
        self.size = tuple(int(s) for s in size)
        if min(self.size) < 2 ** (len(features) + 1):
            raise LeansegError(
                f"autopath.policy_size {list(self.size)} is too small for {len(features)} stride-2 layers; "
                f"use at least {2 ** (len(features) + 1)} per axis or fewer autopath.policy_features."
            )
        self.bound = float(bound)
        layers: list[nn.Module] = []
        prev = in_channels
        for f in features:
            layers.append(ConvNormAct(prev, f, 3, stride=2))
            prev = f
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Linear(prev, num_blocks)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, -2.0)  # start by keeping most blocks (drop probability ~0.12)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image.float(), size=self.size, mode="trilinear", align_corners=False)
        p = torch.sigmoid(self.head(self.features(x)))
        return self.bound + (1 - 2 * self.bound) * p

    @torch.no_grad()
    def keep_mask(self, seen: torch.Tensor) -> torch.Tensor:
        """The greedy path for what the policy sees (:meth:`observe`): keep a block where its drop probability is
        at most 0.5. (B, N) bool."""
        return self(seen) <= 0.5

    @torch.no_grad()
    def observe(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """What the policy sees of a preprocessed (B, C, D, H, W) image: the image, or ``model.stem`` of it."""
        return model.stem(image.float()) if self.source == "stem" else image

    def choose(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """The greedy keep mask (B, N) for a preprocessed (B, C, D, H, W) image run by ``model``."""
        return self.keep_mask(self.observe(model, image))


class FixedPath:
    """One path for every image: the strongest simple alternative to a policy (the best fixed path that
    ``leanseg drop-sweep --search`` finds). Chooses like a policy, so the Predictor runs either."""

    def __init__(self, path: str, num_blocks: int) -> None:
        if len(path) != num_blocks or set(path) - {"0", "1"}:
            raise LeansegError(
                f"--path {path!r} must give one 0 (drop) or 1 (keep) per gated block, block 1 first: this model has {num_blocks}."
            )
        self.path = path
        self.keep = torch.tensor([c == "1" for c in path])

    def choose(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """The same (B, N) keep mask for every image of the batch."""
        return self.keep.expand(image.shape[0], -1)


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-1 of a model's state (names, shapes and bytes): the identity a policy is bound to."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def build_policy(in_channels: int, num_blocks: int, cfg: AutoPathConfig) -> PolicyNet:
    """``in_channels``: of what the policy sees (the image's, or the stem's output with ``policy_input=stem``)."""
    return PolicyNet(in_channels, num_blocks, cfg.policy_size, cfg.policy_features, cfg.bound, cfg.policy_input)


def save_policy(path: Path, policy: PolicyNet, model: nn.Module, cfg: AutoPathConfig, **info: Any) -> Path:
    """Write a policy with the fingerprint of ``model`` (atomically)."""
    import dataclasses

    payload = {
        "format": FORMAT,
        "model_fingerprint": weights_fingerprint(model),
        "num_blocks": int(policy.head.out_features),
        "in_channels": int(policy.features[0][0].in_channels),
        "autopath": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
        "state": policy.state_dict(),
        **info,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_policy(path: Path, model: nn.Module) -> tuple[PolicyNet, dict[str, Any]]:
    """Load a policy and check that it was trained for exactly ``model`` (same weights)."""
    from leanseg.config import ExperimentConfig

    path = Path(path)
    if not path.is_file():
        raise LeansegError(f"Policy {path} does not exist; train one with `leanseg train-policy` or pass the right file.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LeansegError(f"Policy {path} cannot be loaded safely ({type(e).__name__}); it is damaged: retrain it.") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LeansegError(f"{path} is not a leanseg policy; pass a file written by `leanseg train-policy`.")
    want = weights_fingerprint(model)
    if ckpt["model_fingerprint"] != want or ckpt["num_blocks"] != model.num_gated_blocks:
        raise LeansegError(
            f"Policy {path} was trained for another segmentation model (fingerprint {ckpt['model_fingerprint']}, this one {want}); "
            "pass the run folder it was trained with, or train a policy for this model with `leanseg train-policy`."
        )
    cfg = ExperimentConfig().with_overrides({f"autopath.{k}": v for k, v in ckpt["autopath"].items()}).autopath
    policy = build_policy(ckpt["in_channels"], ckpt["num_blocks"], cfg)
    policy.load_state_dict(ckpt["state"])
    policy.eval()
    return policy, ckpt
