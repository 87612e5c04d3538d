import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from leanseg.cli import app

runner = CliRunner()


def test_help_does_not_import_torch() -> None:
    code = "import sys, leanseg.cli; assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "predict" in r.output and "demo" in r.output


def test_user_errors_are_one_sentence_and_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["fingerprint", "--data", str(tmp_path / "nowhere")])
    assert r.exit_code == 2
    assert "does not exist" in r.output and "Traceback" not in r.output


def test_train_predict_evaluate_export_from_the_command_line(phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--set", "model.features=[4,8]", "--set", "model.strides=[[1,1,1],[2,2,2]]", "--set", "data.patch_size=[16,16,16]"]
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(phantoms),
            "--out",
            str(run),
            *common,
            "--set",
            "train.iterations=4",
            "--set",
            "train.num_workers=0",
            "--fold",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "trained 4 iterations" in r.output
    assert (run / "config.yaml").read_text().count("fold: 1") == 1
    r = runner.invoke(app, ["export", "-m", str(run)])
    assert r.exit_code == 0 and (run / "model.onnx").is_file()
    r = runner.invoke(
        app,
        ["predict", "-m", str(run), "-i", str(phantoms / "imagesTr"), "-o", str(tmp_path / "pred"), "--backend", "onnx", "--threads", "1"],
    )
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 6
    r = runner.invoke(
        app, ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(phantoms / "labelsTr"), "--dataset", str(phantoms), "--json"]
    )
    assert r.exit_code == 0 and '"dice_mean"' in r.output


def test_fingerprint_command_prints_the_plan(phantoms: Path) -> None:
    r = runner.invoke(app, ["fingerprint", "--data", str(phantoms)])
    assert r.exit_code == 0 and "patch size" in r.output and "zscore" in r.output


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write in (as root, where permissions do not bind: a place under /sys)."""
    import os

    import pytest

    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "out"
    if not Path("/sys").is_dir():
        pytest.skip("no unwritable place for root here")
    return Path("/sys/leanseg_out")


def test_unwritable_places_are_refused_with_a_sentence_before_any_work(
    trained_run: Path, phantoms: Path, tmp_path: Path, monkeypatch
) -> None:
    from leanseg.inference import Predictor

    def no_network(*a, **k):
        raise AssertionError("the network ran before the output was checked")

    bad = _unwritable(tmp_path)
    image = sorted((phantoms / "imagesTr").iterdir())[0]
    with monkeypatch.context() as m:
        m.setattr(Predictor, "predict_volume", no_network)
        r = runner.invoke(app, ["predict", "-m", str(trained_run), "-i", str(image), "-o", str(bad)])
    assert r.exit_code == 2 and "Cannot write in the output folder" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "-d", str(phantoms), "-o", str(bad / "run")])
    assert r.exit_code == 2 and "Cannot write in the run folder" in r.output
    monkeypatch.setenv("LEANSEG_CACHE", str(bad / "cache"))
    r = runner.invoke(app, ["fingerprint", "--data", str(phantoms)])
    assert r.exit_code == 2 and "Cannot write in the cache folder" in r.output and "LEANSEG_CACHE" in r.output
