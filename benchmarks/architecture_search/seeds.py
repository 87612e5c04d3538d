"""The architecture search over seeds: one table and the paper's Figure 3 from the per-seed results files of run.py.

Each seed's file (``run.py --seed S --name STEM``) holds its ENAS search, its random search and its base U-Net
trained for the ENAS search's minutes; this script checks that they ran the same search apart from the seed and
writes the table the targets are judged by: the chosen child without retraining against the base U-Net (mean over
seeds), ENAS against random search, and the ENAS search's minutes against the 90-minute limit.

    python benchmarks/architecture_search/seeds.py --runs architecture_search_cross architecture_search_cross_seed1 \
        architecture_search_cross_seed2

Writes benchmarks/results/architecture_search.{json,md,png} (``--name`` for another stem).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINUTES_LIMIT = 90
# the settings every seed's file must share: the same search apart from the seed
SAME = (
    "loop",
    "episodes",
    "children_per_episode",
    "scored_children_per_episode",
    "child_iterations",
    "search_space",
    "num_stages",
    "shared_weights",
    "final_iterations",
)


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", help="run.py results stems, one per seed (read from --runs-folder)")
    ap.add_argument("--runs-folder", default=str(RESULTS), help="where run.py wrote them")
    benchmark_arguments(ap, "architecture_search", "/tmp/leanseg_bench/architecture_search_seeds")
    return ap


def smoke_runs(work: Path) -> tuple[Path, list[str]]:
    """run.py's smoke run at one seed, written under WORK/seeds: the file a smoke summary reads (the summary over
    several seeds is tested on made-up files, tests/test_benchmarks.py)."""
    folder = work / "seeds"
    cmd = [sys.executable, str(HERE / "run.py"), "--smoke", "--seed", "0", "--name", "seed0"]
    subprocess.run([*cmd, "--work", str(work / "seed0"), "--results", str(folder)], check=True)
    return folder, ["seed0"]


def read_runs(folder: Path, stems: list[str]) -> list[dict[str, Any]]:
    """The per-seed files, refused with a sentence where one is missing or ran another search."""
    runs = []
    for stem in stems:
        path = folder / f"{stem}.json"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: run benchmarks/architecture_search/run.py --name {stem} first.")
        runs.append(json.loads(path.read_text()))
    for r, stem in zip(runs[1:], stems[1:], strict=True):
        differ = [k for k in SAME if r.get(k) != runs[0].get(k)]
        if differ:
            raise SystemExit(
                f"{folder / stem}.json ran another search than {stems[0]}.json ({', '.join(differ)}): pass files of one search."
            )
    return runs


def seed_row(r: dict[str, Any]) -> dict[str, Any]:
    """One seed's figures: minutes and Dice of both searches and of the base U-Net (None where that part did not run)."""
    s, b = r.get("searches", {}), r.get("base_unet")

    def part(name: str) -> dict[str, Any] | None:
        if name not in s:
            return None
        x = s[name]
        return {
            "minutes": x["minutes"],
            "threads": x.get("threads", 2),
            "best_child_reward": x["best_child_reward"],
            "chosen_without_retraining": x.get("chosen_val_dice_shared_weights", x["chosen_val_dice"]),
            "chosen_fine_tuned": x["chosen_val_dice"] if r.get("final_iterations") else None,
            "entropy": [e["entropy"] for e in x["episodes"]] if name == "enas" else None,
            "mean_reward": [e["mean_reward"] for e in x["episodes"]],
        }

    base = None if b is None else {k: b[k] for k in ("iterations", "minutes", "wall_minutes", "threads", "val_dice")}
    return {
        "seed": r["seed"],
        "commit": r["machine"]["leanseg_commit"],
        "cpu": r["machine"]["cpu"],
        "enas": part("enas"),
        "random": part("random"),
        "base_unet": base,
    }


def mean_sd(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds where each part ran, and the three targets (None where a part is missing at every seed)."""

    def over(part: str, key: str) -> dict[str, Any] | None:
        return mean_sd([row[part][key] for row in rows if row[part] is not None])

    means = {
        "enas_minutes": over("enas", "minutes"),
        "enas_without_retraining": over("enas", "chosen_without_retraining"),
        "random_without_retraining": over("random", "chosen_without_retraining"),
        "base_unet": over("base_unet", "val_dice"),
    }
    e, r, b = (means[k] for k in ("enas_without_retraining", "random_without_retraining", "base_unet"))
    paired = [row for row in rows if row["enas"] and row["random"]]
    enas_minutes = [row["enas"]["minutes"] for row in rows if row["enas"]]
    return {
        "means": means,
        "targets": {
            "child_without_retraining_at_least_base_unet": None if not (e and b) else e["mean"] >= b["mean"],
            "enas_at_least_random": None if not (e and r) else e["mean"] >= r["mean"],
            "enas_wins_per_seed": f"{sum(x['enas']['chosen_without_retraining'] >= x['random']['chosen_without_retraining'] for x in paired)} of {len(paired)}",
            f"search_within_{MINUTES_LIMIT}_minutes": max(enas_minutes) <= MINUTES_LIMIT if enas_minutes else None,
        },
    }


def main() -> None:
    args = arguments().parse_args()
    from leanseg.bench import Results, results_folder

    work = Path(args.work)
    folder, stems = smoke_runs(work) if args.smoke else (Path(args.runs_folder), args.runs)
    if not stems:
        raise SystemExit("Pass --runs STEM [STEM ...]: run.py's results files, one per seed.")
    runs = read_runs(folder, stems)
    rows = [seed_row(r) for r in runs]
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "architecture_search_seeds",
        render,
        plot,
        threads=runs[0]["machine"]["threads"],
        seed=[r["seed"] for r in runs],
        split=runs[0]["split"],
        data=runs[0]["data"],
        smoke=args.smoke,
        runs=stems,
        **{k: runs[0].get(k) for k in SAME},
        seeds=rows,
        **summary(rows),
    )
    results.write(with_plot=True)
    print(results.markdown())


def cell(x: dict[str, Any] | None, key: str, minutes: bool = False) -> str:
    if x is None:
        return "not run"
    return f"{x[key]:.4f}" + (f" ({x['minutes']:.1f} min, {x['threads']} thr.)" if minutes else "")


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Resource-optimised architecture search over seeds (ENAS, random search, base U-Net)",
        "",
        *header_markdown(r),
        f"Per-seed files: {', '.join(f'[{s}]({s}.md)' for s in r['runs'])} (each names its own commit and machine). "
        f"{r['episodes']} episodes x {r['children_per_episode']} children, {r['child_iterations']} iterations of the shared "
        f"weights per child ({r['shared_weights']}); {r['scored_children_per_episode']} children per episode scored with the "
        f"weights fixed; {r['num_stages']} encoder stages; space: {r['search_space']}.",
        "",
        "| seed | ENAS chosen child, no retraining | ENAS best scored child (val subset) | random search chosen child, no retraining "
        "| base U-Net, ENAS's minutes (iterations) |",
        "|---|---|---|---|---|",
    ]
    for row in r["seeds"]:
        b = row["base_unet"]
        base = "not run" if b is None else f"{b['val_dice']:.4f} ({b['iterations']})"
        lines.append(
            f"| {row['seed']} | {cell(row['enas'], 'chosen_without_retraining', True)} | {cell(row['enas'], 'best_child_reward')} "
            f"| {cell(row['random'], 'chosen_without_retraining', True)} | {base} |"
        )
    m = r["means"]

    def ms(x: dict[str, Any] | None, digits: int = 4) -> str:
        return "" if x is None else f"{x['mean']:.{digits}f} ± {x['sd']:.{digits}f} (n={x['n']})"

    def met(verdict: bool | None) -> str:
        return {True: "met", False: "missed", None: "not judged (a part did not run)"}[verdict]

    lines.append(f"| mean ± sd | {ms(m['enas_without_retraining'])} | | {ms(m['random_without_retraining'])} | {ms(m['base_unet'])} |")
    t = r["targets"]
    lines += [
        "",
        "Chosen children and the base U-Net are scored on all held-out cases of the fold; minutes are wall-clock, "
        "comparable only for searches that ran alone at 2 threads; the base U-Net's budget is the ENAS minutes in "
        "iterations at its idle rate.",
        "",
        "| target | met |",
        "|---|---|",
        f"| chosen child without retraining >= base U-Net at equal minutes (mean) | {met(t['child_without_retraining_at_least_base_unet'])} |",
        f"| ENAS >= random search (mean; per seed: ENAS ahead at {t['enas_wins_per_seed']}) | {met(t['enas_at_least_random'])} |",
        f"| ENAS search within {MINUTES_LIMIT} minutes on 2 cores (every seed; mean {ms(m['enas_minutes'], 1)} min) "
        f"| {met(t[f'search_within_{MINUTES_LIMIT}_minutes'])} |",
        "",
        f"![mean child Dice and controller entropy per episode, every seed]({r['name']}.png)",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """The paper's Figure 3 for every seed: mean scored-child Dice and the controller's entropy per episode."""
    from leanseg.bench import panels, save_figure

    fig, (a, b) = panels()
    for i, row in enumerate(r["seeds"]):
        for name, style in (("enas", "o-"), ("random", "s--")):
            if row[name]:
                y = row[name]["mean_reward"]
                a.plot(range(1, len(y) + 1), y, style, color=f"C{i}", label=f"seed {row['seed']}: {name}")
        if row["enas"]:
            y = row["enas"]["entropy"]
            b.plot(range(1, len(y) + 1), y, "^-", color=f"C{i}", label=f"seed {row['seed']}: ENAS controller")
    if r["means"]["base_unet"]:
        a.axhline(r["means"]["base_unet"]["mean"], color="k", ls=":", label="base U-Net, ENAS's minutes (mean)")
    a.set(xlabel="episode", ylabel="mean scored-child Dice (val subset)")
    b.set(xlabel="episode", ylabel="controller entropy (nats)")
    save_figure(fig, (a, b), path)


if __name__ == "__main__":
    main()
