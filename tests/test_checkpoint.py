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
