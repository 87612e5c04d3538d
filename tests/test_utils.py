"""Writing files: atomic writes with the umask's mode, one writer per folder, leftovers of killed writes swept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leanseg.errors import LeansegError
from leanseg.utils import atomic_path, atomic_write_text, folder_lock

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_writes_take_the_mode_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
        os.umask(0o077)
        atomic_write_text(tmp_path / "c.txt", "z")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # a colleague can read it (mkstemp alone gives 0600)
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.txt").stat().st_mode & 0o777 == 0o600  # a strict umask is kept


def _hold(folder: Path) -> subprocess.Popen:
    code = f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r})\nfrom leanseg.utils import folder_lock\n"
    code += f"with folder_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    p = _hold(folder)
    try:
        with pytest.raises(LeansegError, match=rf"in use by another leanseg process \(pid {p.pid}\)"), folder_lock(folder):
            pass
    finally:
        p.kill()
        p.wait()
    with folder_lock(folder), folder_lock(folder):  # free again after the kill; nested holders in one process
        assert (folder / ".lock").is_file()


def test_the_sweep_deletes_only_what_a_killed_atomic_write_left(tmp_path: Path) -> None:
    from leanseg.utils import atomic_path, is_own_temporary, sweep_temporaries

    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(KeyboardInterrupt), atomic_path(folder / "checkpoint_latest.pt") as tmp:
        tmp.write_bytes(b"half")
        killed = tmp  # the name atomic_path gave the write
        raise KeyboardInterrupt
    killed.write_bytes(b"half")  # what a SIGKILL before the rename leaves (the context cannot clean up then)
    assert is_own_temporary(killed)
    user = [".notes.tmpl", ".thesis.tmp.bak", ".x.abc123.tmp.pt", "a.leanseg-tmp"]  # user files that the old sweep deleted
    for name in user:
        (folder / name).write_text("mine")
    (folder / ".build.leanseg-tmp").mkdir()  # a folder is never swept (the old sweep gave a traceback)
    (folder / "checkpoint_latest.pt").write_bytes(b"whole")
    with folder_lock(folder):  # taking the lock deletes nothing
        assert killed.exists()
        assert sweep_temporaries(folder) == [killed]
    assert not killed.exists() and all((folder / n).read_text() == "mine" for n in user)
    assert (folder / "checkpoint_latest.pt").read_bytes() == b"whole" and (folder / ".build.leanseg-tmp").is_dir()


def test_two_trainings_on_one_run_folder(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from leanseg.training import train

    run = tmp_path / "run"
    p = _hold(run)
    try:
        start = time.time()
        with pytest.raises(LeansegError, match="in use by another leanseg process"):
            train(phantoms, run, tiny_cfg, show_progress=False)
        assert time.time() - start < 30 and not (run / "config.yaml").exists()  # refused before writing anything
    finally:
        p.kill()
        p.wait()


def test_a_run_folder_is_readable_by_others_under_the_usual_umask(trained_run: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    if mask & 0o044:
        pytest.skip(f"this session's umask {mask:03o} keeps files private")
    files = [p for p in trained_run.rglob("*") if p.is_file() and p.name != ".lock"]
    assert files and all(p.stat().st_mode & 0o044 == 0o044 for p in files), [p.name for p in files if p.stat().st_mode & 0o044 != 0o044]


def test_devices_resolve_and_a_missing_cuda_is_refused_with_a_sentence() -> None:
    import torch

    from leanseg.utils import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LeansegError, match="is not a device"):
        resolve_device("gpu0")
    with pytest.raises(LeansegError, match="not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(LeansegError, match=r"--device cuda:1 was asked for, but torch .* sees 0 CUDA device\(s\)"):
            resolve_device("cuda:1")


def test_train_and_predict_take_a_device(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    import torch
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.config import ExperimentConfig

    tiny_cfg.save(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "-d", str(phantoms), "-o", str(run), "--config", str(tmp_path / "tiny.yaml"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert ExperimentConfig.load(run / "config.yaml").train.device == "cpu"
    image = sorted((phantoms / "imagesTr").iterdir())[0]
    r = CliRunner().invoke(app, ["predict", "-m", str(run), "-i", str(image), "-o", str(tmp_path / "p"), "--device", "cpu"])
    assert r.exit_code == 0 and len(list((tmp_path / "p").glob("*.nii.gz"))) == 1
    if not torch.cuda.is_available():
        r = CliRunner().invoke(app, ["predict", "-m", str(run), "-i", str(image), "-o", str(tmp_path / "q"), "--device", "cuda"])
        assert r.exit_code == 2 and "sees 0 CUDA device" in r.output and not (tmp_path / "q").exists()
