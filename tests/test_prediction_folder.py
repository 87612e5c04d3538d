"""``leanseg predict`` writes only where it may: never over its inputs, a dataset, a run, a file it did not write, or
another model's predictions; two inputs that would share an output are refused with both names."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leanseg.cli import app
from leanseg.data.datasets import load_dataset


def _predict(run: Path, inp: Path, out: Path) -> object:
    return CliRunner().invoke(app, ["predict", "-m", str(run), "-i", str(inp), "-o", str(out)])


def _images(phantoms: Path, folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for c in load_dataset(phantoms).cases[:n]:
        shutil.copy(c.images[0], folder / c.images[0].name)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_folder_that_is_or_holds_the_inputs_is_refused(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    imgs = _images(phantoms, tmp_path / "imgs")
    before = _snapshot(imgs)
    for out in (imgs, tmp_path):  # the input folder itself, and a folder that holds it
        r = _predict(trained_run, imgs, out)
        assert r.exit_code == 2 and "the input folder" in r.output and "pass a new --output" in r.output, r.output
    r = _predict(trained_run, imgs / sorted(before)[0], imgs)  # one file, into its own folder
    assert r.exit_code == 2 and "is the input folder" in r.output
    assert _snapshot(imgs) == before


@pytest.mark.parametrize("part", ["labelsTr", "imagesTr", "."])
def test_a_dataset_folder_or_its_parts_are_refused(trained_run: Path, phantoms: Path, tmp_path: Path, part: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    imgs = _images(phantoms, tmp_path / "imgs")
    before = _snapshot(data)
    r = _predict(trained_run, imgs, data / part)
    assert r.exit_code == 2 and "is part of the dataset" in r.output, r.output
    assert _snapshot(data) == before


def test_a_run_folder_is_refused_as_output(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _snapshot(run)
    r = _predict(run, _images(phantoms, tmp_path / "imgs"), run)
    assert r.exit_code == 2 and "is a training run's folder" in r.output
    assert _snapshot(run) == before


def test_a_file_leanseg_did_not_write_is_never_replaced(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    imgs = _images(phantoms, tmp_path / "imgs")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / sorted(p.name for p in imgs.iterdir())[1]
    mine.write_bytes(b"a reader's own labels")
    r = _predict(trained_run, imgs, out)
    assert r.exit_code == 2 and f"{mine} exists and is not an earlier prediction" in r.output, r.output
    assert mine.read_bytes() == b"a reader's own labels" and len(list(out.glob("*.nii.gz"))) == 1  # refused before any case ran
    mine.unlink()
    assert _predict(trained_run, imgs, out).exit_code == 0
    first = _snapshot(out)
    assert _predict(trained_run, imgs, out).exit_code == 0  # its own earlier outputs are replaced, equal
    assert {k: v for k, v in _snapshot(out).items() if k.endswith(".nii.gz")} == {k: v for k, v in first.items() if k.endswith(".nii.gz")}


def test_another_models_predictions_do_not_mix_into_one_folder(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    imgs = _images(phantoms, tmp_path / "imgs")
    other = tmp_path / "other_run"
    shutil.copytree(trained_run, other)
    out = tmp_path / "out"
    assert _predict(trained_run, imgs, out).exit_code == 0
    r = _predict(other, imgs, out)
    assert r.exit_code == 2 and "holds predictions of another model" in r.output, r.output


@pytest.mark.parametrize(
    ("names", "clash"),
    [(["A.nii", "A.nii.gz"], "A.nii and .*A.nii.gz"), (["B.nii.gz", "B_0000.nii.gz"], "B.nii.gz and .*B_0000.nii.gz")],
)
def test_two_inputs_that_would_share_one_output_are_refused_with_both_names(
    trained_run: Path, phantoms: Path, tmp_path: Path, names: list[str], clash: str
) -> None:
    import nibabel as nib

    src = load_dataset(phantoms).cases[0].images[0]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n in names:
        nib.save(nib.load(str(src)), str(imgs / n))
    r = _predict(trained_run, imgs, tmp_path / "out")
    assert r.exit_code == 2 and "both give the case name" in r.output, r.output
    import re

    assert re.search(clash, r.output.replace("\n", "")), r.output
    assert not list((tmp_path / "out").glob("*.nii*"))


def test_a_killed_predictions_temporary_is_swept_and_never_scored(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    imgs = _images(phantoms, tmp_path / "imgs")
    out = tmp_path / "out"
    assert _predict(trained_run, imgs, out).exit_code == 0
    name = sorted(p.name for p in out.glob("*.nii.gz"))[0]
    left = out / f".{name}.abcd1234.leanseg-tmp.nii.gz"  # a prediction killed before its rename
    shutil.copy(out / name, left)
    ref = load_dataset(phantoms).root / "labelsTr"
    r = CliRunner().invoke(
        app, ["evaluate", "--pred", str(out), "--ref", str(ref), "--allow-missing", "--json", "--out", str(tmp_path / "ev")]
    )
    assert r.exit_code == 0 and r.output.count('"case":') == 2, r.output  # the temporary is no prediction
    assert _predict(trained_run, imgs, out).exit_code == 0 and not left.exists()


def test_a_second_prediction_into_a_busy_folder_is_refused(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = f"from leanseg.utils import folder_lock; import time\nwith folder_lock({str(out)!r}, 'output'):\n    print('held', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        r = _predict(trained_run, _images(phantoms, tmp_path / "imgs"), out)
        assert r.exit_code == 2 and "in use by another leanseg process" in r.output, r.output
    finally:
        p.kill()
        p.wait()


def test_evaluate_never_replaces_a_runs_training_history(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    history = (run / "metrics.csv").read_bytes()
    for c in load_dataset(phantoms).cases[:2]:
        shutil.copy(c.label, run / c.label.name)  # predictions written into the run folder
    r = CliRunner().invoke(app, ["evaluate", "--pred", str(run), "--ref", str(phantoms / "labelsTr"), "--allow-missing"])
    assert r.exit_code == 2 and "whose metrics.csv is its training history; pass --out" in r.output, r.output
    assert (run / "metrics.csv").read_bytes() == history
    r = CliRunner().invoke(
        app, ["evaluate", "--pred", str(run), "--ref", str(phantoms / "labelsTr"), "--allow-missing", "--out", str(tmp_path / "ev")]
    )
    assert r.exit_code == 0 and (tmp_path / "ev" / "metrics.csv").is_file()
