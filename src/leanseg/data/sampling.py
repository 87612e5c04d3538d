"""Training patches: foreground-oversampled crops of cached cases, then augmentation.

Each item is a pure function of ``(seed, index)``: the case, the patch centre and every augmentation
parameter are drawn from a generator seeded by both, so a run is repeatable whatever the number of
loader workers, and resuming at iteration k continues with exactly the patches k onwards
(DESIGN.md, example 7). Augmentations are MONAI's random transforms, each with its own probability
from :class:`~leanseg.config.AugmentConfig` (searched by the strategy search).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from leanseg.config import AugmentConfig
from leanseg.data.preprocess import CachedCase


def build_augmentation(cfg: AugmentConfig) -> Any:
    """MONAI dict transforms on ``image`` (C, D, H, W) and ``label`` (1, D, H, W), nnU-Net's order."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSharpend,
        RandGaussianSmoothd,
        RandShiftIntensityd,
    )

    rad = math.radians(cfg.rotate_degrees)
    return Compose(
        [
            RandAffined(
                keys=["image", "label"],
                prob=cfg.rotate_scale,
                rotate_range=(rad, rad, rad),
                scale_range=(cfg.scale_range,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandGaussianNoised(keys="image", prob=cfg.noise, std=cfg.noise_std),
            RandGaussianSmoothd(keys="image", prob=cfg.smooth, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandGaussianSharpend(keys="image", prob=cfg.sharpen),
            RandAdjustContrastd(keys="image", prob=cfg.contrast, gamma=(0.7, 1.5)),
            RandShiftIntensityd(keys="image", prob=cfg.shift, offsets=cfg.shift_offset),
            RandFlipd(keys=["image", "label"], prob=cfg.flip, spatial_axis=0),
            RandFlipd(keys=["image", "label"], prob=cfg.flip, spatial_axis=1),
            RandFlipd(keys=["image", "label"], prob=cfg.flip, spatial_axis=2),
        ]
    )


def crop_with_padding(arr: np.ndarray, start: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Crop ``arr[..., start:start+size]`` over the last 3 axes, zero-padding what lies outside."""
    out = np.zeros(arr.shape[:-3] + tuple(size), dtype=arr.dtype)
    shape = np.asarray(arr.shape[-3:])
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.asarray(size), shape)
    if np.any(hi <= lo):
        return out
    src = (Ellipsis,) + tuple(slice(a, b) for a, b in zip(lo, hi))
    dst = (Ellipsis,) + tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
    out[dst] = arr[src]
    return out


class PatchDataset(Dataset):
    """``length`` random patches from cached cases; item i depends only on ``(seed, i)``."""

    def __init__(
        self,
        cache_dir: Path,
        case_ids: list[str],
        patch_size: tuple[int, int, int],
        augment: AugmentConfig | None,
        foreground_oversample: float = 0.33,
        seed: int = 0,
        length: int = 10**9,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.case_ids = list(case_ids)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.augment_cfg = augment
        self.fg = foreground_oversample
        self.seed = seed
        self.length = length
        self._cases: dict[str, CachedCase] = {}
        self._augment: Any = None

    def __len__(self) -> int:
        return self.length

    def _case(self, case_id: str) -> CachedCase:
        if case_id not in self._cases:
            self._cases[case_id] = CachedCase(self.cache_dir, case_id)
        return self._cases[case_id]

    def sample_start(self, case: CachedCase, rng: np.random.Generator) -> np.ndarray:
        shape = np.asarray(case.label.shape)
        patch = np.asarray(self.patch_size)
        classes = [k for k, v in case.locations.items() if len(v)]
        if classes and rng.random() < self.fg:
            k = classes[rng.integers(len(classes))]
            centre = case.locations[k][rng.integers(len(case.locations[k]))]
        else:
            centre = np.array([rng.integers(0, s) for s in shape])
        start = centre - patch // 2
        # keep the patch inside the image where the image is larger than the patch
        upper = np.maximum(shape - patch, 0)
        lower = np.minimum(shape - patch, 0) // 2
        return np.clip(start, lower, np.maximum(upper, lower))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        case = self._case(self.case_ids[rng.integers(len(self.case_ids))])
        start = self.sample_start(case, rng)
        image = torch.from_numpy(crop_with_padding(case.image, start, self.patch_size))
        label = torch.from_numpy(crop_with_padding(case.label, start, self.patch_size)[None])
        if self.augment_cfg is not None:
            from monai.data import get_track_meta, set_track_meta

            if self._augment is None:
                self._augment = build_augmentation(self.augment_cfg)
            self._augment.set_random_state(seed=int(rng.integers(2**31)))
            tracking = get_track_meta()
            set_track_meta(False)  # plain tensors: faster, and nothing here needs the history
            try:
                d = self._augment({"image": image, "label": label})
            finally:
                set_track_meta(tracking)
            image, label = d["image"], d["label"]
        return {"image": torch.as_tensor(image, dtype=torch.float32), "label": torch.as_tensor(label).to(torch.uint8)}
