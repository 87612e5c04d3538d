"""Every benchmark script has a ``--smoke`` run on phantoms, and that run works: a refactor cannot silently break one.

The smoke runs are ``slow`` (about 10-40 s each); the check that each script offers ``--smoke`` is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*/*.py") if 'if __name__ == "__main__":' in p.read_text())


def test_benchmarks_are_found() -> None:
    assert {p.parent.name for p in SCRIPTS} >= {
        "hippocampus_baseline",
        "autopath",
        "lowres",
        "invertible",
        "strategy_search",
        "architecture_search",
        "base_recipe",
        "throughput",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_benchmark_offers_a_smoke_run_and_a_results_folder(script: Path) -> None:
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--smoke" in out.stdout and "--results" in out.stdout and "--work" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_benchmark_smoke_run_writes_its_results_and_leaves_the_committed_ones(script: Path, tmp_path: Path) -> None:
    committed = {p: p.stat().st_mtime_ns for p in (ROOT / "benchmarks" / "results").glob("*")}
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, str(script), "--smoke", "--work", str(tmp_path / "work")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    written = list((tmp_path / "work" / "results").glob("*.json"))
    assert len(written) == 1, written
    r = json.loads(written[0].read_text())
    assert r["smoke"] is True and r["machine"]["threads"] >= 1 and r["machine"]["leanseg_commit"] is not None
    assert {"seed", "split", "data", "benchmark"} <= set(r)
    md = written[0].with_suffix(".md").read_text()
    assert md.startswith("# ") and "Smoke run" in md and "commit" in md
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "benchmarks" / "results").glob("*")} == committed


def _benchmark_module(script: str):
    """A benchmark script (``benchmarks/<script>``) loaded as a module, for tests of its pure functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(script.replace("/", "_").removesuffix(".py"), ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _invertible_benchmark():
    return _benchmark_module("invertible/run.py")


def _dice_cells(arms: dict[str, list[float]]) -> dict:
    return {f"{m}/base recipe/seed{s}": {"dice": {"dice_mean": d}} for m, scores in arms.items() for s, d in enumerate(scores)}


def test_invertible_target_judges_learned_sampling_against_the_plain_spread_held_bytes_and_step_time() -> None:
    inv = _invertible_benchmark()
    plain = {"saved_mib": 200.0, "step_seconds": 1.0}
    steps = {"hippocampus": {"models": {"plain U-Net": plain, "Fully-InvRes learned": {"saved_mib": 50.0, "step_seconds": 1.4}}}}
    arms = {"plain U-Net": [0.853, 0.861, 0.857], "Fully-InvRes learned": [0.852, 0.856, 0.855]}
    line = inv.target_lines({"dice": _dice_cells(arms), "steps": steps})[0]
    assert line.startswith("Target (met): Fully-InvRes learned 0.8543") and "0.8530-0.8610" in line and "0.25x" in line and "1.40x" in line
    arms["Fully-InvRes learned"] = [0.850, 0.852, 0.855]  # mean 0.8523, under the plain U-Net's worst seed
    assert inv.target_lines({"dice": _dice_cells(arms), "steps": steps})[0].startswith("Target (missed)")
    arms["Fully-InvRes learned"] = [0.86, 0.86, 0.86]
    held = {"hippocampus": {"models": {"plain U-Net": plain, "Fully-InvRes learned": {"saved_mib": 70.0, "step_seconds": 1.0}}}}
    assert inv.target_lines({"dice": _dice_cells(arms), "steps": held})[0].startswith("Target (missed)")  # 0.35x held
    arms["Fully-InvRes learned"] = [0.86, 0.86]  # two of the plain U-Net's three seeds: no verdict
    assert inv.target_lines({"dice": _dice_cells(arms), "steps": steps})[0].startswith("Target not judged")


def test_invertible_vae_effect_compares_the_seeds_both_arms_have() -> None:
    inv = _invertible_benchmark()
    cells = _dice_cells(
        {"plain U-Net": [0.85, 0.87, 0.86], "plain U-Net + VAE": [0.86], "Fully-InvRes": [0.84, 0.84], "Fully-InvRes + VAE": [0.90, 0.91]}
    )
    rows = [line for line in inv.vae_lines({"dice": cells}) if line.startswith("| plain") or line.startswith("| Fully")]
    assert rows[0] == "| plain U-Net | base recipe | 1 | +0.0100 | 0.0000 | one seed: not judged |"  # seed 0 only, not the 3-seed mean
    assert rows[1].startswith("| Fully-InvRes | base recipe | 2 | +0.0650 |") and rows[1].endswith("| gain |")


def _seeds_benchmark():
    return _benchmark_module("architecture_search/seeds.py")


def _nas_seed(seed: int, enas: float, random: float, base: float | None, enas_minutes: float = 30.0) -> dict:
    def search(dice: float, minutes: float) -> dict:
        episodes = [{"episode": 0, "mean_reward": 0.1, "best_reward": 0.2, "entropy": 39.0}]
        return {
            "minutes": minutes,
            "threads": 2,
            "best_child_reward": dice + 0.01,
            "chosen_val_dice": dice,
            "chosen_val_dice_shared_weights": dice,
            "episodes": episodes,
        }

    r = {"seed": seed, "final_iterations": 0, "machine": {"leanseg_commit": "abc", "cpu": "cpu"}}
    r["searches"] = {"enas": search(enas, enas_minutes), "random": search(random, 25.0)}
    if base is not None:
        r["base_unet"] = {"iterations": 9000, "minutes": enas_minutes, "wall_minutes": 31.0, "threads": 1, "val_dice": base}
    return r


def test_nas_seeds_summary_judges_each_target_on_the_seeds_that_ran_it() -> None:
    nas = _seeds_benchmark()
    rows = [
        nas.seed_row(_nas_seed(0, 0.64, 0.59, 0.87)),
        nas.seed_row(_nas_seed(1, 0.60, 0.62, 0.88)),
        nas.seed_row(_nas_seed(2, 0.62, 0.58, None, 95.0)),
    ]
    s = nas.summary(rows)
    assert s["means"]["base_unet"]["n"] == 2 and abs(s["means"]["base_unet"]["mean"] - 0.875) < 1e-9
    assert abs(s["means"]["enas_without_retraining"]["mean"] - 0.62) < 1e-9 and s["means"]["enas_without_retraining"]["n"] == 3
    t = s["targets"]
    assert t["child_without_retraining_at_least_base_unet"] is False and t["enas_at_least_random"] is True
    assert t["enas_wins_per_seed"] == "2 of 3" and t["search_within_90_minutes"] is False  # seed 2's 95 minutes


def test_nas_seeds_refuses_files_of_another_search(tmp_path: Path) -> None:
    nas = _seeds_benchmark()
    for stem, episodes in (("a", 8), ("b", 16)):
        (tmp_path / f"{stem}.json").write_text(json.dumps({**_nas_seed(0, 0.6, 0.6, 0.8), "episodes": episodes}))
    with pytest.raises(SystemExit, match="b.json ran another search than a.json \\(episodes\\)"):
        nas.read_runs(tmp_path, ["a", "b"])
    with pytest.raises(SystemExit, match="c.json does not exist"):
        nas.read_runs(tmp_path, ["a", "c"])


def _lowres_entry(model: str, seconds: float, recall: float, objects: int = 100) -> dict:
    quality = {"object_recall": recall, "objects": objects, "froc_luna16": recall, "froc_avg_recall_0_5": recall}
    return {"model": model, "threads": {"2": {"seconds": {"mean": seconds}}}, "quality": quality}


def test_lowres_fair_unet_is_the_fastest_overlap_within_one_object_and_speed_is_judged_at_both_precisions() -> None:
    lowres = _benchmark_module("lowres/run.py")
    entries = {
        "U-Net, overlap 0.5, bf16": _lowres_entry("unet", 60.0, 0.80),
        "U-Net, overlap 0.25, bf16": _lowres_entry("unet", 20.0, 0.79),  # one object fewer: still fair
        "U-Net, tiled (overlap 0), bf16": _lowres_entry("unet", 10.0, 0.78),  # two fewer: not
        "LowRes": _lowres_entry("lowres", 2.0, 0.77),
        "LowRes, bf16": _lowres_entry("lowres", 0.9, 0.77),
    }
    assert lowres.fair_unet(entries) == "U-Net, overlap 0.25, bf16"
    lines = lowres.targets({"entries": entries})
    assert lines[0].startswith("- LowRes, bf16 22.2x faster") and lines[0].endswith("met.")
    assert lines[1].startswith("- LowRes 10.0x faster") and lines[1].endswith("missed.")
    assert "- LowRes recall 0.770 = 0.97 of the U-Net's: target 0.95, met." in lines
