from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.config import AugmentConfig, ExperimentConfig
from leanseg.data.prepare import prepare_data
from leanseg.data.sampling import PatchDataset, crop_with_padding

NO_AUG = AugmentConfig(flip=0, rotate_scale=0, noise=0, smooth=0, sharpen=0, contrast=0, shift=0)


@pytest.fixture(scope="module")
def prepared(phantoms: Path):
    return prepare_data(phantoms, ExperimentConfig())


def test_crop_with_padding_at_the_edges() -> None:
    a = np.arange(4 * 5 * 6).reshape(1, 4, 5, 6)
    out = crop_with_padding(a, np.array([-1, 3, 4]), (3, 3, 3))
    assert out.shape == (1, 3, 3, 3)
    assert np.all(out[0, 0] == 0)  # x = -1 lies outside
    assert out[0, 1, 0, 0] == a[0, 0, 3, 4] and np.all(out[0, :, :, 2] == 0) and np.all(out[0, :, 2, :] == 0)


def test_items_depend_only_on_seed_and_index(prepared) -> None:
    ids = [c.case_id for c in prepared.dataset.cases]
    a = PatchDataset(prepared.cache_dir, ids, (16, 16, 16), AugmentConfig(), seed=3)
    b = PatchDataset(prepared.cache_dir, ids, (16, 16, 16), AugmentConfig(), seed=3)
    for i in (5, 0, 17):  # any order
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert not torch.equal(a[1]["image"], a[2]["image"])
    c = PatchDataset(prepared.cache_dir, ids, (16, 16, 16), AugmentConfig(), seed=4)
    assert not torch.equal(a[1]["image"], c[1]["image"])


def test_foreground_oversampling(prepared) -> None:
    ids = [c.case_id for c in prepared.dataset.cases]
    always = PatchDataset(prepared.cache_dir, ids, (8, 8, 8), NO_AUG, foreground_oversample=1.0)
    never = PatchDataset(prepared.cache_dir, ids, (8, 8, 8), NO_AUG, foreground_oversample=0.0)
    share_always = np.mean([bool((always[i]["label"] > 0).any()) for i in range(40)])
    share_never = np.mean([bool((never[i]["label"] > 0).any()) for i in range(40)])
    assert share_always == 1.0 and share_never < share_always


def test_augmentation_probabilities_are_obeyed(prepared) -> None:
    ids = [c.case_id for c in prepared.dataset.cases]
    plain = PatchDataset(prepared.cache_dir, ids, (16, 16, 16), None, seed=0)
    off = PatchDataset(prepared.cache_dir, ids, (16, 16, 16), NO_AUG, seed=0)
    on = PatchDataset(
        prepared.cache_dir,
        ids,
        (16, 16, 16),
        AugmentConfig(noise=1.0, flip=0, rotate_scale=0, smooth=0, sharpen=0, contrast=0, shift=0),
        seed=0,
    )
    for i in range(3):
        assert torch.equal(plain[i]["image"], off[i]["image"])
        assert torch.equal(plain[i]["label"], on[i]["label"])  # noise leaves the label alone
        assert not torch.equal(plain[i]["image"], on[i]["image"])
