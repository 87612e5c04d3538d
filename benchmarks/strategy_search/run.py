"""Strategy search on hippocampus as Yang et al. (MICCAI 2019) ran it: PPO against hill climbing, random search and TPE.

The protocol (issue 28):

* **Selection is disjoint from reporting.** Fold 0 of the 5-fold split reports the winner and takes no part in
  the search: the start checkpoint and every trial train on the other 166 cases minus inner fold 0
  (``data.inner_fold``), and a trial's reward is the Dice on inner fold 0 (or its first ``--val-cases``).
* **The paper's start.** One checkpoint trained without augmentation (every probability 0) for
  ``--pretrain-iterations``; every trial fine-tunes it for ``--trial-iterations`` with a candidate strategy.
* **The routine strategy** is every probability 0.5 at the paper's learning rate (``--routine-lr``, 1e-4), and
  it is trial 0 of every search.
* **Two searches**: ``augment`` (the probabilities; the learning rate held at the routine's) and
  ``augment_lr`` (the probabilities and the learning rate, 1e-4 to 1e-2 on a log scale).
* **Controllers at equal trials and seeds**: ppo, hill, hill-continuous, random, tpe.

Phases (``--phases``), each kept in the results file so that the benchmark runs in parts:

1. ``start``: the start checkpoint (trained for the later phases too, where ``--work`` does not hold it);
2. ``noise``: the routine candidate fine-tuned ``--noise-repeats`` times with different seeds, and
   ``--noise-candidates`` random candidates once each, at each of ``--noise-lengths``: the reward's noise
   against the spread between strategies, which chooses the trial length;
   ``none``: the start fine-tuned without augmentation at each of ``--noise-lengths`` (seed 0): what the reward
   says of augmentation at that length;
3. ``search``: every search type x controller x seed (journaled: an interrupted search resumes);
4. ``final``: the best strategy of each search type, and the routine, trained from scratch for
   ``--final-iterations`` with ``--final-seeds`` seeds, scored on all 42 cases of fold 0.

Budgets are iterations, not minutes, so a busy machine changes how long the benchmark takes, not what a
trial learns (and trials repeat exactly).

    python benchmarks/strategy_search/run.py --phases start noise      # first: choose --trial-iterations
    python benchmarks/strategy_search/run.py --phases search final --trial-iterations N --trials 64

Writes benchmarks/results/strategy_search.{json,md,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.bench import benchmark_arguments, header_markdown, machine_info

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "hippocampus_baseline.yaml"
CONTROLLERS = ("ppo", "hill", "hill-continuous", "random", "tpe")
SEARCHES = ("augment", "augment_lr")
PHASES = ("start", "noise", "none", "search", "final")
START = ("pretrain_iterations", "routine_lr")  # what the start, the noise and the final trainings depend on
SAME = (*START, "trial_iterations", "val_cases")  # and the searches


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    ap.add_argument("--pretrain-iterations", type=int, default=600, help="the start checkpoint's (600: inner-fold Dice 0.874)")
    ap.add_argument("--routine-lr", type=float, default=1e-4, help="the routine strategy's learning rate (the paper's)")
    ap.add_argument("--trial-iterations", type=int, default=60)
    ap.add_argument("--val-cases", type=int, default=None, help="inner-fold cases that score a trial (default: all)")
    ap.add_argument("--noise-lengths", type=int, nargs="+", default=[20, 60, 150])
    ap.add_argument("--noise-repeats", type=int, default=5)
    ap.add_argument("--noise-candidates", type=int, default=4, help="random candidates per search space")
    ap.add_argument("--trials", type=int, default=64, help="trials per search")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=SEARCHES)
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    ap.add_argument("--parallel", type=int, default=1, help="trials at once (1 thread each when above 1)")
    ap.add_argument("--final-iterations", type=int, default=2250, help="from scratch (the base recipe's 15 min on the AMD machine)")
    ap.add_argument("--final-seeds", type=int, nargs="+", default=[0, 1, 2])
    benchmark_arguments(ap, "strategy_search", "/tmp/leanseg_bench/strategy_search")
    return ap


def smoke(args: argparse.Namespace) -> None:
    """Every phase on phantoms, a few iterations each: PPO and random, one seed, three trials."""
    args.pretrain_iterations, args.trial_iterations, args.noise_lengths = 3, 2, [2]
    args.noise_repeats, args.noise_candidates, args.trials, args.seeds = 2, 2, 3, [0]
    args.controllers, args.final_iterations, args.final_seeds, args.val_cases = ["ppo", "random"], 2, [0], 2


def main() -> None:
    args = arguments().parse_args()
    if args.smoke:
        smoke(args)
    from leanseg.bench import Results, results_folder, smoke_phantoms

    work = Path(args.work)
    data = str(smoke_phantoms(work)) if args.smoke else args.data
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "strategy_search",
        render,
        plot,
        threads=2,
        seed=args.seeds,
        split="fold 0 of a 5-fold split (split seed 12345) reports; the search trains on the other folds less their inner "
        "fold 0 and is rewarded on inner fold 0",
        data=f"{data} (208 MSD hippocampus cases in the committed figures)",
        smoke=args.smoke,
        trials=args.trials,
        **{k: getattr(args, k) for k in SAME},
    )
    keep_sections(results)
    routine = routine_config(args)
    if {"start", "noise", "none", "search"} & set(args.phases):  # trains it only where --work does not hold it
        results["start"] = train_start(data, work, routine, args)
    start = work / "start" / "checkpoint_final.pt"
    if "noise" in args.phases:
        for length in args.noise_lengths:
            if str(length) in results.data.get("noise", {}):
                continue  # kept from an earlier call with the same start
            results.put("noise", str(length), measure_noise(data, work, trial_config(routine, start, length, args.val_cases), length, args))
            results.write()
    if "none" in args.phases:
        for length in args.noise_lengths:
            results.put(
                "none", str(length), no_augmentation_trial(data, work, trial_config(routine, start, length, args.val_cases), length)
            )
            results.write()
    if "search" in args.phases:
        run_searches(results, data, work, trial_config(routine, start, args.trial_iterations, args.val_cases), args)
    if "final" in args.phases:
        final_training(results, data, work, routine, args)
    results.write(with_plot=True)
    print(results.markdown())


def keep_sections(results) -> None:
    """Take the earlier file's sections measured under the same settings, so that the phases run in parts: the start
    and final trainings whole, the noise per trial length (each stamped), and the searches, which carry their own
    stamp (a search already recorded is not run again)."""
    same = {key: all(results.earlier.get(k) == results.data.get(k) for k in keys) for key, keys in (("start", START), ("all", SAME))}
    if same["start"]:
        results.keep("start")
        results.keep("final")
        for section in ("noise", "none"):
            for length in results.earlier.get(section, {}):
                results.keep(section, length)
    if same["all"] and results.earlier.get("searches"):
        results["searches"] = results.earlier["searches"]


def routine_config(args: argparse.Namespace):
    """The base recipe with the routine strategy: every augmentation probability 0.5, the paper's learning rate."""
    from leanseg.config import ExperimentConfig
    from leanseg.search.space import strategy_space

    base = ExperimentConfig.load(CONFIG).with_overrides({"train.budget_minutes": None, "train.lr": args.routine_lr})
    space = strategy_space()
    return base.with_overrides(space.values(space.routine(base)))


def search_space(kind: str):
    """``augment``: the probabilities alone; ``augment_lr``: and the learning rate."""
    from leanseg.search.space import strategy_space

    return strategy_space(with_lr=kind == "augment_lr")


def nested(cfg, iterations: int, val_cases: int | None):
    """Train on fold 0's training cases less inner fold 0; score on inner fold 0 (the selection split)."""
    return cfg.with_overrides(
        {
            "data.fold": 0,
            "data.inner_fold": 0,
            "train.iterations": iterations,
            "train.val_max_cases": val_cases,
            "train.val_every": 10**6,
            "train.checkpoint_every": 10**6,
        }
    )


def train_start(data: str, work: Path, routine, args: argparse.Namespace) -> dict[str, Any]:
    """The paper's start: no augmentation, the base recipe's learning rate, on the search's training cases."""
    from leanseg.config import ExperimentConfig
    from leanseg.runfolder import RunFolder
    from leanseg.search.space import AUGMENTATIONS
    from leanseg.training import train

    print("start checkpoint (no augmentation)", flush=True)
    base_lr = ExperimentConfig.load(CONFIG).train.lr
    cfg = nested(routine, args.pretrain_iterations, args.val_cases).with_overrides(
        {"train.lr": base_lr, **{f"augment.{a}": 0.0 for a in AUGMENTATIONS}}
    )
    out = work / "start"
    if not (out / "checkpoint_final.pt").is_file():
        train(data, out, cfg, fold=0, resume=False, show_progress=True)
    return {**RunFolder(out).summary(), "lr": base_lr}


def trial_config(routine, start: Path, iterations: int, val_cases: int | None):
    return nested(routine, iterations, val_cases).with_overrides({"train.init_checkpoint": str(start.resolve())})


def measure_noise(data: str, work: Path, cfg, length: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Trials of ``length`` iterations: the routine candidate with ``noise_repeats`` seeds, and ``noise_candidates``
    random candidates of each search space with seed 0. The candidates of the k-th of ``--noise-lengths`` are the
    k-th draws of one generator (seed 12345), as the committed figures were measured."""
    from leanseg.search.strategy import train_trial

    rng = np.random.default_rng(12345)
    runs: list[tuple[str, dict[str, float]]] = [("routine", {"train.seed": s}) for s in range(args.noise_repeats)]
    for _ in range(args.noise_lengths.index(length) + 1):  # the k-th block of draws
        drawn = [(kind, search_space(kind)) for kind in SEARCHES for _i in range(args.noise_candidates)]
        candidates = [(kind, space.values(rng.random(space.dim))) for kind, space in drawn]
    runs += candidates
    rows = []
    for i, (kind, values) in enumerate(runs):
        t0 = time.perf_counter()
        r = train_trial(data, cfg.with_overrides(values).to_dict(), str(work / f"noise_{length}" / f"{i:02d}"), 2)
        rows.append({"kind": kind, "values": values, "reward": r["reward"], "seconds": time.perf_counter() - t0})
        print(f"noise {length} it {kind} {i}: {r['reward']:.4f} in {rows[-1]['seconds']:.1f} s", flush=True)
    return rows


def no_augmentation_trial(data: str, work: Path, cfg, length: int) -> dict[str, Any]:
    """The start fine-tuned without augmentation (seed 0, as the routine's first seed: the same batches), what the
    reward says of augmentation at this trial length."""
    from leanseg.search.space import AUGMENTATIONS
    from leanseg.search.strategy import train_trial

    t0 = time.perf_counter()
    r = train_trial(data, cfg.with_overrides({f"augment.{a}": 0.0 for a in AUGMENTATIONS}).to_dict(), str(work / f"none_{length}"), 2)
    print(f"no augmentation {length} it: {r['reward']:.4f}", flush=True)
    return {"reward": r["reward"], "seconds": time.perf_counter() - t0}


def run_searches(results, data: str, work: Path, trial_cfg, args: argparse.Namespace) -> None:
    """Every search type x controller x seed, the same number of trials each; rewards in trial order, PPO's policy."""
    from leanseg.search.strategy import search_strategy

    searches = results.setdefault("searches", {})
    threads = 2 if args.parallel == 1 else 1
    for kind in args.searches:
        for name in args.controllers:
            for seed in args.seeds:
                label = name if args.parallel == 1 else f"{name} x{args.parallel}"
                if len(searches.get(kind, {}).get(label, {}).get(str(seed), {}).get("rewards", [])) == args.trials:
                    continue  # recorded by an earlier call
                t0 = time.time()
                res = search_strategy(
                    data,
                    work / f"{kind}_{label.replace(' ', '')}_seed{seed}",
                    name,
                    args.trials,
                    args.parallel,
                    base=trial_cfg.with_overrides({"search.strategy.in_process": args.parallel == 1}),  # no start-up per trial
                    space=search_space(kind),
                    seed=seed,
                    threads_per_trial=threads,
                )
                searches.setdefault(kind, {}).setdefault(label, {})[str(seed)] = search_record(res, time.time() - t0)
                print(kind, label, seed, f"best {res.best['reward']:.4f}" if res.best else "no trial done", flush=True)
                results.write()


def search_record(res, seconds: float) -> dict[str, Any]:
    """One search: reward per trial (None: failed), the best, and PPO's policy mean and std per proposal."""
    rewards = [t["reward"] if t["status"] == "done" else None for t in res.trials]
    info = [t["candidate"]["info"] for t in res.trials]
    policy = {k: [i.get(k) for i in info] for k in ("mean", "std")} if any("mean" in i for i in info) else None
    return {
        "rewards": rewards,
        "best": res.best,
        "failed": sum(r is None for r in rewards),
        "minutes": seconds / 60,
        "policy": policy,
        **{k: machine_info(2)[k] for k in ("cpu", "leanseg_commit", "date")},
    }


def winners(results) -> dict[str, dict[str, Any]]:
    """Each search type's best strategy over every controller and seed (by its selection reward)."""
    out = {}
    for kind, controllers in results.get("searches", {}).items():
        bests = [s["best"] for seeds in controllers.values() for s in seeds.values() if s["best"]]
        if bests:
            out[kind] = max(bests, key=lambda b: b["reward"])
    return out


def final_training(results, data: str, work: Path, routine, args: argparse.Namespace) -> None:
    """The routine and each search type's winner, from scratch for ``final_iterations``, seeds each, on fold 0."""
    from leanseg.training import train

    final = results.setdefault("final", {})
    strategies = {"routine": {}, **{kind: search_space(kind).values(b["unit"]) for kind, b in winners(results.data).items()}}
    for label, values in strategies.items():
        cell = final.setdefault(label, {"strategy": values, "iterations": args.final_iterations, "seeds": {}})
        for seed in args.final_seeds:
            if str(seed) in cell["seeds"] and cell["strategy"] == values:
                continue
            cfg = routine.with_overrides(
                {**values, "train.iterations": args.final_iterations, "train.seed": seed, "train.val_max_cases": None, "data.fold": 0}
            )
            r = train(data, work / f"final_{label}_seed{seed}", cfg, fold=0, resume=False, show_progress=True)
            cell["seeds"][str(seed)] = {"iterations": r.iterations, **r.val}
            results.write()


def best_so_far(rewards: list) -> list[float]:
    cur, out = float("-inf"), []
    for r in rewards:
        cur = max(cur, r if r is not None else float("-inf"))
        out.append(cur)
    return out


def noise_table(noise: dict[str, Any]) -> list[str]:
    """Per trial length: the seeds' spread of one candidate against the spread between random candidates."""
    lines = [
        "## The reward's noise (inner fold 0)",
        "",
        "| trial iterations | routine, per seed | sd over seeds | space | random candidates | sd over candidates | signal sd "
        "| signal / noise | s/trial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for length, rows in noise.items():
        seeds = [r["reward"] for r in rows if r["kind"] == "routine"]
        if len(seeds) < 2 or not any(r["kind"] in SEARCHES for r in rows):
            continue  # one routine trial (a long length's check): in the augmentation table only
        sd_seed, seconds = np.std(seeds, ddof=1), np.mean([r["seconds"] for r in rows])
        for kind in SEARCHES:
            cands = [r["reward"] for r in rows if r["kind"] == kind]
            sd_cand = np.std(cands, ddof=1)
            signal = np.sqrt(max(sd_cand**2 - sd_seed**2, 0.0))
            lines.append(
                f"| {length} | {', '.join(f'{s:.4f}' for s in seeds)} | {sd_seed:.4f} | {kind} | {', '.join(f'{c:.4f}' for c in cands)} "
                f"| {sd_cand:.4f} | {signal:.4f} | {signal / sd_seed:.1f} | {seconds:.1f} |"
            )
    return [
        *lines,
        "",
        "Signal sd: the spread between candidates less the seeds' noise, sqrt(max(sd_cand^2 - sd_seed^2, 0)).",
        "",
    ]


def augmentation_table(r: dict) -> list[str]:
    """Per trial length: the start, fine-tuned without augmentation, with the routine's and with random probabilities."""
    lines = [
        "## What the reward says of augmentation (inner fold 0)",
        "",
        f"The start checkpoint itself scores {r['start']['val_dice']:.4f}. Seed 0 gives the no-augmentation trial and the "
        "routine's first trial the same batches.",
        "",
        "| trial iterations | no augmentation | routine, seed 0 | routine, mean of seeds (seeds) | random probabilities, mean |",
        "|---|---|---|---|---|",
    ]
    for length, none in r["none"].items():
        rows = r.get("noise", {}).get(length, [])
        routine = [x["reward"] for x in rows if x["kind"] == "routine"]
        random = [x["reward"] for x in rows if x["kind"] == "augment"]
        cells = [f"{routine[0]:.4f}" if routine else "-", f"{np.mean(routine):.4f} ({len(routine)})" if routine else "-"]
        cells.append(f"{np.mean(random):.4f}" if random else "-")
        lines.append(f"| {length} | {none['reward']:.4f} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def search_table(kind: str, controllers: dict[str, Any]) -> list[str]:
    lines = [
        f"## Search `{kind}`",
        "",
        "| controller | seeds | best reward per seed | mean best | spread (max-min) | failed | minutes per search |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seeds in controllers.items():
        bests = [s["best"]["reward"] for s in seeds.values() if s["best"]]
        minutes = np.mean([s["minutes"] for s in seeds.values()])
        lines.append(
            f"| {name} | {len(seeds)} | {', '.join(f'{b:.4f}' for b in bests)} | **{np.mean(bests):.4f}** "
            f"| {np.ptp(bests):.4f} | {sum(s['failed'] for s in seeds.values())} | {minutes:.1f} |"
        )
    return [*lines, ""]


def final_table(final: dict[str, Any]) -> list[str]:
    lines = ["## Trained in full on fold 0 (from scratch)", "", "| strategy | seeds | Dice per seed | mean | iterations |"]
    lines.append("|---|---|---|---|---|")
    for label, cell in final.items():
        d = [s["val_dice"] for s in cell["seeds"].values()]
        lines.append(f"| {label} | {len(d)} | {', '.join(f'{x:.4f}' for x in d)} | **{np.mean(d):.4f}** | {cell['iterations']} |")
    lines.append("")
    for label, cell in final.items():
        if cell["strategy"]:
            lines.append(f"- {label}'s winner: " + ", ".join(f"{k}={v:.3g}" for k, v in cell["strategy"].items()))
    return [*lines, ""]


def mean_bests(controllers: dict[str, Any]) -> dict[str, tuple[float, float, int]]:
    """Per controller: the mean over seeds of the best reward, the seeds' spread (max - min), and the seeds."""
    out = {}
    for name, seeds in controllers.items():
        bests = [s["best"]["reward"] for s in seeds.values() if s["best"]]
        out[name] = (float(np.mean(bests)), float(np.ptp(bests)), len(bests))
    return out


def targets(r: dict) -> list[str]:
    """The issue's targets, one line each, from what is measured."""
    lines = []
    for kind, controllers in r.get("searches", {}).items():
        m = mean_bests(controllers)
        if "ppo" not in m:
            continue
        ppo, spread, n = m["ppo"]
        for other, need in (("random", ">="), ("tpe", ">="), ("hill", ">"), ("hill-continuous", ">")):
            if other in m:
                diff = ppo - m[other][0]
                enough = r["trials"] >= 64 and min(n, m[other][2]) >= 3  # the scale
                met = enough and (diff >= 0 if need == ">=" else diff > 0)
                within = abs(diff) <= max(spread, m[other][1])
                lines.append(
                    f"- `{kind}`: PPO {ppo:.4f} against {other} {m[other][0]:.4f} ({diff:+.4f}; seeds {n} and {m[other][2]}, "
                    f"{r['trials']} trials): target {need} at 64+ trials and 3 seeds, {'met' if met else 'missed'}"
                    f"{', within the seeds spread' if within else ''}."
                )
    final = r.get("final", {})
    routine = [s["val_dice"] for s in final.get("routine", {}).get("seeds", {}).values()]
    for kind in SEARCHES:
        found = [s["val_dice"] for s in final.get(kind, {}).get("seeds", {}).values()]
        if routine and found:
            gain = 100 * (np.mean(found) - np.mean(routine))
            lines.append(
                f"- `{kind}` winner trained in full: {gain:+.2f} Dice points against the routine ({len(found)} and {len(routine)} "
                f"seeds): target +1, {'met' if gain >= 1 else 'missed'}."
            )
    return lines


def render(r: dict) -> str:
    lines = ["# Strategy search: PPO against its baselines, the paper's protocol", "", *header_markdown(r)]
    if "start" in r:
        s = r["start"]
        lines += [
            f"Start checkpoint (no augmentation, lr {s['lr']:g}): {s['iterations']} iterations, "
            f"Dice {s['val_dice']:.4f} on {s['val_cases']} inner-fold cases. Routine strategy: every probability 0.5, "
            f"lr {r['routine_lr']:g}. Trials fine-tune the start for {r['trial_iterations']} iterations.",
            "",
        ]
    if r.get("noise"):
        lines += noise_table(r["noise"])
    if r.get("none") and "start" in r:
        lines += augmentation_table(r)
    for kind, controllers in r.get("searches", {}).items():
        lines += search_table(kind, controllers)
    if r.get("final"):
        lines += final_table(r["final"])
    if targets(r):
        lines += ["## Targets", "", *targets(r), ""]
    if r.get("searches"):
        lines += ["![best reward so far against trial, and PPO's policy](strategy_search.png)", ""]
    elif r.get("noise"):
        lines += ["![the reward against trial length](strategy_search.png)", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(r.get("searches", {}))
    if not kinds:  # the reward's noise and sign alone
        fig, ax = plt.subplots(figsize=(6, 4))
        noise_plot(ax, r)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    fig, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 8), squeeze=False)
    for col, kind in enumerate(kinds):
        ax = axes[0, col]
        for i, (name, seeds) in enumerate(r["searches"][kind].items()):
            curves = np.array([best_so_far(s["rewards"]) for s in seeds.values()])
            x = np.arange(1, curves.shape[1] + 1)
            ax.plot(x, curves.mean(0), "-", color=f"C{i}", label=name)
            ax.fill_between(x, curves.min(0), curves.max(0), color=f"C{i}", alpha=0.15)
        ax.set(xlabel="trial", ylabel="best reward so far", title=f"{kind}: mean over seeds (band: min-max)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        policy_panel(axes[1, col], r["searches"][kind], [k.split(".")[1] for k in search_space(kind).keys])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def noise_plot(ax, r: dict) -> None:
    """Reward against trial length: the routine's seeds (mean and min-max), random candidates, no augmentation."""
    noise = r.get("noise", {})
    lengths = sorted(noise, key=int)
    x = np.array([int(k) for k in lengths])
    seeds = [[row["reward"] for row in noise[k] if row["kind"] == "routine"] for k in lengths]  # a long check: one seed
    ax.plot(x, [np.mean(v) for v in seeds], "-o", color="C0", label="routine (mean of seeds, band: min-max)")
    ax.fill_between(x, [min(v) for v in seeds], [max(v) for v in seeds], color="C0", alpha=0.2)
    for k in lengths:
        ys = [row["reward"] for row in noise[k] if row["kind"] == "augment"]
        ax.plot([int(k)] * len(ys), ys, "x", color="C1", label="random probabilities" if k == lengths[0] else None)
    none = r.get("none", {})
    if none:
        ax.plot(sorted(int(k) for k in none), [none[k]["reward"] for k in sorted(none, key=int)], "-s", color="C2", label="no augmentation")
    if "start" in r:
        ax.axhline(r["start"]["val_dice"], color="k", ls=":", label="start checkpoint")
    ax.set(xlabel="trial iterations (fine-tuning the start)", ylabel="reward: inner-fold Dice", title="the reward's noise and sign")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def policy_panel(ax, controllers: dict[str, Any], names: list[str]) -> None:
    """PPO's policy mean (lines) and std (band) per searched value, seed 0, against the proposal number."""
    ppo = next((s for name, seeds in controllers.items() if name.startswith("ppo") for s in seeds.values() if s["policy"]), None)
    if ppo is None:
        return
    steps = [i for i, m in enumerate(ppo["policy"]["mean"]) if m is not None]
    mean = np.array([ppo["policy"]["mean"][i] for i in steps])
    std = np.array([ppo["policy"]["std"][i] for i in steps])
    for d in range(mean.shape[1]):
        ax.plot(np.array(steps) + 1, mean[:, d], color=f"C{d}", label=names[d])
        ax.fill_between(np.array(steps) + 1, mean[:, d] - std[:, d], mean[:, d] + std[:, d], color=f"C{d}", alpha=0.1)
    ax.set(xlabel="trial", ylabel="policy mean (unit cube)", title="PPO's policy, first seed: mean +- std", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


if __name__ == "__main__":
    main()
