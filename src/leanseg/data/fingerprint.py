"""Dataset fingerprint, after nnU-Net (Isensee et al., Nature Methods 2021); :mod:`leanseg.plan` turns it into a plan.

The fingerprint holds per-case spacings and shapes, foreground intensity statistics per channel and
class voxel fractions. The plan turns it into defaults that fit the data and a 2-core CPU: target
spacing, patch size, pooling strides, feature widths and the normalisation scheme (z-score per
channel for MRI, a clipped Hounsfield window scaled to [0, 1] for CT).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.data.datasets import Dataset
from leanseg.data.io import read_image, read_label
from leanseg.errors import LeansegError


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
    channel_names: list[str] = field(default_factory=list)  # dataset.json's names; they choose each channel's normalisation
    ignore_label: int | None = None  # nnU-Net's "ignore" value (not a class)
    regions: list[list[int]] | None = None  # region-based labels: the label values of each class 1..R
    regions_class_order: list[int] | None = None

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
    spacings, shapes, empty = [], [], []
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
            undeclared = present - ds.label_values
            if undeclared:
                raise LeansegError(
                    f"Label {case.label} contains values {sorted(undeclared)} that dataset.json does not declare; "
                    "add them to 'labels' or fix the label file."
                )
            for k, share in _class_shares(lab.array, ds).items():
                class_counts[k] += share
            mask = (lab.array > 0) & (lab.array != ds.ignore_label)
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
    notes = _notes(ds, empty, class_counts)
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
        channel_names=list(ds.channel_names),
        ignore_label=ds.ignore_label,
        regions=[list(r) for r in ds.regions] if ds.regions else None,
        regions_class_order=list(ds.regions_class_order) if ds.regions_class_order else None,
    )


def _notes(ds: Dataset, empty: list[str], class_counts: dict[int, float]) -> list[str]:
    """What a user should know about the labels: empty ones, and declared classes no label holds (also warned)."""
    notes = []
    if empty:
        notes.append(f"{len(empty)} of {len(ds.cases)} cases have an empty label (normal for lesion datasets).")
    absent = [f"{k} ({ds.labels[k]})" for k in ds.labels if k and class_counts[k] == 0 and any(c.label for c in ds.cases)]
    if absent:
        note = (
            f"dataset.json declares class(es) {', '.join(absent)} that no label in {ds.root} contains: "
            "the model cannot learn them and their Dice will be empty; remove them from 'labels' or check the label files."
        )
        notes.append(note)
        warnings.warn(note, stacklevel=3)
    return notes


def _class_shares(label: np.ndarray, ds: Dataset) -> dict[int, float]:
    """Each class's share of the voxels (a region's: of the voxels holding any of its values)."""
    if ds.regions:
        shares = {i + 1: float(np.isin(label, r).mean()) for i, r in enumerate(ds.regions)}
        return {0: float((label == 0).mean()), **shares}
    counts = np.bincount(label.ravel(), minlength=max(ds.label_values) + 1)
    return {k: counts[k] / label.size for k in ds.labels}


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
