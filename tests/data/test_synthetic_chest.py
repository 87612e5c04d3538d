"""The synthetic chest CT generator: readable MSD folder, nodules as separate objects of the stated sizes, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leanseg.data.synthetic_chest import generate_chest_dataset, make_chest
from leanseg.objects import components


def test_nodules_are_separate_objects_inside_the_lungs_and_sizes_match() -> None:
    spacing = (1.5, 1.5, 2.0)
    image, label, nodules = make_chest((128, 128, 64), spacing, np.random.default_rng(3), num_nodules=(3, 5), diameter_mm=(4.0, 16.0))
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == label.shape == (128, 128, 64)
    assert 3 <= len(nodules) <= 5
    _, n = components(label == 1)
    assert n == len(nodules)
    for nod in nodules:
        assert 4.0 <= nod["diameter_mm"] <= 16.0
        c = tuple(int(nod[k]) for k in "xyz")
        assert label[c] == 1
    vox = float(np.prod(spacing))
    total = sum(4 / 3 * np.pi * (n["diameter_mm"] / 2) ** 3 for n in nodules)
    assert 0.5 * total < label.sum() * vox < 1.6 * total  # lobulated spheres of the stated diameters
    # lungs are dark, the body around them soft tissue, air outside
    assert image[64, 64, 32] > -300 and image[2, 2, 32] < -900  # mediastinum; air in the corner
    assert np.median(image[44, 60, 20:44]) < -600


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
