"""The run folder knows its config, plan, splits and dataset; commands that act on a run take it alone."""

import json

import pytest

from leanseg.errors import LeansegError
from leanseg.runfolder import RunFolder


def test_a_trained_run_knows_its_dataset_split_and_summary(trained_run, phantoms, tiny_cfg) -> None:
    run = RunFolder(trained_run)
    assert run.data_dir() == phantoms.resolve() and run.data_dir("elsewhere").name == "elsewhere"
    assert run.split() == json.loads((trained_run / "splits.json").read_text())[tiny_cfg.data.fold]
    assert run.config().to_dict() == tiny_cfg.to_dict() and run.plan().patch_size == (16, 16, 16)
    assert run.summary()["iterations"] == tiny_cfg.train.iterations and run.checkpoint() == run.final
    with pytest.raises(LeansegError, match="Fold 7 does not exist"):
        run.split(7)


def test_an_empty_or_old_folder_is_refused_with_a_sentence(tmp_path) -> None:
    run = RunFolder(tmp_path)
    with pytest.raises(LeansegError, match="No checkpoint in"):
        run.checkpoint()
    with pytest.raises(LeansegError, match="splits.json is missing"):
        run.splits()
    with pytest.raises(LeansegError, match="does not record its dataset folder.*pass --data"):
        run.data_dir()
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(LeansegError, match="summary.json is damaged"):
        run.summary()
