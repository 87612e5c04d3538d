import pickle
from pathlib import Path

import pytest
import torch

from leanseg.checkpoint import load_checkpoint, load_run_model
from leanseg.errors import LeansegError


def test_checkpoint_from_another_model_is_refused(trained_run: Path, tmp_path: Path) -> None:
    ckpt = torch.load(trained_run / "checkpoint_final.pt", weights_only=True)
    ckpt["config"]["model"]["name"] = "monai_unet"  # the config says MONAI UNet, the weights are a resunet
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(LeansegError, match="belongs to another model"):
        load_run_model(tmp_path / "other.pt")


def test_checkpoint_version_and_format(trained_run: Path, tmp_path: Path) -> None:
    ckpt = torch.load(trained_run / "checkpoint_final.pt", weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, tmp_path / "v99.pt")
    with pytest.raises(LeansegError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(LeansegError, match="not a leanseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickles_are_not_executed(tmp_path: Path) -> None:
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "leanseg-checkpoint", "x": Evil()}, f)
    with pytest.raises(LeansegError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "evil.pt")


def test_missing_checkpoint_says_train_first(tmp_path: Path) -> None:
    with pytest.raises(LeansegError, match="No checkpoint in"):
        load_run_model(tmp_path)


def _damaged(trained_run: Path, tmp_path: Path, change) -> Path:
    """A copy of the run whose final checkpoint ``change`` edits, its signature left intact."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = torch.load(run / "checkpoint_final.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, run / "checkpoint_final.pt")
    return run


def _first_weight(ckpt: dict) -> str:
    return next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.ndim > 1)


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (lambda c: c["model"].update(extra=torch.zeros(2)), r"does not fit its own model \(Error\(s\) in loading state_dict"),
        (lambda c: c["model"].pop(_first_weight(c)), r"does not fit its own model"),
        (lambda c: c["model"].update({_first_weight(c): torch.zeros(1, 2, 3)}), r"does not fit its own model"),
        (lambda c: c["model"][_first_weight(c)].fill_(float("nan")), r"holds NaN or infinite weights"),
        (lambda c: c["plan"].update(unknown_key=1), r"The plan in checkpoint .* is damaged \(unknown \['unknown_key'\]\)"),
        (lambda c: c["plan"].pop("patch_size"), r"is damaged \(missing \['patch_size'\]\)"),
        (lambda c: c["plan"].update(normalization=["zscorez"]), r"names normalisation \['zscorez'\], but each"),
        (lambda c: c["plan"].update(strides=None), r"The plan in checkpoint .* is damaged \(TypeError"),
        (lambda c: c["config"]["train"].update(lr=float("nan")), r"The config in checkpoint .* is damaged: .*train.lr=nan"),
        (lambda c: c.update(model=[1, 2]), r"holds no weights a model can take"),
    ],
    ids=["extra", "missing", "shape", "nan", "plan-unknown", "plan-missing", "plan-norm", "plan-type", "config-nan", "not-weights"],
)
def test_a_damaged_checkpoint_is_one_sentence_and_predicts_nothing(
    trained_run: Path, phantoms: Path, tmp_path: Path, change, sentence: str
) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    run = _damaged(trained_run, tmp_path, change)
    with pytest.raises(LeansegError, match=sentence):
        load_run_model(run)
    image = sorted((phantoms / "imagesTr").iterdir())[0]
    r = CliRunner().invoke(app, ["predict", "-m", str(run), "-i", str(image), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "Traceback" not in r.output and not list((tmp_path / "out").glob("*.nii*")), r.output


def test_a_damaged_plan_json_is_one_sentence(trained_run: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from leanseg.runfolder import RunFolder

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    plan = json.loads((run / "plan.json").read_text())
    (run / "plan.json").write_text(json.dumps({**plan, "normalization": ["unheard_of"]}))
    with pytest.raises(LeansegError, match=r"plan.json names normalisation \['unheard_of'\]"):
        RunFolder(run).plan()
    (run / "plan.json").write_text(json.dumps({k: v for k, v in plan.items() if k != "labels"}))
    with pytest.raises(LeansegError, match=r"plan.json is damaged \(missing \['labels'\]\)"):
        RunFolder(run).plan()
