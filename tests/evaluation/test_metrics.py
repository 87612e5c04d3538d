import json
import math
from pathlib import Path

import numpy as np
import pytest

from leanseg.errors import LeansegError
from leanseg.metrics import dice, evaluate_folders, hd95, summarise
from tests.conftest import write_nifti


def cube(shape, lo, size):
    a = np.zeros(shape, dtype=np.uint8)
    a[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = 1
    return a


def test_dice_by_hand() -> None:
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True  # 32 voxels
    b[1:3] = True  # 32 voxels, 16 shared
    assert dice(a, b) == pytest.approx(2 * 16 / 64)
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(b)))
    assert dice(a, np.zeros_like(b)) == 0.0


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("axis,spacing", [(0, (1.0, 1.0, 1.0)), (2, (0.8, 0.8, 2.5)), (0, (0.8, 0.8, 2.5))])
def test_hd95_of_a_shifted_cube_is_the_shift_in_mm(k: int, axis: int, spacing) -> None:
    a = cube((30, 30, 30), (8, 8, 8), 10)
    b = np.roll(a, k, axis=axis)
    assert hd95(b, a, spacing) == pytest.approx(k * spacing[axis], rel=1e-6)


def test_hd95_conventions_for_empty_masks() -> None:
    a = cube((10, 10, 10), (2, 2, 2), 3)
    z = np.zeros_like(a)
    assert math.isnan(hd95(z, z))
    assert hd95(z, a, (2.0, 1.0, 1.0)) == pytest.approx(np.linalg.norm([20, 10, 10]))


def test_summarise_leaves_nan_out() -> None:
    rows = [
        {"dice_1": 1.0, "hd95_1": 1.0, "dice_2": math.nan, "hd95_2": math.nan},
        {"dice_1": 0.5, "hd95_1": 3.0, "dice_2": 0.2, "hd95_2": 4.0},
    ]
    m = summarise(rows, [1, 2])
    assert m["dice_1"] == 0.75 and m["dice_2"] == 0.2 and m["dice_mean"] == pytest.approx((0.75 + 0.2) / 2)


def test_evaluate_folders_writes_tables(tmp_path: Path) -> None:
    aff = np.diag([2.0, 1.0, 1.0, 1.0])
    ref = cube((20, 20, 20), (5, 5, 5), 6)
    pred = np.roll(ref, 1, axis=0)
    write_nifti(tmp_path / "ref" / "c1.nii.gz", ref, aff)
    write_nifti(tmp_path / "pred" / "c1.nii.gz", pred, aff)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"})
    assert res["cases"][0]["dice_1"] == pytest.approx(2 * 5 * 36 / (2 * 216))
    assert res["cases"][0]["hd95_1"] == pytest.approx(2.0)  # 1 voxel along x at 2 mm
    for name in ("metrics.csv", "metrics.md", "metrics.json"):
        assert (tmp_path / "pred" / name).is_file()
    assert "| **mean** |" in (tmp_path / "pred" / "metrics.md").read_text()


def test_evaluate_refuses_mismatched_shapes(tmp_path: Path) -> None:
    write_nifti(tmp_path / "ref" / "c1.nii.gz", np.zeros((5, 5, 5), np.uint8))
    write_nifti(tmp_path / "pred" / "c1.nii.gz", np.zeros((5, 5, 6), np.uint8))
    with pytest.raises(LeansegError, match="c1.nii.gz has shape"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")


def test_evaluate_with_object_metrics_worked_by_hand(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    ref1 = cube((20, 20, 20), (2, 2, 2), 4) | cube((20, 20, 20), (12, 12, 12), 4)
    pred1 = cube((20, 20, 20), (2, 2, 2), 4) | cube((20, 20, 20), (2, 12, 2), 2)  # one hit, one miss, one false positive
    ref2 = cube((20, 20, 20), (8, 8, 8), 3)
    for name, ref, pred in (("a", ref1, pred1), ("b", ref2, ref2)):
        write_nifti(tmp_path / "ref" / f"{name}.nii.gz", ref)
        write_nifti(tmp_path / "pred" / f"{name}.nii.gz", pred)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "nodule"}, objects=True)
    a, b = res["cases"]
    assert (a["objects"], a["object_recall"], a["object_dice"], a["false_positives"]) == (2, 0.5, 0.5, 1)
    assert (b["object_recall"], b["object_dice"], b["false_positives"]) == (1.0, 1.0, 0)
    m = res["mean"]
    assert m["object_recall"] == pytest.approx(2 / 3) and m["object_dice"] == pytest.approx(2 / 3) and m["fp_per_scan"] == 0.5
    out = CliRunner().invoke(
        app, ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--objects"], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0, out.output
    assert "object recall 0.667" in out.output and "0.50 false positives per scan" in out.output


def test_evaluate_says_which_predictions_hold_undeclared_values(tmp_path: Path) -> None:
    ref = cube((10, 10, 10), (2, 2, 2), 4)
    pred = ref.copy()
    pred[0, 0, 0] = 7  # a value no class declares
    write_nifti(tmp_path / "ref" / "c1.nii.gz", ref)
    write_nifti(tmp_path / "pred" / "c1.nii.gz", pred)
    write_nifti(tmp_path / "ref" / "c2.nii.gz", ref)
    write_nifti(tmp_path / "pred" / "c2.nii.gz", ref)
    with pytest.warns(UserWarning, match=r"1 prediction\(s\) hold values the dataset does not declare \(first: c1.nii.gz has \[7\]\)"):
        res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"})
    assert res["undeclared_values"] == {"c1.nii.gz": [7]}
    assert json.loads((tmp_path / "pred" / "metrics.json").read_text())["undeclared_values"] == {"c1.nii.gz": [7]}


def _three_cases(tmp_path: Path) -> None:
    ref = cube((10, 10, 10), (2, 2, 2), 4)
    for i in range(3):
        write_nifti(tmp_path / "ref" / f"c{i}.nii.gz", ref)
    write_nifti(tmp_path / "pred" / "c0.nii.gz", ref)  # one of three predicted: the others missing


def test_missing_predictions_are_an_error_unless_allowed_and_then_listed(tmp_path: Path) -> None:
    _three_cases(tmp_path)
    with pytest.raises(LeansegError, match=r"2 of the references .* have no prediction .*\(c1, c2\).*--allow-missing"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"})
    assert not (tmp_path / "pred" / "metrics.json").exists()
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"}, allow_missing=True)
    assert res["missing"] == ["c1", "c2"] and len(res["cases"]) == 1
    assert json.loads((tmp_path / "pred" / "metrics.json").read_text())["missing"] == ["c1", "c2"]
    assert "2 reference case(s) have no prediction and are not scored: c1, c2" in (tmp_path / "pred" / "metrics.md").read_text()


def test_the_empty_hd95_convention_is_chosen_and_stated(tmp_path: Path) -> None:
    ref = cube((10, 10, 10), (2, 2, 2), 4)
    write_nifti(tmp_path / "ref" / "c0.nii.gz", ref)
    write_nifti(tmp_path / "pred" / "c0.nii.gz", np.zeros_like(ref))  # the structure missed
    diag = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"})
    assert diag["cases"][0]["hd95_1"] == pytest.approx(np.linalg.norm([10, 10, 10]))
    assert diag["conventions"]["empty_hd95"] == "diagonal"
    assert "HD95 of a class empty on one side only: diagonal" in (tmp_path / "pred" / "metrics.md").read_text()
    nan = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"}, empty_hd95="nan")
    assert math.isnan(nan["cases"][0]["hd95_1"]) and nan["conventions"]["empty_hd95"] == "nan"
    with pytest.raises(LeansegError, match="--empty-hd95 'zero' is not one of diagonal, nan"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"}, empty_hd95="zero")


def test_evaluate_and_fingerprint_commands_write_json(phantoms: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    _three_cases(tmp_path)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--allow-missing" in r.output
    r = CliRunner().invoke(app, [*args, "--allow-missing", "--json", "--empty-hd95", "nan"])
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["missing"] == ["c1", "c2"] and out["cases"][0]["case"] == "c0"
    assert out["conventions"]["empty_hd95"] == "nan" and "dice_mean" in out["mean"]
    r = CliRunner().invoke(app, ["fingerprint", "--data", str(phantoms), "--json"])
    fp = json.loads(r.stdout)
    assert r.exit_code == 0 and fp["plan"]["normalization"] == ["zscore"] and len(fp["fingerprint"]["case_ids"]) == 6


def test_ignored_reference_voxels_are_left_out_of_the_metrics(tmp_path: Path) -> None:
    ref = cube((10, 10, 10), (2, 2, 2), 4)
    ref[:, :, 8:] = 5  # not annotated
    pred = cube((10, 10, 10), (2, 2, 2), 4)
    pred[:, :, 8:] = 1  # what the model says where nobody annotated: no false positive
    write_nifti(tmp_path / "ref" / "c.nii.gz", ref)
    write_nifti(tmp_path / "pred" / "c.nii.gz", pred)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"}, ignore_label=5)
    assert res["cases"][0]["dice_1"] == 1.0 and res["conventions"]["ignore_label"] == 5
    plain = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "cube"})
    assert plain["cases"][0]["dice_1"] < 0.5
