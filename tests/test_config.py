from pathlib import Path

import pytest

from leanseg.config import ExperimentConfig
from leanseg.errors import LeansegError


def test_yaml_round_trip_keeps_every_value(tmp_path: Path) -> None:
    cfg = ExperimentConfig().with_overrides(["train.lr=0.003", "data.patch_size=[40,56,40]", "model.strides=[[1,1,1],[2,2,1]]"])
    cfg.save(tmp_path / "c.yaml")
    back = ExperimentConfig.load(tmp_path / "c.yaml")
    assert back == cfg
    assert back.data.patch_size == (40, 56, 40)
    assert back.model.strides == ((1, 1, 1), (2, 2, 1))
    assert back.train.lr == 0.003


def test_override_types_are_coerced_and_checked() -> None:
    cfg = ExperimentConfig().with_overrides(["train.lr=1", "augment.flip=0"])
    assert isinstance(cfg.train.lr, float) and cfg.augment.flip == 0.0
    with pytest.raises(LeansegError, match="must be of type int"):
        ExperimentConfig().with_overrides(["train.iterations=fast"])


@pytest.mark.parametrize("bad", ["train.lrr=0.1", "nosuch.key=1", "train=3"])
def test_unknown_keys_are_refused_with_the_valid_ones(bad: str) -> None:
    with pytest.raises(LeansegError, match="Unknown config key|must be a mapping|must look like"):
        ExperimentConfig().with_overrides([bad])


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(LeansegError, match="bad.yaml"):
        ExperimentConfig.load(p)
