"""Data-parallel training (DDP, gloo) with 2 processes x 1 thread on the phantoms: it trains, checkpoints and resumes,
and matches one process with the same global batch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from leanseg.errors import LeansegError
from leanseg.training import Trainer, train

LOSS_TOLERANCE = 0.01  # relative: the ranks read the same patches as one process, but each takes its batch Dice alone


def _cfg(tiny_cfg):
    return tiny_cfg.with_overrides({"train.num_threads": 2})  # shared: 1 thread per process under --nproc 2


def _losses(run: Path) -> dict[int, float]:
    import csv

    with open(run / "metrics.csv") as f:
        return {int(r["iteration"]): float(r["loss"]) for r in csv.DictReader(f)}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint_final.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def ddp_run(phantoms: Path, tiny_cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    r = train(phantoms, out, _cfg(tiny_cfg), show_progress=False, nproc=2)
    assert r.iterations == 8 and not r.already_complete
    return out


def test_two_processes_train_like_one_with_the_same_global_batch(ddp_run: Path, phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    one = train(phantoms, tmp_path / "one", _cfg(tiny_cfg), show_progress=False)
    ddp, single = _losses(ddp_run), _losses(one.run_dir)
    assert set(ddp) == set(single) == {4, 8}
    for it in ddp:
        assert abs(ddp[it] - single[it]) <= LOSS_TOLERANCE * single[it], (it, ddp[it], single[it])
    summary = (ddp_run / "summary.json").read_text()
    assert '"iterations": 8' in summary and (ddp_run / "checkpoint_latest.pt").is_file()
    assert train(phantoms, ddp_run, _cfg(tiny_cfg), show_progress=False).already_complete  # one process takes the run as its own
    from leanseg.inference import Predictor  # the checkpoint is the plain model's: it predicts as any run's

    image = sorted((phantoms / "imagesTr").iterdir())[0]
    assert Predictor.from_run(ddp_run).predict_files([("p", [image])], tmp_path / "pred")[0].output.is_file()


class DiesAtIteration6(Trainer):
    """Rank 1 is killed (SIGKILL) at iteration 6, after the checkpoint at 4."""

    def train_step(self, x, y):
        if self.iteration == 6 and self.rank.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train_step(x, y)


def test_a_killed_rank_ends_the_run_with_a_sentence_and_it_resumes(ddp_run: Path, phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(LeansegError, match=r"Rank 1 of 2 was killed by signal SIGKILL, which ended the run; it resumes"):
        train(phantoms, run, _cfg(tiny_cfg), show_progress=False, trainer=DiesAtIteration6, nproc=2)
    assert torch.load(run / "checkpoint_latest.pt", weights_only=True)["iteration"] == 4 and not (run / "checkpoint_final.pt").exists()
    assert not list(run.glob(".*leanseg-tmp*"))
    train(phantoms, run, _cfg(tiny_cfg), show_progress=False, nproc=2)
    ref = _weights(ddp_run)
    for k, v in _weights(run).items():
        assert torch.allclose(v, ref[k], atol=1e-6), k


def test_the_command_line_trains_with_nproc_and_refuses_a_batch_the_ranks_cannot_share(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    _cfg(tiny_cfg).save(tmp_path / "tiny.yaml")
    args = ["train", "-d", str(phantoms), "--config", str(tmp_path / "tiny.yaml"), "--nproc", "2"]
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "odd"), "--set", "train.batch_size=3"])
    assert r.exit_code == 2 and "train.batch_size 3 cannot be shared by 2 processes" in r.output and not (tmp_path / "odd").exists()
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "run"), "--set", "train.iterations=4"])
    assert r.exit_code == 0 and "trained 4 iterations" in r.output, r.output


def test_torchrun_runs_the_same_command_to_the_same_weights(ddp_run: Path, phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    """The several-machine launch, on one machine: torchrun starts `leanseg train` twice; they form the group from the
    environment and train to the weights of `--nproc 2`."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("leanseg")
    if exe is None:
        pytest.skip("the leanseg command is not on PATH (pip install -e . puts it there)")
    _cfg(tiny_cfg).save(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python", exe]
    r = subprocess.run(
        [*cmd, "train", "-d", str(phantoms), "-o", str(run), "--config", str(tmp_path / "tiny.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ref = _weights(ddp_run)
    for k, v in _weights(run).items():
        assert torch.allclose(v, ref[k], atol=1e-6), k


def test_a_run_of_two_processes_resumes_in_one(ddp_run: Path, phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    """The checkpoint holds the plain model and the config no process count: one process takes the killed DDP run on
    from its checkpoint at 4 to the end, within the batch-Dice tolerance of the uninterrupted DDP run."""
    run = tmp_path / "run"
    with pytest.raises(LeansegError, match="Rank 1 of 2 was killed"):
        train(phantoms, run, _cfg(tiny_cfg), show_progress=False, trainer=DiesAtIteration6, nproc=2)
    r = train(phantoms, run, _cfg(tiny_cfg), show_progress=False)
    assert r.iterations == 8 and not r.already_complete
    resumed, ddp = _losses(run), _losses(ddp_run)
    assert resumed[4] == ddp[4]  # the history up to the checkpoint is the DDP run's own
    assert abs(resumed[8] - ddp[8]) <= LOSS_TOLERANCE * ddp[8], (resumed[8], ddp[8])
