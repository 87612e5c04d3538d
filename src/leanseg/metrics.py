"""Segmentation metrics as pure functions of label arrays and voxel spacing in millimetres.

Dice is counted directly on the boolean masks (one line of NumPy, no one-hot tensors); the
95th-percentile Hausdorff distance (HD95) comes from MONAI's ``compute_hausdorff_distance``. This
module adds the conventions for empty structures and the per-case / per-class tables that
``leanseg evaluate`` writes.

Conventions: a class absent from both prediction and reference has Dice and HD95 ``nan`` (left out
of means, as nnU-Net does). A class present in only one of them has Dice 0 and HD95 by ``empty_hd95``:
``diagonal`` (the default: the volume's diagonal in millimetres, the largest distance possible in the
image, so a missed structure costs its HD95 mean) or ``nan`` (MONAI's ``compute_hausdorff_distance``:
left out of means). Every table and JSON says which was used.
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


EMPTY_HD95 = ("diagonal", "nan")  # what HD95 is when a class is empty on one side only (module docstring)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), empty: str = "diagonal") -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between the surfaces of two binary masks."""
    from monai.metrics import compute_hausdorff_distance

    if empty not in EMPTY_HD95:
        raise LeansegError(f"--empty-hd95 '{empty}' is not one of {', '.join(EMPTY_HD95)}.")
    p, r = pred.astype(bool), ref.astype(bool)
    if not p.any() and not r.any():
        return math.nan
    if not p.any() or not r.any():
        return float(np.linalg.norm(np.asarray(p.shape) * np.asarray(spacing))) if empty == "diagonal" else math.nan
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        d = compute_hausdorff_distance(_onehot(p), _onehot(r), percentile=95, spacing=list(map(float, spacing)), directed=False)
    return float(d.item())


def without_ignored(pred: np.ndarray, ref: np.ndarray, ignore: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and reference with the reference's ``ignore`` voxels set to background in both: not annotated,
    they count as neither hit nor miss (nnU-Net's ignore label)."""
    if ignore is None:
        return pred, ref
    ignored = ref == ignore
    return np.where(ignored, 0, pred), np.where(ignored, 0, ref)


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float],
    empty_hd95: str = "diagonal",
    ignore: int | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> dict[str, float]:
    """Dice and HD95 per foreground class, keys ``dice_<k>`` and ``hd95_<k>``; ``ignore`` voxels of ``ref`` left out.
    With ``regions`` (nnU-Net's region-based labels) class k is region k: the voxels holding any of its values."""
    pred, ref = without_ignored(pred, ref, ignore)
    out = {}
    for k in classes:
        p, r = (np.isin(pred, regions[k - 1]), np.isin(ref, regions[k - 1])) if regions else (pred == k, ref == k)
        out[f"dice_{k}"] = dice(p, r)
        out[f"hd95_{k}"] = hd95(p, r, spacing, empty_hd95)
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


def conventions_note(res: dict[str, Any]) -> str:
    """The line under every evaluation table: the HD95 convention, and the cases left out where some were allowed missing."""
    note = f"HD95 of a class empty on one side only: {res['conventions']['empty_hd95']} (--empty-hd95)."
    if res.get("missing"):
        note += f" {len(res['missing'])} reference case(s) have no prediction and are not scored: {', '.join(res['missing'])}."
    return note


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
    pred_dir: Path,
    ref_dir: Path,
    labels: dict[int, str] | None = None,
    out_dir: Path | None = None,
    objects: bool = False,
    allow_missing: bool = False,
    empty_hd95: str = "diagonal",
    ignore_label: int | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Compare every label file in ``ref_dir`` with the prediction of the same name in ``pred_dir``.

    A reference without a prediction is an error naming it (nnU-Net stops too), unless ``allow_missing``: then it is
    left out, and listed in ``missing`` in every output. ``empty_hd95``: see the module docstring. ``ignore_label``
    (nnU-Net's ``ignore``): reference voxels with that value are left out of every metric. ``regions``: the label
    values of classes 1..R of a region-based dataset (``labels`` then names the regions).

    ``objects``: also the object-wise metrics of :mod:`leanseg.objects` on the foreground (every
    class together): per case object recall, object Dice and false-positive components; over all
    cases recall, object Dice, false positives per scan and the FROC scores (from label maps every
    component scores 1, so the FROC curve is the single operating point the labels give).

    Writes ``metrics.csv``, ``metrics.md`` and ``metrics.json`` into ``out_dir`` (default: ``pred_dir``).
    Returns ``{"cases": rows, "mean": means, "labels": labels, "missing": [...], "undeclared_values": {...},
    "conventions": {...}}``.
    """
    from leanseg.prediction_folder import is_run_folder

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    target = Path(out_dir or pred_dir)
    if is_run_folder(target):  # its metrics.csv is the training history
        raise LeansegError(
            f"{target} is a training run's folder, whose metrics.csv is its training history; pass --out FOLDER for the evaluation's tables."
        )
    loaded, missing = _load_pairs(pred_dir, ref_dir, allow_missing)
    if labels is None:
        found = sorted({int(v) for _, pv, rv in loaded for v in np.unique(np.concatenate([pv.array.ravel(), rv.array.ravel()]))} | {0})
        found = [k for k in found if k != ignore_label]
        labels = {k: f"class_{k}" if k else "background" for k in found}
    classes = [k for k in labels if k != 0]
    values = {v for r in regions for v in r} | {0} if regions else set(labels)
    undeclared = _undeclared_values(loaded, values)
    rows, matched = [], []
    for p, pv, rv in loaded:
        row = evaluate_case(pv.array, rv.array, classes, rv.spacing, empty_hd95, ignore_label, regions)
        rows.append({"case": _case_name(p), **row})
        if objects:
            rows[-1].update(_object_row(pv.array, rv.array, matched))
    mean = summarise(rows, classes)
    if objects:
        from leanseg.objects import object_metrics

        mean.update(object_metrics(matched))
    result = {
        "cases": rows,
        "mean": mean,
        "labels": {str(k): v for k, v in labels.items()},
        "missing": missing,
        "undeclared_values": undeclared,
        "conventions": {
            "empty_hd95": empty_hd95,
            "dice_and_hd95_of_a_class_empty_on_both_sides": "nan, left out of means",
            "ignore_label": ignore_label,
        },
    }
    _write_tables(Path(out_dir or pred_dir), result, labels)
    return result


def _case_name(path: Path) -> str:
    from leanseg.data.io import file_ending

    return path.name[: -len(file_ending(path))]


def _load_pairs(pred_dir: Path, ref_dir: Path, allow_missing: bool) -> tuple[list[tuple[Path, Any, Any]], list[str]]:
    """Every (prediction path, prediction, reference) on one grid, and the reference cases without a prediction."""
    from leanseg.data.io import file_ending, read_label

    for d, what in ((pred_dir, "--pred"), (ref_dir, "--ref")):
        if not d.is_dir():
            raise LeansegError(f"{what} folder {d} does not exist; pass the folder of label files.")

    def labels_in(d: Path) -> list[Path]:
        # hidden files are no label files (a killed write's temporary, a record)
        return sorted(
            p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and file_ending(p) in (".nii.gz", ".nii", ".mha", ".nrrd")
        )

    preds = labels_in(pred_dir)
    if not preds:
        raise LeansegError(f"No label files in {pred_dir}; run `leanseg predict` into it first.")
    names = {p.name for p in preds}
    missing = [_case_name(r) for r in labels_in(ref_dir) if r.name not in names]
    if missing and not allow_missing:
        raise LeansegError(
            f"{len(missing)} of the references in {ref_dir} have no prediction in {pred_dir} ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); predict them, or pass --allow-missing to score the others and list these."
        )
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
    return loaded, missing


def _undeclared_values(loaded: list[tuple[Path, Any, Any]], values: set[int]) -> dict[str, list[int]]:
    """Values a prediction holds beyond the declared ``values``: not scored, but said (a warning, and in every output)."""
    found = {p.name: sorted(int(v) for v in np.unique(pv.array) if int(v) not in values) for p, pv, _ in loaded}
    undeclared = {k: v for k, v in found.items() if v}
    if undeclared:
        warnings.warn(
            f"{len(undeclared)} prediction(s) hold values the dataset does not declare (first: {next(iter(undeclared))} "
            f"has {next(iter(undeclared.values()))}); those voxels count as no class.",
            stacklevel=3,
        )
    return undeclared


def _object_row(pred: np.ndarray, ref: np.ndarray, matched: list[Any]) -> dict[str, Any]:
    from leanseg.objects import match_objects

    m = match_objects(pred > 0, ref > 0)
    matched.append(m)
    return {
        "objects": m.num_targets,
        "object_recall": float(np.mean(m.hits)) if m.hits else float("nan"),
        "object_dice": float(np.mean(m.object_dice)) if m.object_dice else float("nan"),
        "false_positives": len(m.fp_scores),
    }


def _write_tables(out_dir: Path, result: dict[str, Any], labels: dict[int, str]) -> None:
    from leanseg.utils import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result["cases"][0]))
    writer.writeheader()
    writer.writerows(result["cases"])
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(
        out_dir / "metrics.md", markdown_table(result["cases"], result["mean"], labels) + "\n" + conventions_note(result) + "\n"
    )
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=1, allow_nan=True))
