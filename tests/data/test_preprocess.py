import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.config import DataConfig, ExperimentConfig, ModelConfig
from leanseg.data.datasets import load_dataset
from leanseg.data.fingerprint import compute_fingerprint
from leanseg.data.io import Volume, read_image, read_label
from leanseg.data.preprocess import CachedCase, Preprocessor, preprocess_dataset
from leanseg.plan import plan_from_fingerprint
from tests.conftest import SHARED_DATA


def onehot(label: np.ndarray, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(label.astype(np.int64)), k).permute(3, 0, 1, 2).float()


def round_trip(ds_root: Path, case_index: int = 0, **data) -> tuple[np.ndarray, np.ndarray, dict]:
    ds = load_dataset(ds_root)
    case = ds.cases[case_index]
    fp = compute_fingerprint(ds)
    plan = plan_from_fingerprint(fp, DataConfig(**data), ModelConfig())
    pre = Preprocessor(plan)
    img, lab = read_image(list(case.images)), read_label(case.label)
    d = pre(img, lab)
    probs = onehot(d["label"].as_tensor().numpy()[0], plan.num_classes)
    back = pre.invert(probs, d["image"])
    return torch.argmax(back, 0).numpy(), lab.array, d


def test_inverse_restores_the_original_grid(phantoms: Path) -> None:
    back, ref, d = round_trip(phantoms)
    assert back.shape == ref.shape and np.array_equal(back, ref)
    img = d["image"].as_tensor()
    assert abs(float(img.mean())) < 0.05 and abs(float(img.std()) - 1) < 0.05  # z-score


def test_inverse_after_resampling_stays_close(phantoms: Path) -> None:
    from leanseg.metrics import dice

    back, ref, d = round_trip(phantoms, target_spacing=(1.5, 1.5, 1.5))
    assert back.shape == ref.shape
    assert d["image"].shape[1] < ref.shape[0]  # it really was resampled
    assert dice(back == 1, ref == 1) > 0.75  # small structures lose their rim in a 1.5 mm round trip


def test_cache_is_built_once_and_reused(phantoms: Path, tmp_path: Path) -> None:
    ds = load_dataset(phantoms)
    plan = plan_from_fingerprint(compute_fingerprint(ds), DataConfig(), ModelConfig())
    cache = preprocess_dataset(ds, plan, tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == sorted(c.case_id for c in ds.cases)
    c = CachedCase(cache, ds.cases[0].case_id)
    assert c.image.dtype == np.float32 and c.image.shape[1:] == c.label.shape
    for k, locs in c.locations.items():
        assert len(locs) and np.all(c.label[tuple(locs.T)] == k)
    stamp = (cache / f"{ds.cases[0].case_id}_img.npy").stat().st_mtime_ns
    preprocess_dataset(ds, plan, tmp_path)
    assert (cache / f"{ds.cases[0].case_id}_img.npy").stat().st_mtime_ns == stamp


def test_a_replaced_input_is_read_again_though_dataset_json_is_untouched(phantoms: Path, tmp_path: Path) -> None:
    import os
    import shutil

    from leanseg.data.io import write_image, write_label
    from leanseg.data.prepare import prepare_data
    from leanseg.errors import LeansegError

    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    cfg, cache_root = ExperimentConfig(), tmp_path / "cache"
    first = prepare_data(data, cfg, cache_root)
    case = first.dataset.cases[0]
    label = read_label(case.label)
    flipped = np.ascontiguousarray(label.array[::-1]).astype(np.uint8)
    write_label(case.label, flipped, label.affine)
    os.utime(data / "dataset.json", ns=(0, (data / "dataset.json").stat().st_mtime_ns))  # dataset.json as it was
    before = np.array(CachedCase(first.cache_dir, case.case_id).label)
    again = prepare_data(data, cfg, cache_root)
    fresh = prepare_data(data, cfg, tmp_path / "fresh")  # what a new cache holds for the changed folder
    cached = np.array(CachedCase(again.cache_dir, case.case_id).label)
    assert np.array_equal(cached, np.array(CachedCase(fresh.cache_dir, case.case_id).label))
    assert not np.array_equal(cached, before)
    write_label(case.label, np.zeros((5, 5, 5), np.uint8), label.affine)  # another shape than its image
    with pytest.raises(LeansegError, match=case.case_id):
        prepare_data(data, cfg, cache_root)
    write_label(case.label, flipped, label.affine)
    image = read_image(list(case.images))
    bad = image.array[0].copy()
    bad[0, 0, 0] = np.nan
    write_image(case.images[0], bad, image.affine)
    with pytest.raises(LeansegError, match="NaN|finite"):
        prepare_data(data, cfg, cache_root)


def test_each_channel_is_normalised_by_its_own_scheme_and_statistics(tmp_path: Path) -> None:
    """T1 beside CT: the CT window comes from the CT channel and applies to it alone (it used to flatten the CT)."""
    from tests.conftest import write_nifti

    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    for i in range(2):
        write_nifti(root / "imagesTr" / f"case{i}_0000.nii.gz", rng.normal(100, 20, (12, 12, 12)).astype(np.float32))
        write_nifti(root / "imagesTr" / f"case{i}_0001.nii.gz", rng.uniform(-1000, 1000, (12, 12, 12)).astype(np.float32))
        lab = np.zeros((12, 12, 12), np.uint8)
        lab[3:9, 3:9, 3:9] = 1
        write_nifti(root / "labelsTr" / f"case{i}.nii.gz", lab)
    meta = {"channel_names": {"0": "T1", "1": "CT"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    fp = compute_fingerprint(ds)
    plan = plan_from_fingerprint(fp, DataConfig(crop_foreground=False), ModelConfig())
    assert plan.normalization == ("zscore", "ct")
    lo, hi = plan.ct_window[1]
    assert (lo, hi) == (fp.intensity[1]["p00_5"], fp.intensity[1]["p99_5"]) and lo < -900 and hi > 900
    raw = read_image(list(ds.cases[0].images))
    out = Preprocessor(plan)(raw)["image"].numpy()
    assert abs(out[0].mean()) < 1e-4 and abs(out[0].std() - 1) < 1e-3  # the T1 channel: z-score
    ct = np.clip((raw.array[1] - lo) / (hi - lo), 0, 1)
    assert out[1].std() > 0.2 and np.allclose(np.sort(out[1].ravel()), np.sort(ct.ravel()), atol=1e-5)  # the CT: its own window


@pytest.mark.realdata
def test_real_brats_lps_orientation_round_trip() -> None:
    back, ref, d = round_trip(SHARED_DATA / "BraTS2013_subset", 2)
    assert back.shape == ref.shape == (240, 240, 155)
    assert np.array_equal(back, ref)
    # nnU-Net's crop keeps non-zero voxels; this subset is z-scored with background -3.16, so nothing is cropped
    assert tuple(d["image"].shape) == (2, 240, 240, 155)


@pytest.mark.realdata
def test_real_anisotropic_spleen_round_trip() -> None:
    from leanseg.metrics import dice

    back, ref, _ = round_trip(SHARED_DATA / "Spleen_crop", target_spacing=(1.6, 1.6, 5.0))
    assert back.shape == ref.shape == (164, 166, 26)
    assert dice(back == 1, ref == 1) > 0.75  # small structures lose their rim in a 1.5 mm round trip5


def test_volume_spacing_from_affine() -> None:
    v = Volume(np.zeros((1, 2, 2, 2)), np.array([[0, 0, 3.0, 0], [0, -2.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]]))
    assert v.spacing == (1.0, 2.0, 3.0)
    assert ExperimentConfig().data.orientation == "RAS"
