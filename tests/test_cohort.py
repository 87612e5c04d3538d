"""Cohort prediction on a local Ray cluster: every output present and equal to a single process's, even when a worker
is killed mid-run; nothing written twice; no temporary left; ``--continue`` skips what an earlier job wrote."""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from leanseg.data.io import read_label
from leanseg.errors import LeansegError
from leanseg.inference import Predictor, collect_inputs


def _cohort(phantoms: Path, folder: Path, n: int = 16) -> Path:
    """``n`` inputs (copies of the phantoms under their own names)."""
    folder.mkdir(parents=True)
    images = sorted((phantoms / "imagesTr").iterdir())
    for i in range(n):
        shutil.copy(images[i % len(images)], folder / f"c{i:02d}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from leanseg.utils import connect_ray

    yield connect_ray("local", num_cpus=2)
    ray.shutdown()


class Watcher(threading.Thread):
    """Notes each output's (inode, mtime) when it first appears, and kills one worker (SIGKILL) after the first output."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out, self.first_seen, self.killed, self.stop = out, {}, [], False

    def run(self) -> None:
        import psutil

        while True:
            done = self.stop  # read before the last look, so that an output written just before the end is seen
            for p in self.out.glob("c*.nii.gz"):
                st = p.stat()
                self.first_seen.setdefault(p.name, (st.st_ino, st.st_mtime_ns))
            if done:
                return
            if self.first_seen and not self.killed:
                for proc in psutil.process_iter(["cmdline"]):
                    if any("PredictWorker" in part for part in proc.info["cmdline"] or []):
                        proc.send_signal(signal.SIGKILL)
                        self.killed.append(proc.pid)
                        break
            time.sleep(0.005)


def test_a_killed_worker_leaves_every_output_present_equal_and_written_once(
    ray_cluster, trained_run: Path, phantoms: Path, tmp_path: Path
) -> None:
    from leanseg.cohort import predict_cohort

    inputs = _cohort(phantoms, tmp_path / "in")
    cases = collect_inputs(inputs, 1)
    options = {"tta": True}  # 8 flips a case: long enough for the kill to land mid-run
    single = Predictor.from_run(trained_run, num_threads=1, **options).predict_files(cases, tmp_path / "single")
    out = tmp_path / "ray"
    watcher = Watcher(out)
    watcher.start()
    p = Predictor.from_run(trained_run, num_threads=1, **options)
    s = predict_cohort(p, [trained_run], options, cases, out, "local", workers=2, threads=1)
    watcher.stop = True
    watcher.join()
    assert watcher.killed, "no worker was killed mid-run"
    assert sorted(r.case_id for r in s.done) == [c for c, _ in cases] and not s.failed and not s.skipped
    for r in single:  # voxel-identical to one process
        assert np.array_equal(read_label(out / r.output.name).array, read_label(r.output).array), r.case_id
    final = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("c*.nii.gz")}
    assert final == watcher.first_seen  # each output written once: none replaced after it appeared
    assert not [p.name for p in out.iterdir() if "leanseg-tmp" in p.name]


def test_continue_skips_what_an_earlier_job_wrote(ray_cluster, trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    inputs = _cohort(phantoms, tmp_path / "in", n=6)
    out = tmp_path / "out"
    args = ["predict", "-m", str(trained_run), "-i", str(inputs), "-o", str(out), "--threads", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("c*.nii.gz")}
    for name in ("c01.nii.gz", "c04.nii.gz"):  # what a killed job had not reached
        (out / name).unlink()
    for road in ([], ["--ray-address", "local", "--workers", "1"]):
        r = CliRunner().invoke(app, [*args, "--continue", *road])
        assert r.exit_code == 0 and "2 done, 4 skipped (an earlier job's), 0 failed" in r.output, r.output
        assert {n: (out / n).stat().st_mtime_ns for n in kept if n not in ("c01.nii.gz", "c04.nii.gz")} == {
            n: t for n, t in kept.items() if n not in ("c01.nii.gz", "c04.nii.gz")
        }
        (out / "c01.nii.gz").unlink()
        (out / "c04.nii.gz").unlink()


def test_a_missing_ray_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from leanseg.utils import connect_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LeansegError, match=r'--ray-address needs Ray: pip install "leanseg\[ray\]"'):
        connect_ray("auto")


def test_a_case_that_fails_is_named_and_the_others_are_done(ray_cluster, trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    inputs = _cohort(phantoms, tmp_path / "in", n=4)
    (inputs / "c02.nii.gz").write_bytes((inputs / "c02.nii.gz").read_bytes()[:300])  # truncated
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["predict", "-m", str(trained_run), "-i", str(inputs), "-o", str(out), "--ray-address", "local", "--threads", "1"]
    )
    assert r.exit_code == 1 and "3 done, 0 skipped (an earlier job's), 1 failed" in r.output, r.output
    assert "failed c02: " in r.output and "damaged or truncated" in r.output.replace("\n", " ")
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["c00.nii.gz", "c01.nii.gz", "c03.nii.gz"]
