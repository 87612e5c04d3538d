"""Dataset folder -> fingerprint -> plan -> preprocessed cache, and the k-fold splits: what every trainer and search reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.config import DataConfig, ExperimentConfig
from leanseg.data.datasets import Dataset, load_dataset
from leanseg.data.fingerprint import Fingerprint, compute_fingerprint
from leanseg.data.preprocess import default_cache_root, preprocess_dataset
from leanseg.errors import LeansegError
from leanseg.plan import Plan, plan_from_fingerprint
from leanseg.utils import atomic_write_text, writable_folder


@dataclass
class PreparedData:
    dataset: Dataset
    fingerprint: Fingerprint
    plan: Plan
    cache_dir: Path


def fingerprint_dataset(data_dir: Path, cache_root: Path | None = None, progress: Any = None) -> tuple[Dataset, Fingerprint]:
    """Load a dataset folder and its fingerprint (computed once, then read from the cache)."""
    ds = load_dataset(data_dir)
    root = writable_folder(Path(cache_root or default_cache_root()), "cache", "set LEANSEG_CACHE to a folder you can write to")
    # every input file's size and mtime: a replaced label or image (dataset.json untouched) is fingerprinted again
    stamp = json.dumps([str(ds.root.resolve()), (ds.root / "dataset.json").stat().st_mtime, [[c.case_id, c.stamp()] for c in ds.cases]])
    key = hashlib.sha1(stamp.encode()).hexdigest()[:12]
    path = root / "fingerprints" / f"{key}.json"
    if path.is_file():
        return ds, Fingerprint.from_dict(json.loads(path.read_text()))
    fp = compute_fingerprint(ds, progress=progress)
    atomic_write_text(path, json.dumps(fp.to_dict()))
    return ds, fp


def prepare_data(data_dir: Path, cfg: ExperimentConfig, cache_root: Path | None = None, progress: Any = None) -> PreparedData:
    """Dataset -> fingerprint -> plan -> preprocessed cache; everything trainers and searches need."""
    ds, fp = fingerprint_dataset(Path(data_dir), cache_root, progress)
    plan = plan_from_fingerprint(fp, cfg.data, cfg.model)
    cache = preprocess_dataset(ds, plan, cache_root, progress=progress)
    return PreparedData(ds, fp, plan, cache)


def make_splits(case_ids: list[str], num_folds: int, seed: int) -> list[dict[str, list[str]]]:
    """Deterministic k-fold splits: sorted ids, shuffled by ``seed``, dealt into ``num_folds`` folds."""
    if num_folds < 2:
        raise LeansegError(f"data.num_folds is {num_folds}; use at least 2 to keep a validation fold.")
    if len(case_ids) < num_folds:
        raise LeansegError(f"{len(case_ids)} cases cannot be split into {num_folds} folds; lower data.num_folds.")
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = [sorted(ids[j] for j in order[i::num_folds]) for i in range(num_folds)]
    return [{"train": sorted(set(ids) - set(f)), "val": f} for f in folds]


def select_fold(splits: list[dict[str, list[str]]], fold: int | str, where: str = "") -> dict[str, list[str]]:
    """The train/val case ids of ``fold``; ``"all"`` (nnU-Net's) trains on every case and validates on them too.
    A fold that does not exist is refused with the valid range (``where``: the splits file, for the sentence)."""
    if fold == "all":
        every = sorted({c for s in splits for c in s["val"]})
        return {"train": every, "val": every}
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise LeansegError(f"Fold {fold!r} does not exist{where}; choose 0..{len(splits) - 1} or all.")
    return splits[fold]


def run_splits(case_ids: list[str], data: DataConfig) -> tuple[list[dict[str, list[str]]], dict[str, list[str]]]:
    """A run's splits and the train/val ids it uses, from the data settings.

    With ``data.inner_fold`` set, the splits are those of ``data.fold``'s training cases, dealt again into
    ``num_folds`` folds (nested cross-validation), and the run validates on the inner fold: the cases of the
    outer ``fold`` take no part."""
    splits = make_splits(case_ids, data.num_folds, data.split_seed)
    if data.inner_fold is None:
        return splits, select_fold(splits, data.fold)
    if data.fold == "all":
        raise LeansegError("data.inner_fold needs an outer data.fold to keep out; set data.fold to a number.")
    inner = make_splits(select_fold(splits, data.fold)["train"], data.num_folds, data.split_seed)
    return inner, select_fold(inner, data.inner_fold, " (data.inner_fold)")


def validation_fold(data: DataConfig) -> int | str:
    """The fold of a run's saved splits that it validates on: the inner fold of a nested split, else ``data.fold``."""
    return data.fold if data.inner_fold is None else data.inner_fold


def fold_split(prep: PreparedData, cfg: ExperimentConfig) -> dict[str, list[str]]:
    """The train/val case ids of ``cfg.data.fold`` (or its inner fold); a fold that does not exist is refused with the valid range."""
    return run_splits([c.case_id for c in prep.dataset.cases], cfg.data)[1]
