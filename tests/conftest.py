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
