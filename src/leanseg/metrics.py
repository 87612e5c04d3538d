"""Segmentation metrics as pure functions of label arrays and voxel spacing in millimetres.

Dice is counted directly on the boolean masks (one line of NumPy, no one-hot tensors); the
95th-percentile Hausdorff distance (HD95) comes from MONAI's ``compute_hausdorff_distance``. This
module adds the conventions for empty structures and the per-case / per-class tables that
``leanseg evaluate`` writes.

Conventions: a class absent from both prediction and reference has Dice and HD95 ``nan`` (left out
of means, as nnU-Net does). A class present in only one of them has Dice 0 and HD95 equal to the
volume's diagonal in millimetres, the largest distance possible in the image.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.errors import LeansegError


def _onehot(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two binary masks; ``nan`` when both are empty."""
    p, r = pred.astype(bool), ref.astype(bool)
    denom = p.sum() + r.sum()
    if denom == 0:
        return math.nan
    return float(2.0 * np.logical_and(p, r).sum() / denom)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between the surfaces of two binary masks."""
    from monai.metrics import compute_hausdorff_distance

    p, r = pred.astype(bool), ref.astype(bool)
    if not p.any() and not r.any():
        return math.nan
    if not p.any() or not r.any():
        return float(np.linalg.norm(np.asarray(p.shape) * np.asarray(spacing)))
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        d = compute_hausdorff_distance(_onehot(p), _onehot(r), percentile=95, spacing=list(map(float, spacing)), directed=False)
    return float(d.item())


def evaluate_case(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int], spacing: Sequence[float]) -> dict[str, float]:
    """Dice and HD95 per foreground class, keys ``dice_<k>`` and ``hd95_<k>``."""
    out = {}
    for k in classes:
        out[f"dice_{k}"] = dice(pred == k, ref == k)
        out[f"hd95_{k}"] = hd95(pred == k, ref == k, spacing)
    return out


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int]) -> list[float]:
    return [dice(pred == k, ref == k) for k in classes]


def summarise(rows: list[dict[str, Any]], classes: Sequence[int]) -> dict[str, float]:
    """Means over cases (``nan`` entries left out) per class and over foreground classes."""
    mean: dict[str, float] = {}
    for metric in ("dice", "hd95"):
        per_class = []
        for k in classes:
            vals = [r[f"{metric}_{k}"] for r in rows if not math.isnan(r[f"{metric}_{k}"])]
            mean[f"{metric}_{k}"] = float(np.mean(vals)) if vals else math.nan
            per_class.append(mean[f"{metric}_{k}"])
        valid = [v for v in per_class if not math.isnan(v)]
        mean[f"{metric}_mean"] = float(np.mean(valid)) if valid else math.nan
    return mean


def markdown_table(rows: list[dict[str, Any]], mean: dict[str, float], labels: dict[int, str]) -> str:
    classes = [k for k in labels if k != 0]
    head = ["case"] + [f"Dice {labels[k]}" for k in classes] + [f"HD95 {labels[k]} (mm)" for k in classes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v: float, digits: int) -> str:
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"

    for r in rows + [{"case": "**mean**", **mean}]:
        cells = [str(r["case"])] + [fmt(r[f"dice_{k}"], 4) for k in classes] + [fmt(r[f"hd95_{k}"], 2) for k in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_folders(
    pred_dir: Path, ref_dir: Path, labels: dict[int, str] | None = None, out_dir: Path | None = None, objects: bool = False
) -> dict[str, Any]:
    """Compare every label file in ``pred_dir`` with the file of the same name in ``ref_dir``.

    ``objects``: also the object-wise metrics of :mod:`leanseg.objects` on the foreground (every
    class together): per case object recall, object Dice and false-positive components; over all
    cases recall, object Dice, false positives per scan and the FROC scores (from label maps every
    component scores 1, so the FROC curve is the single operating point the labels give).

    Writes ``metrics.csv``, ``metrics.md`` and ``metrics.json`` into ``out_dir`` (default: ``pred_dir``).
    Returns ``{"cases": rows, "mean": means, "labels": labels}``.
    """
    from leanseg.data.io import file_ending, read_label
    from leanseg.utils import atomic_write_text

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d, what in ((pred_dir, "--pred"), (ref_dir, "--ref")):
        if not d.is_dir():
            raise LeansegError(f"{what} folder {d} does not exist; pass the folder of label files.")
    preds = sorted(p for p in pred_dir.iterdir() if p.is_file() and file_ending(p) in (".nii.gz", ".nii", ".mha", ".nrrd"))
    if not preds:
        raise LeansegError(f"No label files in {pred_dir}; run `leanseg predict` into it first.")
    rows: list[dict[str, Any]] = []
    loaded = []
    for p in preds:
        ref_path = ref_dir / p.name
        if not ref_path.is_file():
            raise LeansegError(f"Reference {ref_path} for prediction {p} is missing; pass the matching --ref folder.")
        pv, rv = read_label(p), read_label(ref_path)
        if pv.shape != rv.shape:
            raise LeansegError(
                f"Prediction {p} has shape {pv.shape} but reference {ref_path} has {rv.shape}; predict on the reference's image."
            )
        if not np.allclose(pv.affine, rv.affine, atol=1e-3):
            raise LeansegError(f"Prediction {p} has another affine than reference {ref_path}; they are not on the same grid.")
        loaded.append((p, pv, rv))
    if labels is None:
        found = sorted({int(v) for _, pv, rv in loaded for v in np.unique(np.concatenate([pv.array.ravel(), rv.array.ravel()]))} | {0})
        labels = {k: f"class_{k}" if k else "background" for k in found}
    classes = [k for k in labels if k != 0]
    undeclared = {
        p.name: sorted(int(v) for v in np.unique(pv.array) if int(v) not in labels) for p, pv, _ in loaded
    }  # values a prediction holds that no class declares: not scored, but said
    undeclared = {k: v for k, v in undeclared.items() if v}
    if undeclared:
        warnings.warn(
            f"{len(undeclared)} prediction(s) hold values the dataset does not declare (first: {next(iter(undeclared))} "
            f"has {next(iter(undeclared.values()))}); those voxels count as no class.",
            stacklevel=2,
        )
    matched = []
    for p, pv, rv in loaded:
        case = p.name[: -len(file_ending(p))]
        rows.append({"case": case, **evaluate_case(pv.array, rv.array, classes, rv.spacing)})
        if objects:
            from leanseg.objects import match_objects

            m = match_objects(pv.array > 0, rv.array > 0)
            matched.append(m)
            rows[-1].update(
                objects=m.num_targets,
                object_recall=float(np.mean(m.hits)) if m.hits else float("nan"),
                object_dice=float(np.mean(m.object_dice)) if m.object_dice else float("nan"),
                false_positives=len(m.fp_scores),
            )
    mean = summarise(rows, classes)
    if objects:
        from leanseg.objects import object_metrics

        mean.update(object_metrics(matched))
    out_dir = Path(out_dir or pred_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(out_dir / "metrics.md", markdown_table(rows, mean, labels))
    result = {"cases": rows, "mean": mean, "labels": {str(k): v for k, v in labels.items()}, "undeclared_values": undeclared}
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=1, allow_nan=True))
    return result
