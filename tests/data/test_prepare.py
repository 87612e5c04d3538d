from pathlib import Path

import pytest

from leanseg.config import DataConfig
from leanseg.data.prepare import run_splits, validation_fold
from leanseg.errors import LeansegError
from leanseg.runfolder import RunFolder

IDS = [f"c{i:02d}" for i in range(20)]


def test_plain_split_is_the_fold() -> None:
    splits, split = run_splits(IDS, DataConfig(num_folds=5, fold=2))
    assert len(splits) == 5 and split == splits[2]
    assert validation_fold(DataConfig(fold=2)) == 2


def test_nested_split_keeps_the_outer_fold_out() -> None:
    outer = run_splits(IDS, DataConfig(num_folds=5, fold=0))[1]
    inner_splits, inner = run_splits(IDS, DataConfig(num_folds=4, fold=0, inner_fold=1))
    outer4 = run_splits(IDS, DataConfig(num_folds=4, fold=0))[1]
    assert outer != outer4  # the outer split follows num_folds too
    assert not (set(inner["train"]) | set(inner["val"])) & set(outer4["val"])
    assert sorted(inner["train"] + inner["val"]) == outer4["train"]
    assert inner == inner_splits[1] and len(inner_splits) == 4
    assert validation_fold(DataConfig(fold=0, inner_fold=1)) == 1


def test_nested_split_refuses_all_and_a_missing_inner_fold() -> None:
    with pytest.raises(LeansegError, match="inner_fold needs an outer"):
        run_splits(IDS, DataConfig(fold="all", inner_fold=0))
    with pytest.raises(LeansegError, match=r"Fold 7 does not exist \(data.inner_fold\)"):
        run_splits(IDS, DataConfig(num_folds=5, inner_fold=7))


def test_a_nested_run_validates_on_its_inner_fold(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from leanseg.data.datasets import load_dataset
    from leanseg.training import train

    cfg = tiny_cfg.with_overrides({"data.inner_fold": 1, "train.iterations": 2, "train.val_every": 2})
    train(phantoms, tmp_path / "run", cfg, show_progress=False)
    run = RunFolder(tmp_path / "run")
    outer = run_splits([c.case_id for c in load_dataset(phantoms).cases], tiny_cfg.data)[1]
    split = run.split()
    assert outer["val"] and split["val"]
    assert not set(split["train"] + split["val"]) & set(outer["val"])
    assert split == run.splits()[1]
