"""Dataset fingerprint and the plan it chooses, after nnU-Net (Isensee et al., Nature Methods 2021).

The fingerprint holds per-case spacings and shapes, foreground intensity statistics per channel and
class voxel fractions. The plan turns it into defaults that fit the data and a 2-core CPU: target
spacing, patch size, pooling strides, feature widths and the normalisation scheme (z-score per
channel for MRI, a clipped Hounsfield window scaled to [0, 1] for CT).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.config import DataConfig, ModelConfig
from leanseg.data.datasets import Dataset
from leanseg.data.io import read_image, read_label
from leanseg.errors import LeansegError

# A CPU-sized cap on training patches: 64^3 voxels trains at a few steps per second on 2 cores.
MAX_PATCH_VOXELS = 64**3
MIN_FEATURE_SIZE = 4  # coarsest feature map edge, in voxels
MAX_STAGES = 5
ANISOTROPY_RATIO = 3.0


@dataclass
class Fingerprint:
    dataset: str
    modality: str
    num_channels: int
    labels: dict[int, str]
    case_ids: list[str]
    spacings: list[list[float]]
    shapes: list[list[int]]
    intensity: list[dict[str, float]]  # per channel: mean, std, p00_5, p99_5 of foreground voxels
    class_fractions: dict[int, float]  # mean share of voxels per class
    empty_label_cases: list[str]
    notes: list[str]

    @property
    def median_spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.median(np.asarray(self.spacings), axis=0))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fingerprint:
        d = dict(d)
        d["labels"] = {int(k): v for k, v in d["labels"].items()}
        d["class_fractions"] = {int(k): v for k, v in d["class_fractions"].items()}
        return cls(**d)


def compute_fingerprint(ds: Dataset, samples_per_case: int = 10000, seed: int = 0, progress: Any = None) -> Fingerprint:
    """Read every case once and collect the statistics the planner needs.

    Raises:
        LeansegError: on a label whose shape or affine differs from its image, labels outside those
            ``dataset.json`` declares, or when every label is empty.
    """
    rng = np.random.default_rng(seed)
    spacings, shapes, empty, notes = [], [], [], []
    fg_samples: list[list[np.ndarray]] = [[] for _ in ds.channel_names]
    class_counts = {k: 0.0 for k in ds.labels}
    for case in progress(ds.cases) if progress else ds.cases:
        img = read_image(list(case.images))
        if img.array.shape[0] != len(ds.channel_names):
            raise LeansegError(
                f"Image {case.images[0]} has {img.array.shape[0]} channel(s) but dataset.json declares "
                f"{len(ds.channel_names)}; fix 'modality'/'channel_names' or the file."
            )
        lab = read_label(case.label) if case.label else None
        if lab is not None:
            check_label_matches(img, lab, case.label, case.images[0])
            present = set(np.unique(lab.array).tolist())
            undeclared = present - set(ds.labels)
            if undeclared:
                raise LeansegError(
                    f"Label {case.label} contains values {sorted(undeclared)} that dataset.json does not declare; "
                    "add them to 'labels' or fix the label file."
                )
            counts = np.bincount(lab.array.ravel(), minlength=ds.num_classes)
            for k in ds.labels:
                class_counts[k] += counts[k] / lab.array.size
            mask = lab.array > 0
            if not mask.any():
                empty.append(case.case_id)
                mask = np.ones_like(mask)
        else:
            mask = np.ones(img.shape, dtype=bool)
        idx = np.flatnonzero(mask)
        pick = rng.choice(idx, size=min(samples_per_case, idx.size), replace=False)
        for c in range(img.array.shape[0]):
            fg_samples[c].append(img.array[c].ravel()[pick])
        perm = ras_axis_order(img.affine)  # spacing/shape in the RAS axis order preprocessing gives
        spacings.append([img.spacing[i] for i in perm])
        shapes.append([img.shape[i] for i in perm])
    if empty and len(empty) == len(ds.cases):
        raise LeansegError(f"Every label in {ds.root} is empty; check labelsTr/ (a segmentation dataset needs foreground).")
    if empty:
        notes.append(f"{len(empty)} of {len(ds.cases)} cases have an empty label (normal for lesion datasets).")
    intensity = []
    for c in range(len(ds.channel_names)):
        v = np.concatenate(fg_samples[c])
        intensity.append(
            {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "p00_5": float(np.percentile(v, 0.5)),
                "p99_5": float(np.percentile(v, 99.5)),
            }
        )
    n = len(ds.cases)
    return Fingerprint(
        dataset=ds.name,
        modality=ds.modality,
        num_channels=len(ds.channel_names),
        labels=dict(ds.labels),
        case_ids=[c.case_id for c in ds.cases],
        spacings=spacings,
        shapes=shapes,
        intensity=intensity,
        class_fractions={k: v / n for k, v in class_counts.items()},
        empty_label_cases=empty,
        notes=notes,
    )


def ras_axis_order(affine: np.ndarray) -> list[int]:
    """For each RAS axis, the voxel axis of the file that lies along it."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(affine)  # row i: world axis of voxel axis i
    order = [0, 0, 0]
    for vox_axis, (world_axis, _) in enumerate(ornt):
        order[int(world_axis)] = vox_axis
    return order


def check_label_matches(img: Any, lab: Any, label_path: Path | None, image_path: Path) -> None:
    if lab.shape != img.shape:
        raise LeansegError(
            f"Label {label_path} has shape {lab.shape} but its image {image_path} has {img.shape}; resample the label onto the image grid."
        )
    if not np.allclose(lab.affine, img.affine, atol=1e-3, rtol=1e-4):
        raise LeansegError(
            f"Label {label_path} has another affine (voxel-to-world geometry) than its image {image_path}; "
            "resample the label onto the image grid."
        )


@dataclass(frozen=True)
class Plan:
    """Defaults chosen from a fingerprint; every field can be overridden in the config."""

    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    strides: tuple[tuple[int, int, int], ...]
    features: tuple[int, ...]
    normalization: str  # zscore | ct | none
    ct_window: tuple[float, float] | None
    median_shape: tuple[int, int, int]
    orientation: str
    crop_foreground: bool
    num_channels: int
    num_classes: int
    labels: dict[int, str]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        d = dict(d)
        d["target_spacing"] = tuple(d["target_spacing"])
        d["patch_size"] = tuple(d["patch_size"])
        d["strides"] = tuple(tuple(s) for s in d["strides"])
        d["features"] = tuple(d["features"])
        d["ct_window"] = tuple(d["ct_window"]) if d.get("ct_window") else None
        d["median_shape"] = tuple(d["median_shape"])
        d["labels"] = {int(k): v for k, v in d["labels"].items()}
        return cls(**d)

    def key(self) -> str:
        """Hash of everything that changes the preprocessed arrays (used to name the cache)."""
        keep = {k: self.to_dict()[k] for k in ("target_spacing", "normalization", "ct_window", "orientation", "crop_foreground")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


def plan_from_fingerprint(fp: Fingerprint, data: DataConfig, model: ModelConfig) -> Plan:
    spacings = np.asarray(fp.spacings)
    target = np.median(spacings, axis=0)
    if data.target_spacing is not None:
        target = np.asarray(data.target_spacing, dtype=float)
    elif target.max() / target.min() > ANISOTROPY_RATIO and len(spacings) > 1:
        # nnU-Net: for anisotropic data, take the 10th percentile along the coarse axis so that
        # resampling does not blur the in-plane resolution into the coarse one.
        ax = int(np.argmax(target))
        target[ax] = max(np.percentile(spacings[:, ax], 10), target[np.arange(3) != ax].max())
    shapes_mm = np.asarray(fp.shapes) * spacings
    median_shape = np.round(np.median(shapes_mm / target[None], axis=0)).astype(int)

    if data.patch_size is not None:
        patch = np.asarray(data.patch_size, dtype=int)
    else:
        patch = median_shape.astype(float)
        while np.prod(patch) > MAX_PATCH_VOXELS:  # shrink the longest side (in mm) first, like nnU-Net
            ax = int(np.argmax(patch * target))
            patch[ax] = max(patch[ax] * 0.9, MIN_FEATURE_SIZE)
        patch = np.maximum(np.round(patch), MIN_FEATURE_SIZE).astype(int)

    if model.strides is not None:
        strides = [tuple(int(v) for v in s) for s in model.strides]
    else:
        strides = [(1, 1, 1)]
        while len(strides) < MAX_STAGES:
            # Pool an axis only while its coarsest feature map (patch rounded up) stays >= MIN_FEATURE_SIZE
            # and its spacing is not much coarser than the finest one (keeps anisotropic z at stride 1 early on).
            divisor = np.prod(np.asarray(strides), axis=0)
            size, spacing = np.ceil(patch / divisor), target * divisor
            s = tuple(2 if size[i] / 2 >= MIN_FEATURE_SIZE and spacing[i] <= 2 * spacing.min() else 1 for i in range(3))
            if s == (1, 1, 1):
                break
            strides.append(s)  # type: ignore[arg-type]
    if data.patch_size is None:
        divisor = np.prod(np.asarray(strides), axis=0)
        patch = (np.ceil(patch / divisor) * divisor).astype(int)
    features = model.features or tuple(min(model.base_features * 2**i, model.max_features) for i in range(len(strides)))
    if len(features) != len(strides):
        raise LeansegError(f"model.features has {len(features)} entries but there are {len(strides)} stages; give one width per stage.")

    norm = data.normalization
    if norm == "auto":
        norm = "ct" if fp.modality == "CT" else "zscore"
    ct_window = (fp.intensity[0]["p00_5"], fp.intensity[0]["p99_5"]) if norm == "ct" else None
    return Plan(
        target_spacing=tuple(float(v) for v in target),  # type: ignore[arg-type]
        patch_size=tuple(int(v) for v in patch),  # type: ignore[arg-type]
        strides=tuple(strides),  # type: ignore[arg-type]
        features=tuple(int(f) for f in features),
        normalization=norm,
        ct_window=ct_window,
        median_shape=tuple(int(v) for v in median_shape),  # type: ignore[arg-type]
        orientation=data.orientation,
        crop_foreground=data.crop_foreground,
        num_channels=fp.num_channels,
        num_classes=max(fp.labels) + 1,
        labels=dict(fp.labels),
    )
