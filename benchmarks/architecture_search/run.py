"""Resource-optimised NAS on hippocampus: the ENAS controller against random search over the same
space with the same budget, and against the base residual U-Net trained for the same total time.

Data: the 208 MSD hippocampus cases, fold 0 of the 5-fold split held out (42 cases). Children are
scored on the first ``--val-cases`` held-out cases; the chosen child of each search (ENAS: the
controller's most probable architecture; random: the best-scored child) is then evaluated, without
retraining, on all 42. The base U-Net (``configs/hippocampus_baseline.yaml``) trains for as many
minutes as the ENAS search took.

    python benchmarks/architecture_search/run.py [--episodes 12] [--children 20] [--child-iterations 20]

Writes benchmarks/results/architecture_search.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--children", type=int, default=20)
    ap.add_argument("--child-iterations", type=int, default=20)
    ap.add_argument("--val-cases", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--searches", nargs="+", default=["enas", "random"], choices=["enas", "random"])
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--work", default="/tmp/leanseg_bench/architecture_search")
    args = ap.parse_args()

    from leanseg.bench import machine_info, write_results
    from leanseg.config import ExperimentConfig
    from leanseg.search.nas import episode_stats, search_architecture
    from leanseg.train import train

    work = Path(args.work)
    cfg = ExperimentConfig.load(ROOT / "configs" / "hippocampus_baseline.yaml").with_overrides({"train.budget_minutes": None})
    out: dict[str, Any] = {
        "benchmark": "architecture_search",
        "machine": machine_info(cfg.train.num_threads),
        "data": "Task04_Hippocampus, 208 cases; fold 0 of a 5-fold split (split seed 12345) held out (42 cases); "
        f"children scored on its first {args.val_cases}, chosen children and the base U-Net on all 42",
        "episodes": args.episodes,
        "children_per_episode": args.children,
        "child_iterations": args.child_iterations,
        "seed": args.seed,
        "searches": {},
    }
    for name in args.searches:
        t0 = time.time()
        res = search_architecture(
            args.data,
            work / name,
            cfg,
            name,
            args.episodes,
            args.children,
            args.child_iterations,
            args.val_cases,
            seed=args.seed,
            progress=lambda row, done, total, name=name: print(f"{name} {done}/{total}: Dice {row['reward']:.4f}", flush=True),
        )
        out["searches"][name] = {
            "minutes": (time.time() - t0) / 60,
            "episodes": episode_stats(res.history),
            "chosen": {k: list(v) if isinstance(v, tuple) else v for k, v in res.arch.items()},
            "chosen_val_dice": res.val_dice,
            "best_child_reward": max(r["reward"] for r in res.history),
        }
        write_results(RESULTS / "architecture_search.json", out, render(out))
    if not args.skip_baseline and "enas" in out["searches"]:
        minutes = out["searches"]["enas"]["minutes"]
        r = train(
            args.data,
            work / "base_unet",
            cfg.with_overrides({"train.budget_minutes": minutes, "train.val_max_cases": None}),
            fold=0,
            resume=False,
        )
        out["base_unet"] = {"minutes": minutes, "iterations": r.iterations, "val_dice": r.val["val_dice"]}
    plot(out, RESULTS / "architecture_search.png")
    write_results(RESULTS / "architecture_search.json", out, render(out))
    print(render(out))


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Resource-optimised architecture search (ENAS controller, shared weights)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} cores; {m['threads']} threads; torch {m['torch']}, MONAI {m['monai']}; "
        f"commit {m['leanseg_commit']}; {m['date']}.",
        f"Data: {r['data']}. {r['episodes']} episodes x {r['children_per_episode']} children, {r['child_iterations']} "
        f"iterations of the shared weights per child, seed {r['seed']}.",
        "",
        "| | minutes | best child (val subset) | chosen child, all 42 cases, no retraining |",
        "|---|---|---|---|",
    ]
    for name, s in r["searches"].items():
        lines.append(f"| {name} search | {s['minutes']:.1f} | {s['best_child_reward']:.4f} | {s['chosen_val_dice']:.4f} |")
    if "base_unet" in r:
        b = r["base_unet"]
        lines.append(f"| base residual U-Net, same time ({b['iterations']} iterations) | {b['minutes']:.1f} | | {b['val_dice']:.4f} |")
    for name, s in r["searches"].items():
        lines += ["", f"{name}: chosen architecture `{json.dumps(s['chosen'])}`"]
    lines += ["", "![reward and entropy per episode](architecture_search.png)", ""]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, s) in enumerate(r["searches"].items()):
        x = [e["episode"] + 1 for e in s["episodes"]]
        a.plot(x, [e["mean_reward"] for e in s["episodes"]], "o-", color=f"C{i}", label=f"{name}: mean child Dice")
        a.plot(x, [e["best_reward"] for e in s["episodes"]], "s--", color=f"C{i}", alpha=0.6, label=f"{name}: best child Dice")
        if name == "enas":
            b.plot(x, [e["entropy"] for e in s["episodes"]], "^-", color=f"C{i}", label="ENAS controller entropy")
    if "base_unet" in r:
        a.axhline(r["base_unet"]["val_dice"], color="k", ls=":", label="base U-Net, same time (42 cases)")
    a.set(xlabel="episode", ylabel="validation Dice")
    b.set(xlabel="episode", ylabel="entropy (nats)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
