import json
from pathlib import Path

import pytest
import torch

from leanseg.data.prepare import make_splits
from leanseg.errors import LeansegError
from leanseg.runfolder import RunFolder
from leanseg.training import Trainer, train
from leanseg.training.schedule import lr_at


def test_splits_are_deterministic_and_partition_the_cases() -> None:
    ids = [f"c{i}" for i in range(11)]
    a, b = make_splits(ids, 5, 7), make_splits(list(reversed(ids)), 5, 7)
    assert a == b
    vals = [c for s in a for c in s["val"]]
    assert sorted(vals) == sorted(ids)
    assert all(set(s["train"]) | set(s["val"]) == set(ids) and not set(s["train"]) & set(s["val"]) for s in a)
    assert make_splits(ids, 5, 8) != a


def test_schedules() -> None:
    assert lr_at(0.01, "poly", 0) == 0.01 and lr_at(0.01, "poly", 1) == 0
    assert lr_at(0.01, "cosine", 0.5) == pytest.approx(0.005)
    assert lr_at(0.01, "poly", 0.5) == pytest.approx(0.01 * 0.5**0.9)


def test_run_folder_contents(trained_run: Path) -> None:
    for name in (
        "config.yaml",
        "plan.json",
        "fingerprint.json",
        "splits.json",
        "checkpoint_final.pt",
        "metrics.csv",
        "training_curve.png",
        "summary.json",
    ):
        assert (trained_run / name).is_file(), name
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["iterations"] == 8 and 0 <= summary["data_wait_share"] < 1 and 0 <= summary["val_dice"] <= 1
    assert len(json.loads((trained_run / "splits.json").read_text())) == 3
    assert (trained_run / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint_final.pt", weights_only=True)["model"]


def test_same_seed_same_weights_and_resume_matches(phantoms: Path, tiny_cfg, trained_run: Path, tmp_path: Path, monkeypatch) -> None:
    again = tmp_path / "again"
    train(phantoms, again, tiny_cfg, show_progress=False)
    ref = _weights(trained_run)
    for k, v in _weights(again).items():
        assert torch.equal(v, ref[k]), k

    # interrupt at iteration 6 (after the checkpoint at 4), then resume: same weights as straight through
    class Interrupted(Trainer):  # a Trainer hook stops the run at the start of iteration 7
        def train_step(self, x, y):
            if self.iteration == 6:
                raise KeyboardInterrupt
            return super().train_step(x, y)

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(phantoms, resumed, tiny_cfg, show_progress=False, trainer=Interrupted)
    assert not (resumed / "checkpoint_final.pt").exists()
    assert torch.load(resumed / "checkpoint_latest.pt", weights_only=True)["iteration"] == 4
    train(phantoms, resumed, tiny_cfg, show_progress=False)
    for k, v in _weights(resumed).items():
        assert torch.allclose(v, ref[k], atol=1e-6), k


def test_a_finished_run_is_left_as_it_is(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    run = tmp_path / "done"
    first = train(phantoms, run, tiny_cfg, show_progress=False)

    def files() -> dict:  # contents of all; times of what training writes (set-up files are rewritten unchanged)
        kept = ("checkpoint_final.pt", "checkpoint_latest.pt", "summary.json", "metrics.csv")
        return {p.name: (p.stat().st_mtime_ns if p.name in kept else 0, p.read_bytes()) for p in run.iterdir() if p.is_file()}

    before = files()
    again = train(phantoms, run, tiny_cfg, show_progress=False)
    assert again.already_complete and not first.already_complete
    assert again.val == first.val and again.iterations == first.iterations and "val_dice" in again.val
    assert files() == before
    tiny_cfg.save(tmp_path / "tiny.yaml")
    r = CliRunner().invoke(
        app, ["train", "-d", str(phantoms), "-o", str(run), "--config", str(tmp_path / "tiny.yaml")], env={"COLUMNS": "300"}
    )
    assert r.exit_code == 0 and "already complete" in r.output and f"mean={first.val['val_dice']:.4f}" in r.output


def test_resume_refuses_another_config(phantoms: Path, tiny_cfg, trained_run: Path) -> None:
    import shutil

    shutil.copy(trained_run / "checkpoint_final.pt", trained_run / "checkpoint_latest.pt")
    with pytest.raises(LeansegError, match="another config"):
        train(phantoms, trained_run, tiny_cfg.with_overrides(["train.lr=0.5"]), show_progress=False)


def test_budget_stops_training_when_its_clock_says_so(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    class OneSecondPerStep(Trainer):
        """A clock that advances one second per iteration: the budget, not the machine, decides the count."""

        def elapsed(self) -> float:
            return float(self.iteration)

    # the budget is the road: with train.iterations left unset, only the clock ends the run
    cfg = tiny_cfg.with_overrides({"train.iterations": None, "train.budget_minutes": 0.1, "train.val_every": 10**6})
    r = train(phantoms, tmp_path / "b", cfg, show_progress=False, trainer=OneSecondPerStep)
    assert r.iterations == 6 and r.ended_by == "budget"  # 0.1 min = 6 "seconds"
    summary = RunFolder(tmp_path / "b").summary()
    assert summary["iterations"] == 6 and summary["ended_by"] == "budget"
    # a fixed train.iterations that comes first ends it instead, and the summary says so
    r = train(phantoms, tmp_path / "c", cfg.with_overrides({"train.iterations": 4}), show_progress=False, trainer=OneSecondPerStep)
    assert r.iterations == 4 and r.ended_by == "iterations"


def test_iteration_limit_follows_the_budget() -> None:
    from leanseg.config import DEFAULT_ITERATIONS, TrainConfig

    assert TrainConfig().iteration_limit == DEFAULT_ITERATIONS
    assert TrainConfig(budget_minutes=15).iteration_limit is None
    assert TrainConfig(budget_minutes=15, iterations=300).iteration_limit == 300


def test_fold_all_trains_on_every_case(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg.with_overrides({"train.iterations": 2, "train.val_every": 2, "data.fold": "all"})
    r = train(phantoms, tmp_path / "all", cfg, show_progress=False)
    summary = RunFolder(tmp_path / "all").summary()
    assert summary["fold"] == "all" and summary["train_cases"] == 6 and summary["val_cases"] == 6 and "val_dice" in r.val
    assert RunFolder(tmp_path / "all").split()["train"] == sorted(RunFolder(tmp_path / "all").split()["val"])
    with pytest.raises(LeansegError, match="Fold 'every' does not exist; choose 0..2 or all"):
        train(phantoms, tmp_path / "bad", cfg.with_overrides({"data.fold": "every"}), show_progress=False)


def test_zero_iterations_are_refused_with_a_sentence(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(LeansegError, match=r"train.iterations=0 is out of range: it must be >= 1"):
        train(phantoms, tmp_path / "z", tiny_cfg.with_overrides({"train.iterations": 0}), show_progress=False)


def test_training_learns_the_phantoms(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg.with_overrides(
        {
            "train.iterations": 150,
            "train.val_every": 150,
            "model.features": [8, 16, 32],
            "data.patch_size": [24, 24, 24],
            "train.bf16": True,
        }
    )
    r = train(phantoms, tmp_path / "l", cfg, show_progress=False)
    # lesions are learnt (chance is ~0); in these 24-voxel phantoms lesions cover most of the small structure
    assert r.val["val_dice_2"] > 0.5


def test_output_that_is_a_file(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(LeansegError, match="is a file"):
        train(phantoms, tmp_path / "f", tiny_cfg, show_progress=False)


def test_training_with_an_ignore_label(partial_phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    """A partly annotated nnU-Net v2 dataset: the ignore value reaches neither the classes nor the loss's one-hot."""
    import numpy as np

    r = train(partial_phantoms, tmp_path / "run", tiny_cfg.with_overrides({"train.iterations": 4}), show_progress=False)
    assert np.isfinite(r.val["val_dice"]) and set(r.val) == {"val_dice", "val_dice_1", "val_dice_2"}
    plan = RunFolder(tmp_path / "run").plan()
    assert plan.ignore_label == 3 and plan.num_classes == 3


def test_region_based_labels_train_predict_and_evaluate(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    """nnU-Net v2 regions: sigmoid outputs per region, painted back by regions_class_order, scored per region."""
    import shutil

    import numpy as np
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_label

    root = tmp_path / "regions"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for c in load_dataset(phantoms).cases:
        shutil.copy(c.images[0], root / "imagesTr" / f"{c.case_id}_0000.nii.gz")
        shutil.copy(c.label, root / "labelsTr" / f"{c.case_id}.nii.gz")
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "anything": [1, 2], "lesion": [2]},
        "regions_class_order": [1, 2],
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    r = train(root, tmp_path / "run", tiny_cfg.with_overrides({"train.iterations": 4}), show_progress=False)
    plan = RunFolder(tmp_path / "run").plan()
    assert plan.regions == ((1, 2), (2,)) and plan.num_outputs == 2 and set(r.val) == {"val_dice", "val_dice_1", "val_dice_2"}
    images = root / "imagesTr"
    res = CliRunner().invoke(app, ["predict", "-m", str(tmp_path / "run"), "-i", str(images), "-o", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    values = set()
    for f in (tmp_path / "pred").glob("*.nii.gz"):
        values |= set(np.unique(read_label(f).array).tolist())
    assert values <= {0, 1, 2}
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(root / "labelsTr"), "--dataset", str(root), "--json"]
    out = json.loads(CliRunner().invoke(app, args).stdout)
    assert out["labels"] == {"0": "background", "1": "anything", "2": "lesion"} and "dice_2" in out["mean"]


def test_a_run_refuses_other_data_before_writing_anything(phantoms: Path, partial_phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    run = tmp_path / "run"
    train(phantoms, run, tiny_cfg, show_progress=False)
    kept = {n: (run / n).read_bytes() for n in ("run.json", "splits.json", "fingerprint.json", "plan.json", "config.yaml", "summary.json")}
    tiny_cfg.save(tmp_path / "tiny.yaml")
    r = CliRunner().invoke(app, ["train", "-d", str(partial_phantoms), "-o", str(run), "--config", str(tmp_path / "tiny.yaml")])
    assert r.exit_code == 2 and "was trained on other data than" in r.output and "already complete" not in r.output, r.output
    assert {n: (run / n).read_bytes() for n in kept} == kept
    again = train(phantoms, run, tiny_cfg, show_progress=False)  # its own data: complete, left as it is
    assert again.already_complete and {n: (run / n).read_bytes() for n in kept} == kept
