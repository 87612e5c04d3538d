import json
from pathlib import Path

import numpy as np
import pytest

from leanseg.data.datasets import load_dataset
from leanseg.data.fingerprint import compute_fingerprint
from leanseg.errors import LeansegError
from tests.conftest import SHARED_DATA, write_nifti


def make_msd(root: Path, labels: list[np.ndarray], label_affine=None, declared=None) -> Path:
    rng = np.random.default_rng(0)
    training = []
    for i, lab in enumerate(labels):
        write_nifti(root / "imagesTr" / f"c{i}.nii.gz", rng.random(lab.shape).astype(np.float32))
        write_nifti(root / "labelsTr" / f"c{i}.nii.gz", lab.astype(np.uint8), label_affine)
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"modality": {"0": "MRI"}, "labels": declared or {"0": "background", "1": "a"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_nnunet(root: Path, n_cases: int = 2, channels=("T1", "T2"), skip=None) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        for c in range(len(channels)):
            if skip == (i, c):
                continue
            write_nifti(root / "imagesTr" / f"case{i}_{c:04d}.nii.gz", rng.random((6, 6, 6)).astype(np.float32))
        lab = np.zeros((6, 6, 6), np.uint8)
        lab[2:4, 2:4, 2:4] = 2
        write_nifti(root / "labelsTr" / f"case{i}.nii.gz", lab)
    meta = {
        "channel_names": {str(c): n for c, n in enumerate(channels)},
        "labels": {"background": 0, "a": 1, "b": 2},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_msd_folder(phantoms: Path) -> None:
    ds = load_dataset(phantoms)
    assert ds.layout == "msd" and len(ds.cases) == 6 and ds.labels == {0: "background", 1: "structure", 2: "lesion"}
    assert ds.cases[0].images[0].is_file() and ds.num_classes == 3 and ds.modality == "MRI"


def test_nnunet_v2_folder(tmp_path: Path) -> None:
    ds = load_dataset(make_nnunet(tmp_path))
    assert ds.layout == "nnunetv2" and [c.case_id for c in ds.cases] == ["case0", "case1"]
    assert [p.name for p in ds.cases[0].images] == ["case0_0000.nii.gz", "case0_0001.nii.gz"]
    assert ds.labels == {0: "background", 1: "a", 2: "b"}


def test_missing_channel_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LeansegError, match="case1_0001.nii.gz is missing"):
        load_dataset(make_nnunet(tmp_path, skip=(1, 1)))


def test_missing_and_malformed_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(LeansegError, match="dataset.json is missing"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(LeansegError, match="not valid JSON"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}}))
    with pytest.raises(LeansegError, match="neither 'modality'"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "MRI"},
                "labels": {"0": "bg"},
                "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
            }
        )
    )
    with pytest.raises(LeansegError, match="x.nii.gz listed for case 'x' is missing"):
        load_dataset(tmp_path)


def test_labels_outside_the_declared_ones(tmp_path: Path) -> None:
    lab = np.zeros((5, 5, 5))
    lab[1, 1, 1] = 3
    ds = load_dataset(make_msd(tmp_path, [lab]))
    with pytest.raises(LeansegError, match=r"contains values \[3\] that dataset.json does not declare"):
        compute_fingerprint(ds)


def test_label_grid_must_match_image(tmp_path: Path) -> None:
    lab = np.zeros((5, 5, 5))
    lab[1, 1, 1] = 1
    ds = load_dataset(make_msd(tmp_path, [lab], label_affine=np.diag([1.0, 1, 2, 1])))
    with pytest.raises(LeansegError, match="c0.nii.gz has another affine"):
        compute_fingerprint(ds)


def test_empty_labels_note_and_error(tmp_path: Path) -> None:
    full = np.zeros((5, 5, 5))
    full[2, 2, 2] = 1
    fp = compute_fingerprint(load_dataset(make_msd(tmp_path / "a", [full, np.zeros((5, 5, 5))])))
    assert fp.empty_label_cases == ["c1"] and "empty label" in fp.notes[0]
    with pytest.raises(LeansegError, match="Every label .* is empty"):
        compute_fingerprint(load_dataset(make_msd(tmp_path / "b", [np.zeros((5, 5, 5))] * 2)))


@pytest.mark.realdata
def test_real_hippocampus_and_brats_folders() -> None:
    hip = load_dataset(SHARED_DATA / "Task04_Hippocampus")
    assert len(hip.cases) == 208 and hip.labels == {0: "background", 1: "Anterior", 2: "Posterior"}
    brats = load_dataset(SHARED_DATA / "BraTS2013_subset")
    assert brats.layout == "nnunetv2" and len(brats.cases) == 6 and brats.channel_names == ["FLAIR", "T1c"]
    assert brats.num_classes == 5


def test_a_declared_class_that_no_label_holds_is_warned_about(tmp_path: Path) -> None:
    lab = np.zeros((5, 5, 5))
    lab[2, 2, 2] = 1
    declared = {"0": "background", "1": "a", "2": "never"}
    with pytest.warns(UserWarning, match=r"declares class\(es\) 2 \(never\) that no label"):
        fp = compute_fingerprint(load_dataset(make_msd(tmp_path / "a", [lab, lab], declared=declared)))
    assert any("2 (never)" in n for n in fp.notes)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every declared class present: no warning
        compute_fingerprint(load_dataset(make_msd(tmp_path / "b", [lab, lab])))


def test_nnunet_v2_file_list_and_test_images(tmp_path: Path) -> None:
    """nnU-Net v2's 'dataset' entry lists the files (anywhere under the folder); imagesTs/ holds unlabelled cases."""
    root = make_nnunet(tmp_path / "d", n_cases=2)
    (root / "elsewhere").mkdir()
    for i in range(2):
        for c in range(2):
            (root / "imagesTr" / f"case{i}_{c:04d}.nii.gz").rename(root / "elsewhere" / f"s{i}_ch{c}.nii.gz")
    (root / "imagesTr").rmdir()
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {
        f"subject{i}": {"images": [f"elsewhere/s{i}_ch0.nii.gz", f"elsewhere/s{i}_ch1.nii.gz"], "label": f"labelsTr/case{i}.nii.gz"}
        for i in range(2)
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "imagesTs").mkdir()
    for c in range(2):
        write_nifti(root / "imagesTs" / f"new_{c:04d}.nii.gz", np.zeros((6, 6, 6), np.float32))
    ds = load_dataset(root)
    assert [c.case_id for c in ds.cases] == ["subject0", "subject1"]
    assert ds.cases[1].images[1].name == "s1_ch1.nii.gz" and ds.cases[1].label.name == "case1.nii.gz"
    assert [(c.case_id, c.label, len(c.images)) for c in ds.test_cases] == [("new", None, 2)]
    meta["dataset"]["subject0"]["images"] = ["elsewhere/s0_ch0.nii.gz"]  # one channel short
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(LeansegError, match="entry 'subject0' needs 'images', one file per channel \\(2\\)"):
        load_dataset(root)


def test_the_nnunet_ignore_label_is_not_a_class_and_region_labels_need_their_order(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "d", n_cases=2, channels=("T1",))
    meta = json.loads((root / "dataset.json").read_text())
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[2:4, 2:4, 2:4] = 2
    lab[0, :, :] = 3  # a slice nobody annotated
    for i in range(2):
        write_nifti(root / "labelsTr" / f"case{i}.nii.gz", lab)
    meta["labels"] = {"background": 0, "a": 1, "b": 2, "ignore": 3}
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert ds.labels == {0: "background", 1: "a", 2: "b"} and ds.ignore_label == 3 and ds.num_classes == 3
    fp = compute_fingerprint(ds)  # the ignore value is no undeclared label
    assert fp.ignore_label == 3 and set(fp.class_fractions) == {0, 1, 2}
    for bad, why in (({"background": 0, "a": 1, "ignore": 1}, "above every class"), ({"background": 0, "a": [1, 2]}, "region-based")):
        (root / "dataset.json").write_text(json.dumps({**meta, "labels": bad}))
        with pytest.raises(LeansegError, match=why):
            load_dataset(root)


def test_region_based_labels_are_read_as_nnunet_declares_them(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "d", n_cases=2, channels=("T1",))
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole": [1, 2], "core": [2]}
    meta["regions_class_order"] = [1, 2]
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert ds.labels == {0: "background", 1: "whole", 2: "core"} and ds.regions == [(1, 2), (2,)]
    assert ds.regions_class_order == [1, 2] and ds.label_values == {0, 1, 2}
    fp = compute_fingerprint(ds)  # the labels hold value 2 only: both regions present
    assert fp.regions == [[1, 2], [2]] and fp.class_fractions[1] == fp.class_fractions[2] > 0
    meta["regions_class_order"] = [1, 1]  # region 2 does not cover 1
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(LeansegError, match="regions_class_order' listing, per region, a value it covers"):
        load_dataset(root)


_NN = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
_MSD = {"modality": {"0": "MRI"}, "labels": {"0": "background"}, "training": [{"image": "./imagesTr/a.nii.gz", "label": None}]}


@pytest.mark.parametrize(
    ("meta", "sentence"),
    [
        ({**_MSD, "training": [{"image": 7}]}, r"training entry 0's 'image' must be a file path \(a string\), got 7"),
        ({**_MSD, "training": [{"image": None}]}, r"must be a file path \(a string\), got None"),
        ({**_MSD, "training": [{"image": "./imagesTr/a.nii.gz", "label": 3}]}, r"'label' must be a file path"),
        ({**_MSD, "modality": {"a": "MRI"}}, r"'modality' must map channel index 0, 1, \.\.\. -> name"),
        ({**_MSD, "modality": {"0": "MRI", "2": "T2"}}, r"indices are not 0\.\.C-1"),
        ({**_NN, "channel_names": ["MRI"]}, r"'channel_names' must map channel index"),
        ({**_NN, "labels": float("nan")}, r"'labels' must be a mapping of the classes, got float"),
        ({**_NN, "labels": {"background": 0, "a": float("nan")}}, r"'labels' must map name -> integer"),
        ({**_NN, "labels": {"background": 0, "a": [float("inf")]}, "regions_class_order": [1]}, r"region-based labels need integer lists"),
        ({**_NN, "file_ending": 3}, r"need 'file_ending'"),
        ({**_NN, "dataset": {"c": {"images": [None]}}}, r"'dataset' entry 'c''s image must be a file path"),
        ({**_NN, "dataset": {"c": {"images": ["x.nii.gz"], "label": {}}}}, r"'dataset' entry 'c''s 'label' must be a file path"),
    ],
)
def test_malformed_dataset_json_values_are_one_sentence(tmp_path: Path, meta: dict, sentence: str) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(LeansegError, match=sentence):
        load_dataset(tmp_path, require_labels=False)


def test_a_deeply_nested_dataset_json_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text('{"labels": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(LeansegError, match="nests its values too deeply"):
        load_dataset(tmp_path)
