"""Preprocessing with MONAI transforms, cached once per dataset, and its inverse for prediction.

Forward: orientation -> crop to the non-zero region -> resampling to the target spacing ->
intensity normalisation. MONAI records each spatial step on the MetaTensor, so prediction maps the
network's probabilities back to the input grid with ``Compose.inverse`` (probabilities are
resampled, then arg-maxed, as nnU-Net does).

The training cache holds, per case, ``<id>_img.npy`` (float32, C x D x H x W), ``<id>_seg.npy``
(uint8) and ``<id>_locs.npz`` (sampled voxel coordinates per foreground class for oversampling),
written atomically; ``manifest.json`` records each cached case with its files' sizes and mtimes, so that a
replaced input is preprocessed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.data.datasets import Case, Dataset
from leanseg.data.fingerprint import check_label_matches
from leanseg.data.io import Volume, read_image, read_label
from leanseg.errors import LeansegError
from leanseg.names import check_case_id
from leanseg.plan import Plan
from leanseg.utils import atomic_path, atomic_write_text

LOCATIONS_PER_CLASS = 10000
_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """Foreground for cropping: any non-zero voxel (nnU-Net's rule; CT air is -1000, so CT is not cropped)."""
    return x != 0


def build_transforms(plan: Plan) -> Any:
    """The forward preprocessing as one MONAI ``Compose`` on ``image`` and, when present, ``label``.

    One instance serves images with and without labels, so that its ``inverse`` recognises the
    transforms recorded on either.
    """
    from monai.transforms import (
        Compose,
        CropForegroundd,
        Orientationd,
        Spacingd,
    )

    keys = ["image", "label"]
    ts: list[Any] = [Orientationd(keys=keys, axcodes=plan.orientation, labels=_AXIS_LABELS, allow_missing_keys=True)]
    if plan.crop_foreground:
        ts.append(CropForegroundd(keys=keys, source_key="image", select_fn=nonzero, allow_smaller=True, margin=0, allow_missing_keys=True))
    ts.append(Spacingd(keys=keys, pixdim=plan.target_spacing, mode=["bilinear", "nearest"], padding_mode="border", allow_missing_keys=True))
    ts.append(ChannelNormalise(plan))
    return Compose(ts)


def channel_transform(scheme: str, window: tuple[float, float] | None) -> Any:
    """MONAI's intensity transform for one channel's scheme (:data:`leanseg.plan.SCHEMES`), ``None`` for ``none``.

    zscore: mean 0 and std 1 over the image; ct: the fingerprint's foreground 0.5-99.5 percentile window, clipped and
    scaled to [0, 1]; rescale_to_0_1: the image's own min and max to [0, 1]; rgb_to_0_1: 0-255 to [0, 1].
    """
    from monai.transforms import NormalizeIntensity, ScaleIntensity, ScaleIntensityRange

    if scheme == "zscore":
        return NormalizeIntensity()
    if scheme == "ct":
        assert window is not None
        return ScaleIntensityRange(a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True)
    if scheme == "rescale_to_0_1":
        return ScaleIntensity(minv=0.0, maxv=1.0)
    if scheme == "rgb_to_0_1":
        return ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)
    return None


class ChannelNormalise:
    """Each channel of ``image`` by its own scheme and statistics (nnU-Net's rule), keeping the MetaTensor's geometry."""

    def __init__(self, plan: Plan) -> None:
        self.per_channel = [channel_transform(s, w) for s, w in zip(plan.normalization, plan.ct_window)]

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        img = d["image"]
        out = img.clone()
        for c, t in enumerate(self.per_channel):
            if t is not None:
                out[c : c + 1] = t(img[c : c + 1])
        return {**d, "image": out}


class Preprocessor:
    """Apply a plan's preprocessing to a :class:`Volume` and invert it on predictions."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.transforms = build_transforms(plan)

    def __call__(self, image: Volume, label: Volume | None = None) -> dict[str, Any]:
        from monai.data import MetaTensor

        d: dict[str, Any] = {
            "image": MetaTensor(torch.from_numpy(np.ascontiguousarray(image.array)), affine=torch.from_numpy(image.affine))
        }
        if label is not None:
            d["label"] = MetaTensor(torch.from_numpy(np.ascontiguousarray(label.array[None])), affine=torch.from_numpy(label.affine))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.transforms(d)

    def invert(self, probs: torch.Tensor, preprocessed: Any) -> torch.Tensor:
        """Map (K, D, H, W) probabilities on the preprocessed grid back to the input grid (K, X, Y, Z)."""
        from monai.data import MetaTensor

        pred = MetaTensor(probs.float(), meta=dict(preprocessed.meta), applied_operations=list(preprocessed.applied_operations))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = self.transforms.inverse({"image": pred})["image"]
        return out.as_tensor() if hasattr(out, "as_tensor") else out


def default_cache_root() -> Path:
    return Path(os.environ.get("LEANSEG_CACHE", Path.home() / ".cache" / "leanseg"))


def cache_dir_for(ds: Dataset, plan: Plan, cache_root: Path | None = None) -> Path:
    root_hash = hashlib.sha1(str(ds.root.resolve()).encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in ds.name)
    return Path(cache_root or default_cache_root()) / f"{safe}-{root_hash}-{plan.key()}"


def _sample_locations(seg: np.ndarray, values: list[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Up to LOCATIONS_PER_CLASS voxel coordinates per foreground label value (the sampler's foreground centres)."""
    locs = {}
    for k in (v for v in values if v != 0):
        idx = np.argwhere(seg == k)
        if len(idx) > LOCATIONS_PER_CLASS:
            idx = idx[rng.choice(len(idx), LOCATIONS_PER_CLASS, replace=False)]
        locs[str(k)] = idx.astype(np.int32)
    return locs


def preprocess_case(pre: Preprocessor, case: Case, out_dir: Path, seed: int = 0) -> None:
    check_case_id(case.case_id, case.images[0])  # load_dataset checked it; a Case made by hand is checked here
    image = read_image(list(case.images))
    label = read_label(case.label) if case.label else None
    if label is not None:
        check_label_matches(image, label, case.label, case.images[0])
    d = pre(image, label)
    img = d["image"].as_tensor().numpy().astype(np.float32)
    seg = d["label"].as_tensor().numpy()[0].astype(np.uint8)
    rng = np.random.default_rng(seed)
    locs = _sample_locations(seg, pre.plan.label_values, rng)
    with atomic_path(out_dir / f"{case.case_id}_img.npy") as tmp:
        np.save(tmp, img)
    with atomic_path(out_dir / f"{case.case_id}_seg.npy") as tmp:
        np.save(tmp, seg)
    with atomic_path(out_dir / f"{case.case_id}_locs.npz") as tmp:
        np.savez(tmp, **locs)


def preprocess_dataset(
    ds: Dataset,
    plan: Plan,
    cache_root: Path | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> Path:
    """Preprocess every case once into the cache (resumable: finished cases are kept)."""
    out = cache_dir_for(ds, plan, cache_root)
    manifest = out / "manifest.json"
    stamps = {c.case_id: c.stamp() for c in ds.cases}
    done = json.loads(manifest.read_text()).get("stamps", {}) if manifest.is_file() else {}
    if all(done.get(cid) == st for cid, st in stamps.items()):
        return out
    out.mkdir(parents=True, exist_ok=True)
    pre = Preprocessor(plan)
    # a case whose files changed since it was cached (or cached before stamps were kept) is preprocessed again
    todo = [c for c in ds.cases if done.get(c.case_id) != stamps[c.case_id] or not (out / f"{c.case_id}_locs.npz").is_file()]
    for i, case in enumerate(progress(todo) if progress else todo):
        preprocess_case(pre, case, out, seed=i)
        done[case.case_id] = stamps[case.case_id]  # recorded case by case: an interrupted run resumes where it stopped
        atomic_write_text(manifest, json.dumps({"cases": list(stamps), "stamps": done, "plan": plan.to_dict()}, indent=1))
    return out


class CachedCase:
    """A preprocessed case read from the cache (memory-mapped, so many cases cost little RAM)."""

    def __init__(self, cache_dir: Path, case_id: str) -> None:
        self.case_id = check_case_id(case_id, cache_dir / "manifest.json")
        try:
            self.image = np.load(cache_dir / f"{case_id}_img.npy", mmap_mode="r")
            self.label = np.load(cache_dir / f"{case_id}_seg.npy", mmap_mode="r")
            with np.load(cache_dir / f"{case_id}_locs.npz") as z:
                self.locations = {int(k): z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise LeansegError(f"Cached case {case_id} in {cache_dir} is unreadable ({e}); delete that folder to rebuild the cache.") from e
