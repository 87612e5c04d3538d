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


def test_saved_for_backward_counts_each_storage_once() -> None:
    import torch

    from leanseg.bench import saved_for_backward

    lin = torch.nn.Linear(256, 256, bias=False)
    x = torch.randn(64, 256)
    one, _ = saved_for_backward(lambda: lin(x))
    assert one == x.nbytes  # the input, kept to form the weight's gradient
    two, _ = saved_for_backward(lambda: lin(x).sum() + lin(x[:32]).sum())  # the same storage saved twice, through a view
    assert two == x.nbytes
    other, _ = saved_for_backward(lambda: lin(x).sum() + lin(x.clone()).sum())  # a copy is memory of its own
    assert other == 2 * x.nbytes
    conv = torch.nn.Conv3d(2, 4, 3, bias=False)
    v = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    with_weights, _ = saved_for_backward(lambda: conv(v))  # the weight is saved for the input's gradient
    assert with_weights == v.nbytes + conv.weight.nbytes
    assert saved_for_backward(lambda: conv(v), parameters=False)[0] == v.nbytes
    with torch.no_grad():
        assert saved_for_backward(lambda: lin(x))[0] == 0


def test_results_keep_stamps_sections_and_smoke_writes_elsewhere(tmp_path: Path) -> None:
    import argparse
    import json

    from leanseg.bench import Results, benchmark_arguments, results_folder

    def render(r: dict) -> str:
        return f"# {r['name']}: {r.get('part')}"

    first = Results(tmp_path, "b", "bench", render, threads=1, seed=0, split="fold 0", data="phantoms")
    first["part"] = {"a": 1}
    first.write()
    again = Results(tmp_path, "b", "bench", render, threads=1, seed=0, split="fold 0", data="phantoms")
    assert again.keep("part") and not again.keep("missing")
    again.write()
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["part"] == {"a": 1} and saved["kept"]["part"].startswith("commit ")
    assert (tmp_path / "b.md").read_text() == "# b: {'a': 1}"
    third = Results(tmp_path, "b", "bench", render, threads=1, seed=0, split="fold 0", data="phantoms")
    assert third.keep("part") and third["kept"]["part"] == saved["kept"]["part"]  # the stamp of the call that measured it
    third["sub"] = {"x": 1, "y": 2}
    third.write()
    on_disk = json.loads((tmp_path / "b.json").read_text())
    (tmp_path / "b.json").write_text(json.dumps({**on_disk, "kept": {"part": "commit old, then"}}))
    fourth = Results(tmp_path, "b", "bench", render, threads=1, seed=0, split="fold 0", data="phantoms")
    assert fourth.keep("part", "a") and fourth["kept"]["part/a"] == "commit old, then"  # kept whole before, in part now
    assert fourth.keep("sub", "x") and fourth.keep("sub", "y")
    fourth.put("sub", "y", 3)  # measured again: its stamp goes, the other part's stays
    assert fourth["sub"] == {"x": 1, "y": 3} and "sub/x" in fourth["kept"] and "sub/y" not in fourth["kept"]
    ap = argparse.ArgumentParser()
    benchmark_arguments(ap, "b", str(tmp_path / "work"))
    committed = tmp_path / "committed"
    assert results_folder(ap.parse_args([]), committed) == committed
    assert results_folder(ap.parse_args(["--smoke"]), committed) == tmp_path / "work" / "results"
    assert results_folder(ap.parse_args(["--smoke", "--results", str(tmp_path / "r")]), committed) == tmp_path / "r"


def test_results_keep_cells_of_the_same_settings_and_refuse_another_machines(tmp_path: Path) -> None:
    import json

    from leanseg.bench import Results

    def results(minutes: float) -> Results:
        return Results(tmp_path, "c", "bench", str, threads=1, seed=0, split="fold 0", data="phantoms", minutes=minutes, cells={})

    first = results(15)
    first["cells"]["a/fold1"] = {"dice": 0.8, "cpu": first["machine"]["cpu"]}
    first.write()
    same = results(15)
    same.keep_cells("cells", same=("minutes",))
    assert same["cells"] == {"a/fold1": first["cells"]["a/fold1"]} and "cells/a/fold1" in same["kept"]
    shorter = results(5)
    shorter.keep_cells("cells", same=("minutes",))
    assert shorter["cells"] == {}  # another budget measured something else
    saved = json.loads((tmp_path / "c.json").read_text())
    saved["cells"]["a/fold1"]["cpu"] = "Another CPU"
    (tmp_path / "c.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="trained on Another CPU.*pass --name NEW"):
        results(15).keep_cells("cells", same=("minutes",))


def test_cells_of_an_iteration_budget_are_kept_from_another_machine(tmp_path: Path) -> None:
    import json

    from leanseg.bench import Results

    def results() -> Results:
        return Results(tmp_path, "i", "bench", str, threads=1, seed=0, split="fold 0", data="phantoms", iterations=1600, cells={})

    first = results()
    first["cells"]["a/seed0"] = {"dice": 0.8, "cpu": "Another CPU"}
    first.write()
    with pytest.raises(SystemExit, match="Another CPU"):
        results().keep_cells("cells", same=("iterations",))
    later = results()
    later.keep_cells("cells", same=("iterations",), same_cpu=False)  # the same steps buy the same training anywhere
    assert later["cells"] == {"a/seed0": {"dice": 0.8, "cpu": "Another CPU"}}
    assert json.loads((tmp_path / "i.json").read_text())["cells"] == later["cells"]


def test_cpu_name_tells_apart_cpus_of_one_model_name() -> None:
    from leanseg.bench import cpu_name

    def info(family: str, model: str) -> str:
        return f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\n"

    zen4, older = cpu_name(info("25", "17")), cpu_name(info("23", "49"))
    assert zen4 == "AMD EPYC (family 25 model 17)" and older.startswith("AMD EPYC") and zen4 != older
    assert cpu_name("model name\t: Some CPU\n") == "Some CPU"  # no family or model given: the name alone
