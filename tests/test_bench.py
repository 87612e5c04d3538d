"""Benchmark helpers: a child process reports its own peak memory, not its parent's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leanseg.bench import peak_rss_mib, run_isolated


def _allocate(mib: int) -> int:
    a = np.ones(mib * 2**20, dtype=np.uint8)
    return int(a[::4096].sum())


def test_isolated_peak_memory_is_the_childs_own() -> None:
    big = np.ones(400 * 2**20, dtype=np.uint8)  # the parent peaks above 400 MiB
    assert peak_rss_mib() > 400
    _, small = run_isolated(_allocate, 1)
    _, large = run_isolated(_allocate, 200)
    assert small < 300, "the child inherited the parent's peak"
    assert 150 < large - small < 260
    del big


def test_code_commit_marks_uncommitted_code_but_not_results(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from leanseg.bench import code_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "src").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert code_commit(tmp_path) == head
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"new": 1}')
    assert code_commit(tmp_path) == head  # a rewritten results file is not a code change
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    assert code_commit(tmp_path) == f"{head} + uncommitted changes"
    assert code_commit(tmp_path / "not_a_repo") == ""
