"""Strategy search on hippocampus: the PPO controller against hill climbing, random search and TPE.

As the paper's first experiment, every trial fine-tunes one shared checkpoint: the residual U-Net
trained on folds 1-4 (fold 0 held out) with the "routine" defaults (every augmentation probability
0.5). A trial fine-tunes it for ``--trial-iterations`` with a candidate's augmentation probabilities
and learning rate and is rewarded with the Dice on the first ``--val-cases`` held-out cases. Every
controller gets the same number of trials per seed and starts from the routine defaults. Finally the
best strategy PPO found and the routine defaults are each trained in full (``--final-iterations``
from scratch) and evaluated on all 42 held-out cases.

Budgets are counted in iterations, not minutes, so that a busy machine changes how long the
benchmark takes but not what a trial learns (and trials are repeatable).

    python benchmarks/strategy_search/run.py [--trials 8] [--seeds 0 1] [--trial-iterations 150] [--final-iterations 3000]

Writes benchmarks/results/strategy_search.{json,md,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from leanseg.bench import benchmark_arguments, header_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "hippocampus_baseline.yaml"
CONTROLLERS = ("ppo", "hill", "hill-continuous", "random", "tpe")


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--pretrain-iterations", type=int, default=1500)
    ap.add_argument("--trial-iterations", type=int, default=150)
    ap.add_argument("--trials", type=int, help="trials per search (default: the config's search.strategy.trials)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS))
    ap.add_argument("--val-cases", type=int, default=20)
    ap.add_argument("--final-iterations", type=int, default=3000)
    ap.add_argument("--reuse", action="store_true", help="keep the pretrained checkpoint and finished searches in --work")
    benchmark_arguments(ap, "strategy_search", "/tmp/leanseg_bench/strategy_search")
    return ap


def main() -> None:
    args = arguments().parse_args()
    if args.smoke:  # PPO alone (the final training needs it; the other controllers run the same loop), two short trials
        args.pretrain_iterations, args.trial_iterations, args.trials, args.seeds = 3, 2, 2, [0]
        args.controllers = ["ppo"]
        args.val_cases, args.final_iterations = 2, 2

    from leanseg.bench import Results, results_folder, smoke_phantoms
    from leanseg.config import ExperimentConfig
    from leanseg.runfolder import RunFolder
    from leanseg.search.space import strategy_space
    from leanseg.training import train

    work = Path(args.work)
    data = str(smoke_phantoms(work)) if args.smoke else args.data
    space = strategy_space()
    routine = ExperimentConfig.load(CONFIG).with_overrides({"train.budget_minutes": None})
    routine = routine.with_overrides(space.values(space.routine(routine)))
    args.trials = args.trials or routine.search.strategy.trials
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "strategy_search",
        render,
        plot,
        threads=2,
        seed=args.seeds,
        split="fold 0 of a 5-fold split (split seed 12345) held out; "
        f"trial reward on its first {args.val_cases} cases, final figures on all of them",
        data=f"{data} (208 MSD hippocampus cases in the committed figures)",
        smoke=args.smoke,
        trials_per_search=args.trials,
        seeds=args.seeds,
        trial_iterations=args.trial_iterations,
        space=space.to_list(),
    )
    t0 = time.time()
    print("1/3 shared checkpoint (routine defaults)", flush=True)
    pre = work / "pretrain"
    if not (args.reuse and (pre / "checkpoint_final.pt").is_file()):
        train(data, pre, routine.with_overrides({"train.iterations": args.pretrain_iterations}), fold=0, resume=False)
    results["pretrain"] = RunFolder(pre).summary()

    print("2/3 searches", flush=True)
    trial_cfg = routine.with_overrides(
        {
            "train.iterations": args.trial_iterations,
            "train.init_checkpoint": str((pre / "checkpoint_final.pt").resolve()),
            "train.val_max_cases": args.val_cases,
            "train.val_every": 10**6,
            "train.checkpoint_every": 10**6,
        }
    )
    run_searches(results, data, work, trial_cfg, space, args)
    results["search_minutes"] = (time.time() - t0) / 60
    if args.final_iterations > 0 and "ppo" in results["searches"]:
        print("3/3 full training: routine defaults against PPO's best strategy", flush=True)
        final_training(results, data, work, routine, space, args.final_iterations)
    results.write(with_plot=True)
    print(results.markdown())


def run_searches(results, data: str, work: Path, trial_cfg, space, args: argparse.Namespace) -> None:
    """Every controller, once per seed, with the same number of trials; the rewards in trial order and the best."""
    from leanseg.search.strategy import search_strategy

    results["searches"] = {}
    for name in args.controllers:
        results["searches"][name] = {}
        for seed in args.seeds:
            res = search_strategy(
                data, work / f"{name}_seed{seed}", name, args.trials, 1, base=trial_cfg, space=space, seed=seed, threads_per_trial=2
            )
            rewards = [t["reward"] if t["status"] == "done" else None for t in res.trials]
            results["searches"][name][seed] = {"rewards": rewards, "best": res.best, "failed": sum(r is None for r in rewards)}
            print(name, seed, [None if r is None else round(r, 4) for r in rewards], flush=True)
            results.write()


def final_training(results, data: str, work: Path, routine, space, iterations: int) -> None:
    """The routine defaults and PPO's best strategy, each trained from scratch for ``iterations``."""
    from leanseg.training import train

    best = max((s["best"] for s in results["searches"]["ppo"].values() if s["best"]), key=lambda b: b["reward"])
    found = routine.with_overrides(space.values(best["unit"]))
    results["final"] = {"strategy": space.values(best["unit"]), "iterations": iterations}
    for label, cfg in (("routine", routine), ("ppo_best", found)):
        cfg = cfg.with_overrides({"train.iterations": iterations, "train.val_max_cases": None})
        r = train(data, work / f"final_{label}", cfg, fold=0, resume=False, show_progress=True)
        results["final"][label] = {"iterations": r.iterations, **r.val}
        results.write()


def best_so_far(rewards: list) -> list[float]:
    cur, out = float("-inf"), []
    for r in rewards:
        cur = max(cur, r if r is not None else float("-inf"))
        out.append(cur)
    return out


def render(r: dict) -> str:
    lines = [
        "# Strategy search: PPO controller against its baselines",
        "",
        *header_markdown(r),
        f"{r['trials_per_search']} trials per search, seeds {r['seeds']}, each trial fine-tunes the shared "
        f"checkpoint for {r['trial_iterations']} iterations. Trial 0 of every search is the routine defaults.",
        "",
    ]
    if "pretrain" in r:
        p = r["pretrain"]
        lines += [f"Shared checkpoint: {p['iterations']} iterations, Dice {p['val_dice']:.4f} on {p['val_cases']} held-out cases.", ""]
    lines += ["| controller | best Dice per seed | mean best | failed trials |", "|---|---|---|---|"]
    for name, seeds in r.get("searches", {}).items():
        bests = [s["best"]["reward"] for s in seeds.values() if s["best"]]
        lines.append(
            f"| {name} | {', '.join(f'{b:.4f}' for b in bests)} | **{np.mean(bests):.4f}** | {sum(s['failed'] for s in seeds.values())} |"
        )
    lines.append("")
    if "search_minutes" in r:
        lines += [f"All searches together: {r['search_minutes']:.1f} min.", ""]
    if "final" in r and "ppo_best" in r["final"]:
        f = r["final"]
        lines += [
            f"## Full training ({f['iterations']} iterations from scratch, all held-out cases)",
            "",
            "| strategy | iterations | Dice |",
            "|---|---|---|",
            f"| routine defaults (probabilities 0.5) | {f['routine']['iterations']} | {f['routine']['val_dice']:.4f} |",
            f"| PPO's best | {f['ppo_best']['iterations']} | {f['ppo_best']['val_dice']:.4f} |",
            "",
            "PPO's best strategy: " + ", ".join(f"{k}={v:.3g}" for k, v in f["strategy"].items()),
            "",
        ]
    lines += ["![best validation Dice against trial count](strategy_search.png)", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, seeds) in enumerate(r["searches"].items()):
        curves = np.array([best_so_far(s["rewards"]) for s in seeds.values()])
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, curves.mean(0), "-o", color=f"C{i}", label=name, ms=3)
        if len(curves) > 1:
            ax.fill_between(x, curves.min(0), curves.max(0), color=f"C{i}", alpha=0.15)
    ax.set(xlabel="trials", ylabel="best validation Dice so far", title="mean over seeds (band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
