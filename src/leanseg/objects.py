"""Object-wise metrics for small targets (nodules, lesions): recall, FROC and object Dice.

Pure functions of binary masks (and optionally a probability map), usable with any model's output.
Objects are 26-connected components (cc3d). A ground-truth object is *hit* when at least one voxel
of a predicted component overlaps it; a predicted component that overlaps no ground-truth object is
a false positive. A predicted component's score is its highest probability (1 for plain label maps).

FROC (free-response ROC) sweeps a threshold over the scores: sensitivity (hit objects / all objects)
against false positives per scan. Reported two ways:

* the LUNA16 score: the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan,
  interpolated with MONAI's ``compute_froc_score``;
* the LowRes paper's average recall over 0 to 5 false positives per scan in steps of 0.01.

Object Dice: for each ground-truth object, the Dice between it and the union of the predicted
components that overlap it (0 for a missed object), averaged over ground-truth objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LUNA16_FPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a binary mask: (labels 0..n, n)."""
    import cc3d

    labels, n = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=26, return_N=True)
    return labels, int(n)


@dataclass
class CaseObjects:
    """What one scan contributes to the object metrics."""

    num_targets: int
    hits: list[bool] = field(default_factory=list)  # per ground-truth object
    tp_scores: list[float] = field(default_factory=list)  # per hit object: best score among its detections
    fp_scores: list[float] = field(default_factory=list)  # per false-positive component
    object_dice: list[float] = field(default_factory=list)  # per ground-truth object
    sizes_mm: list[float] = field(default_factory=list)  # per ground-truth object: its equivalent-sphere diameter


def sphere_diameters(labels: np.ndarray, n: int, spacing: Sequence[float] | None = None) -> np.ndarray:
    """The equivalent-sphere diameter of components 1..``n`` of ``labels``, in mm with ``spacing`` (else voxels)."""
    voxel = float(np.prod(spacing)) if spacing is not None else 1.0
    counts = np.bincount(np.asarray(labels).ravel(), minlength=n + 1)[1 : n + 1]
    return (6 * counts * voxel / math.pi) ** (1 / 3)


def match_objects(pred: np.ndarray, ref: np.ndarray, prob: np.ndarray | None = None, spacing: Sequence[float] | None = None) -> CaseObjects:
    """Match predicted components to ground-truth objects in one scan; ``spacing`` (mm) sizes the objects
    (in voxels without it)."""
    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    ref_lab, n_ref = components(ref)
    pred_lab, n_pred = components(pred)
    scores = np.ones(n_pred + 1)
    if prob is not None and n_pred:
        import scipy.ndimage as ndi

        scores[1:] = ndi.maximum(np.asarray(prob, dtype=np.float64), pred_lab, index=np.arange(1, n_pred + 1))
    out = CaseObjects(n_ref)
    out.sizes_mm = [float(d) for d in sphere_diameters(ref_lab, n_ref, spacing)]
    overlapping: set[int] = set()
    for k in range(1, n_ref + 1):
        obj = ref_lab == k
        hit_ids = np.unique(pred_lab[obj])
        hit_ids = hit_ids[hit_ids > 0]
        overlapping.update(int(h) for h in hit_ids)
        out.hits.append(bool(hit_ids.size))
        if hit_ids.size:
            out.tp_scores.append(float(scores[hit_ids].max()))
            union = np.isin(pred_lab, hit_ids)
            out.object_dice.append(float(2 * np.logical_and(union, obj).sum() / (union.sum() + obj.sum())))
        else:
            out.object_dice.append(0.0)
    out.fp_scores = [float(scores[i]) for i in range(1, n_pred + 1) if i not in overlapping]
    return out


def froc_curve(cases: Sequence[CaseObjects]) -> tuple[np.ndarray, np.ndarray]:
    """(false positives per scan, sensitivity) at every score threshold, from the loosest to the strictest
    (false-positive rates decreasing, as MONAI's ``compute_froc_score`` expects).

    Unlike MONAI's CAMELYON-derived ``compute_froc_curve_data``, the loosest threshold (every
    detection kept) is included, so a lone detection is not dropped.
    """
    tp = np.array([s for c in cases for s in c.tp_scores])
    fp = np.array([s for c in cases for s in c.fp_scores])
    n_targets = sum(c.num_targets for c in cases)
    n_scans = len(cases)
    thresholds = np.unique(np.concatenate([tp, fp]))
    fps = [float((fp >= t).sum()) / n_scans for t in thresholds] + [0.0]
    sens = [float((tp >= t).sum()) / max(n_targets, 1) for t in thresholds] + [0.0]
    # one point per false-positive rate (the best sensitivity reaching it), so interpolation is well defined
    best: dict[float, float] = {}
    for f, s in zip(fps, sens):
        best[f] = max(best.get(f, 0.0), s)
    order = sorted(best, reverse=True)
    return np.asarray(order), np.asarray([best[f] for f in order])


def _sensitivity_at(fps: np.ndarray, sens: np.ndarray, at: Sequence[float]) -> np.ndarray:
    """Sensitivity at the given false-positive rates; beyond the loosest point it stays at its value."""
    from monai.metrics import compute_froc_score

    return np.array([compute_froc_score(fps, sens, eval_thresholds=(a,)) for a in at])


def object_metrics(cases: Sequence[CaseObjects]) -> dict[str, float]:
    """Object recall, LUNA16 FROC score, average recall over 0-5 FP/scan, object Dice, FP per scan."""
    n_targets = sum(c.num_targets for c in cases)
    hits = sum(sum(c.hits) for c in cases)
    dices = [d for c in cases for d in c.object_dice]
    out = {
        "objects": float(n_targets),
        "object_recall": hits / n_targets if n_targets else math.nan,
        "object_dice": float(np.mean(dices)) if dices else math.nan,
        "fp_per_scan": sum(len(c.fp_scores) for c in cases) / max(len(cases), 1),
    }
    if n_targets:
        fps, sens = froc_curve(cases)
        out["froc_luna16"] = float(_sensitivity_at(fps, sens, LUNA16_FPS).mean())
        out["froc_avg_recall_0_5"] = float(_sensitivity_at(fps, sens, np.round(np.arange(0, 5.0001, 0.01), 2)).mean())
    else:
        out["froc_luna16"] = out["froc_avg_recall_0_5"] = math.nan
    return out


def recall_by_size(cases: Sequence[CaseObjects], bins: Sequence[tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Object recall within each (low, high) band of equivalent-sphere diameter; the first band takes the objects
    below it and the last those above it, so every object counts once."""
    hits = np.array([h for c in cases for h in c.hits], dtype=bool)
    bands = size_bands([s for c in cases for s in c.sizes_mm], bins)
    return {k: {"objects": int(m.sum()), "recall": float(hits[m].mean()) if m.any() else math.nan} for k, m in bands.items()}


def size_bands(sizes_mm: Sequence[float], bins: Sequence[tuple[float, float]]) -> dict[str, np.ndarray]:
    """One mask over ``sizes_mm`` per (low, high) band, named "low-high mm"; the first band takes the sizes below
    it and the last those above it, so every size falls in exactly one."""
    sizes = np.asarray(sizes_mm, dtype=float)
    return {f"{lo:g}-{hi:g} mm": ((sizes >= lo) | (i == 0)) & ((sizes < hi) | (i == len(bins) - 1)) for i, (lo, hi) in enumerate(bins)}


def score_probabilities(probs: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[CaseObjects, np.ndarray]:
    """Objects of one scan's class probabilities (K, D, H, W) against its reference (D, H, W), and the predicted mask.

    The prediction is the most probable class per voxel, any foreground class counting as object; each predicted
    component is scored by its highest foreground probability (1 - background), so that FROC sweeps a threshold
    over the components a label map would hold. The mask is returned for voxel metrics (``metrics.dice``).
    """
    probs = np.asarray(probs)
    pred = np.argmax(probs, 0) > 0
    return match_objects(pred, np.asarray(ref) > 0, prob=1 - probs[0], spacing=spacing), pred
