"""Shared fixtures: tiny seeded phantoms, an isolated cache, and the real-data folder when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_SIZES = ((24, 28, 20), (28, 24, 24), (26, 26, 22))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=f"real data not found at {SHARED_DATA}")
    for item in items:
        if "realdata" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["LEANSEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from leanseg.data.synthetic import generate_phantom_dataset

    return generate_phantom_dataset(tmp_path_factory.mktemp("phantoms"), num_cases=6, seed=1, sizes=TINY_SIZES)


@pytest.fixture(scope="session")
def tiny_cfg():
    """A config that trains in seconds: small widths, 3 stages, no workers."""
    from leanseg.config import ExperimentConfig

    return ExperimentConfig().with_overrides(
        {
            "model.base_features": 4,
            "model.features": [4, 8, 16],
            "model.strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "data.patch_size": [16, 16, 16],
            "data.num_folds": 3,
            "train.iterations": 8,
            "train.val_every": 4,
            "train.checkpoint_every": 4,
            "train.num_workers": 0,
            "train.lr": 0.01,
        }
    )


@pytest.fixture(scope="session")
def trained_run(phantoms: Path, tiny_cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from leanseg.training import train

    out = tmp_path_factory.mktemp("run")
    train(phantoms, out, tiny_cfg, show_progress=False)
    return out


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture(scope="session")
def partial_phantoms(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantoms as an nnU-Net v2 folder whose labels leave the first third of every image unannotated (ignore = 3)."""
    import json
    import shutil

    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_label, write_label

    root = tmp_path_factory.mktemp("partial")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    for c in load_dataset(phantoms).cases:
        shutil.copy(c.images[0], root / "imagesTr" / f"{c.case_id}_0000.nii.gz")
        lab = read_label(c.label)
        arr = lab.array.copy()
        arr[: arr.shape[0] // 3] = 3
        write_label(root / "labelsTr" / f"{c.case_id}.nii.gz", arr, lab.affine)
    labels = {"background": 0, "structure": 1, "lesion": 2, "ignore": 3}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": labels, "file_ending": ".nii.gz"}))
    return root
