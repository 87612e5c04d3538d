"""The synthetic chest CT generator: readable MSD folder, nodules as separate objects of the stated sizes, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leanseg.data.synthetic_chest import chest_statistics, generate_chest_dataset, make_chest, sample_diameter
from leanseg.objects import components


def test_nodules_are_separate_objects_inside_the_lungs_and_sizes_match() -> None:
    spacing = (1.5, 1.5, 2.0)
    image, label, nodules = make_chest((128, 128, 64), spacing, np.random.default_rng(3), nodules_per_scan=6, diameter_mm=(4.0, 16.0))
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == label.shape == (128, 128, 64)
    assert len(nodules) >= 3
    _, n = components(label == 1)
    assert n == len(nodules)
    for nod in nodules:
        assert 4.0 <= nod["diameter_mm"] <= 16.0
        c = tuple(int(nod[k]) for k in "xyz")
        assert label[c] == 1
    vox = float(np.prod(spacing))
    total = sum(4 / 3 * np.pi * (n["diameter_mm"] / 2) ** 3 for n in nodules)
    assert 0.5 * total < label.sum() * vox < 1.6 * total  # lobulated spheres of the stated diameters
    assert sum(n["voxels"] for n in nodules) == label.sum()
    # lungs are dark, the body around them soft tissue, air outside
    assert image[64, 64, 32] > -300 and image[2, 2, 32] < -900  # mediastinum; air in the corner
    assert np.median(image[44, 60, 20:44]) < -600


def _ring_max(image: np.ndarray, label: np.ndarray, nodule: dict) -> float:
    """The brightest voxel two voxels outside one nodule: chest wall or vessel where it touches one."""
    from scipy import ndimage

    lab, _ = components(label == 1)
    obj = lab == lab[tuple(int(nodule[k]) for k in "xyz")]
    near, ring = ndimage.binary_dilation(obj, iterations=1), ndimage.binary_dilation(obj, iterations=2)
    return float(image[ring & ~near].max())


def test_attachments_and_textures_are_what_the_nodule_list_says() -> None:
    image, label, nodules = make_chest((128, 128, 64), (1.5, 1.5, 2.0), np.random.default_rng(7), nodules_per_scan=14)
    kinds = {n["attachment"] for n in nodules}
    assert {"isolated", "juxta-pleural"} <= kinds
    for nod in nodules:
        brightest = _ring_max(image, label, nod)
        if nod["attachment"] == "isolated":
            assert brightest < -500, nod  # lung all round: vessels are pushed aside
        elif nod["attachment"] == "juxta-pleural":
            assert brightest > -300, nod  # the chest wall is next to it
    for nod in [n for n in nodules if n["diameter_mm"] >= 6]:  # smaller ones are blurred into the lung at this spacing
        hu = float(image[tuple(int(nod[k]) for k in "xyz")])
        if nod["texture"] == "ground-glass":
            assert -800 < hu < -250, nod
        else:  # solid, or the solid core of a part-solid nodule
            assert hu > -250, nod


def test_diameters_follow_luna16s_shape_and_the_statistics_count_them() -> None:
    rng = np.random.default_rng(0)
    d = np.asarray([sample_diameter(rng, 6.5, (3.0, 32.0)) for _ in range(4000)])
    assert d.min() >= 3.0 and d.max() <= 32.0
    assert 6.0 < np.median(d) < 7.2
    assert 0.7 < np.mean(d < 10) < 0.9 and np.mean(d > 20) > 0.005  # most under 10 mm, some large ones
    scans = {"a": [{"diameter_mm": 4.0, "attachment": "isolated", "texture": "solid"}], "b": [], "c": []}
    scans["c"] = [
        {"diameter_mm": 12.0, "attachment": "juxta-pleural", "texture": "ground-glass"},
        {"diameter_mm": 30.5, "attachment": "isolated", "texture": "solid"},
    ]
    s = chest_statistics(scans)
    assert (s["scans"], s["nodules"], s["scans_without_nodules"]) == (3, 3, 1)
    assert s["nodules_per_scan"] == 1.0 and s["diameter_mm"]["median"] == 12.0
    assert s["size_bins"] == {"3-5 mm": 1 / 3, "5-10 mm": 0.0, "10-30 mm": 2 / 3}  # 30.5 mm counts in the last
    assert s["attachment"]["isolated"] == 2 / 3 and s["texture"]["ground-glass"] == 1 / 3


def test_dataset_folder_is_seeded_and_loads(tmp_path: Path) -> None:
    from leanseg.data.datasets import load_dataset

    a = generate_chest_dataset(tmp_path / "a", num_cases=2, seed=5, shape=(96, 96, 48), spacing=(2.0, 2.0, 3.0))
    b = generate_chest_dataset(tmp_path / "b", num_cases=2, seed=5, shape=(96, 96, 48), spacing=(2.0, 2.0, 3.0))
    ds = load_dataset(a)
    assert len(ds.cases) == 2
    assert json.loads((a / "nodules.json").read_text()) == json.loads((b / "nodules.json").read_text())
    import nibabel as nib

    ia = nib.load(a / "imagesTr" / "chest_001.nii.gz")
    assert np.allclose(ia.header.get_zooms(), (2.0, 2.0, 3.0))
    assert np.array_equal(np.asanyarray(ia.dataobj), np.asanyarray(nib.load(b / "imagesTr" / "chest_001.nii.gz").dataobj))


def test_chest_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    r = CliRunner().invoke(
        app, ["data", "chest", "-o", str(tmp_path / "c"), "--cases", "1", "--shape", "64", "64", "32", "--spacing", "2", "2", "3"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c" / "imagesTr" / "chest_000.nii.gz").is_file()
