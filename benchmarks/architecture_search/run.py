"""Resource-optimised NAS on hippocampus: the ENAS controller against random search over the same
space with the same budget, and against the base residual U-Net trained for the same total time.

Data: the 208 MSD hippocampus cases, fold 0 of the 5-fold split held out (42 cases). Children are
scored on the first ``--val-cases`` held-out cases; the chosen child of each search (ENAS: the best
of the controller's most probable architecture and 10 samples; random: the best-scored child) is then
evaluated on all 42 with the shared weights as they are, trained alone for ``--final-iterations``
from those weights (the base trainer's recipe, counted in the search's minutes), and evaluated
again. The base U-Net (``configs/hippocampus_baseline.yaml``) trains for as many
minutes as the ENAS search took, counted in iterations: ENAS minutes x ``--baseline-rate``, the base
U-Net's iterations per minute on an idle machine at 2 threads (4487 in 15 min in
benchmarks/results/hippocampus_baseline.md), so that the random search and the base U-Net can share the
machine without changing what they learn. Only the ENAS search has to run alone: its minutes are the
figure the search is judged by.

    python benchmarks/architecture_search/run.py --searches enas --skip-baseline     # alone, 2 threads
    python benchmarks/architecture_search/run.py --searches random --skip-baseline --threads 1 &
    python benchmarks/architecture_search/run.py --searches --threads 1              # the base U-Net
    python benchmarks/architecture_search/run.py --searches --reuse-baseline         # or one trained at least as long

Each call merges its part into the results file when the search settings agree. One file holds one seed; seeds.py
reads the seeds' files into the table the targets are judged by (benchmarks/results/architecture_search.*).

Writes benchmarks/results/architecture_search_cross.{json,md,png} (``--name`` for another stem, one per seed:
architecture_search_cross_seed1, ...).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
# what the space holds, so that results from another space are never merged with these
SEARCH_SPACE = "the paper's macro space plus plain or residual encoder stages (residual_<s>)"
SKIP_SPACES = {"cross": "from any encoder stage, resampled (the paper's)", "same_level": "from their own level only"}
# the benchmark's search budget on hippocampus; every other search setting is the config section's one default
# (leanseg.config.ArchitectureSearchConfig), replaced by the option of the same name where one is given
# 5 stages: the paper's space, whose poolings after stages 3 and 4 are searched (innermost 1/16 to 1/4 where the
# patch allows; an axis stops pooling below 4 voxels); the headline is the chosen child without retraining.
# 8 episodes x 20 iterations per child (3200 shared iterations): 32 minutes for ENAS on the Zen 4 EPYC at 2 threads;
# the earlier 16 x 40 is 4x the shared iterations, over the 90-minute limit (an extrapolation from that run)
BUDGET = {"episodes": 8, "child_iterations": 20, "final_iterations": 0, "num_stages": 5}
SMOKE = {"episodes": 1, "children": 2, "scored_children": 2, "child_iterations": 1, "val_cases": 1, "final_iterations": 2, "num_stages": 3}
SETTINGS = (
    "loop",
    "episodes",
    "children",
    "scored_children",
    "child_iterations",
    "val_cases",
    "final_iterations",
    "final_momentum",
    "seed",
    "start_prob",
    "final_schedule",
    "controller_lr",
    "warmup_children",
    "num_stages",
    "skips",
)


def arguments() -> argparse.ArgumentParser:
    """Options for the search settings default to None: the value is then the benchmark's BUDGET or the config's."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--episodes", type=int, help=f"default {BUDGET['episodes']}")
    ap.add_argument("--children", type=int, help="children per episode that train the shared weights")
    ap.add_argument("--loop", choices=["two_phase", "interleaved"], help="default: the config's (two_phase, ENAS's)")
    ap.add_argument("--scored-children", type=int, help="two_phase: children per episode scored with the weights fixed")
    ap.add_argument("--child-iterations", type=int, help=f"default {BUDGET['child_iterations']}")
    ap.add_argument("--val-cases", type=int, help="held-out cases that score each child")
    ap.add_argument(
        "--final-iterations",
        type=int,
        help=f"the chosen child's own training from the shared weights (default {BUDGET['final_iterations']})",
    )
    ap.add_argument("--final-momentum", type=float, help="SGD momentum of the final training (default: the base trainer's)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--num-stages", type=int, help=f"encoder stages of the space (default {BUDGET['num_stages']})")
    ap.add_argument("--skips", choices=["cross", "same_level"], help="long skips: from any encoder stage (the config's) or own level")
    ap.add_argument("--searches", nargs="*", default=["enas", "random"], choices=["enas", "random"])
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="keep a base U-Net already trained in --work when it had at least the ENAS search's minutes (a stricter comparison)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-rate", type=float, default=4487 / 15, help="base U-Net iterations per minute, idle, 2 threads")
    ap.add_argument("--rate-note", default="4487 in 15 min, AMD EPYC, hippocampus_baseline.md", help="where --baseline-rate was measured")
    ap.add_argument(
        "--start-prob", type=float, help="ENAS: the initial policy picks each of the first child's choices with this probability"
    )
    ap.add_argument("--final-schedule", choices=["restart", "continue"], help="the final training's schedule: restarted, or continued")
    ap.add_argument("--controller-lr", type=float, help="ENAS: the controller's Adam learning rate (the paper: 0.001)")
    ap.add_argument("--warmup-children", type=int, help="ENAS: uniformly drawn children first, not told to the controller")
    benchmark_arguments(ap, "architecture_search_cross", "/tmp/leanseg_bench/architecture_search")
    return ap


def search_config(args: argparse.Namespace) -> Any:
    """configs/hippocampus_baseline.yaml's recipe with the search settings: the config's, BUDGET's, then the options'."""
    from leanseg.config import ExperimentConfig

    given = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    settings = {**BUDGET, **(SMOKE if args.smoke else {}), **given}
    smoke = {"data.patch_size": [16, 16, 16], "model.base_features": 4, "train.batch_size": 1} if args.smoke else {}
    cfg = ExperimentConfig.load(ROOT / "configs" / "hippocampus_baseline.yaml").with_overrides(
        {
            "train.budget_minutes": None,
            "train.num_threads": args.threads,
            **smoke,
            **{f"search.architecture.{k}": v for k, v in settings.items()},
        }
    )
    return cfg.with_overrides({"train.seed": cfg.search.architecture.seed})  # the seed of the searches seeds the base U-Net too


# settings that say which search a results file holds: a call merges only into a file whose settings are these
SAME_SEARCH = (
    "loop",
    "episodes",
    "children_per_episode",
    "scored_children_per_episode",
    "child_iterations",
    "seed",
    "data",
    "search_space",
    "num_stages",
    "shared_weights",
    "final_iterations",
    "final_training",
)


def main() -> None:
    args = arguments().parse_args()
    if args.smoke:
        args.baseline_rate = 2.0

    from leanseg.bench import Results, results_folder, smoke_phantoms
    from leanseg.training.schedule import use_bf16

    work = Path(args.work)
    data = str(smoke_phantoms(work)) if args.smoke else args.data
    cfg = search_config(args)
    st = cfg.search.architecture
    final_momentum = cfg.train.momentum if st.final_momentum is None else st.final_momentum
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "architecture_search",
        render,
        plot,
        threads=args.threads,
        seed=st.seed,
        split="fold 0 of a 5-fold split (split seed 12345) held out; "
        f"children scored on its first {st.val_cases} cases, chosen children and the base U-Net on all of them",
        data=f"{data} (208 MSD hippocampus cases, 42 held out, in the committed figures)",
        smoke=args.smoke,
        loop=st.loop,
        episodes=st.episodes,
        children_per_episode=st.children,
        scored_children_per_episode=st.scored_children if st.loop == "two_phase" else 0,
        child_iterations=st.child_iterations,
        search_space=f"{SEARCH_SPACE}; long skips {SKIP_SPACES[st.skips]}",
        num_stages=st.num_stages,
        shared_weights=f"{optimiser(cfg.train, st.momentum)}, lr {cfg.train.lr} constant, batch {cfg.train.batch_size}, {'bf16 autocast' if use_bf16(cfg.train) else 'float32'}",
        final_iterations=st.final_iterations,
        final_training=f"the chosen child alone, from the shared weights: {st.final_iterations} iterations of the base "
        f"trainer's schedule ({optimiser(cfg.train, final_momentum)}, lr {cfg.train.lr}, {cfg.train.schedule} schedule"
        + (")" if st.final_schedule == "restart" else ", continued over the shared weights' iterations plus these)"),
        searches={},
    )

    def save(key: str, name: str | None, value: dict[str, Any]) -> None:
        """Merge this call's part into the results file, read again just before writing: the random search
        and the base U-Net may run at the same time, each in its own process."""
        results.merge(("searches", "base_unet"), SAME_SEARCH)
        if name is None:
            results[key] = value
        else:
            results.setdefault(key, {})[name] = value
        results.write(with_plot=True)

    for name in args.searches:
        save("searches", name, run_search(name, data, work, cfg, args.threads))
    results.merge(("searches", "base_unet"), SAME_SEARCH)
    if not args.skip_baseline and "enas" in results["searches"]:
        save("base_unet", None, base_unet(results["searches"]["enas"]["minutes"], data, work, cfg, args))
    print(results.markdown())


def run_search(name: str, data: str, work: Path, cfg: Any, threads: int) -> dict[str, Any]:
    """One search (resumed from its search.pt where there is one) and its chosen child; the figures of its results entry."""
    from leanseg.bench import machine_info
    from leanseg.models.nas_space import arch_to_json
    from leanseg.search.nas import episode_stats, read_search_state, search_architecture

    # a search resumed from its search.pt counts the children it ran before (their own seconds) and this call's wall time
    state = work / name / "search.pt"
    before = read_search_state(state)["history"] if state.is_file() else []
    t0 = time.time()
    res = search_architecture(
        data,
        work / name,
        cfg,
        progress=lambda row, done, total: print(f"{name} {done}/{total} ({row['phase']}): Dice {row['reward']}", flush=True),
        controller=name,
    )
    here, st = machine_info(threads), cfg.search.architecture
    return {
        "minutes": (time.time() - t0 + sum(r["seconds"] for r in before)) / 60,
        "resumed_after_children": len(before),
        "final_minutes": res.final_seconds / 60,
        "start_prob": st.start_prob if name == "enas" else None,
        "controller_lr": st.controller_lr if name == "enas" else None,
        "warmup_children": st.warmup_children if name == "enas" else 0,
        "threads": threads,
        "commit": here["leanseg_commit"],
        "cpu": here["cpu"],
        "episodes": episode_stats(res.history),
        "chosen": arch_to_json(res.arch),
        "first_child": res.history[0]["arch"],
        "chosen_val_dice": res.val_dice,
        "chosen_val_dice_shared_weights": res.val_dice_shared_weights,
        # the controller's children: the warm-up's uniform draws (episode -1) are not what it found
        "best_child_reward": max(r["reward"] for r in res.history if r["episode"] >= 0 and r["reward"] is not None),
    }


def base_unet(minutes: float, data: str, work: Path, cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The base U-Net trained for the ENAS search's minutes, counted in iterations (or one trained at least as long)."""
    from leanseg.config import ExperimentConfig
    from leanseg.runfolder import RunFolder
    from leanseg.training import train

    iterations = max(1, round(minutes * args.baseline_rate))
    done = RunFolder(work / "base_unet")
    earlier = done.summary() if args.reuse_baseline and (done.path / "summary.json").is_file() else None
    same_seed = earlier is not None and ExperimentConfig.load(done.config_path).train.seed == cfg.train.seed
    common = {"rate_per_minute": args.baseline_rate, "rate_note": args.rate_note, "threads": args.threads}
    if earlier and same_seed and earlier["iterations"] >= iterations:
        return {
            "minutes": earlier["iterations"] / args.baseline_rate,
            "iterations": earlier["iterations"],
            "wall_minutes": earlier["train_seconds"] / 60,
            "val_dice": earlier["val_dice"],
            "reused": f"trained earlier for {earlier['iterations']} iterations, at least the {iterations} the ENAS minutes allow",
            **common,
        }
    t0 = time.time()
    overrides = {"train.iterations": iterations, "train.val_every": 10**6, "train.val_max_cases": None}
    r = train(data, done.path, cfg.with_overrides(overrides), fold=0, resume=False)
    return {
        "minutes": minutes,
        "iterations": r.iterations,
        "wall_minutes": (time.time() - t0) / 60,
        "val_dice": r.val["val_dice"],
        **common,
    }


def loop_text(r: dict[str, Any]) -> str:
    if r.get("loop", "interleaved") == "interleaved":
        return "interleaved (each child scored right after its own update of the shared weights, and told to the controller)"
    return (
        f"two-phase (ENAS): the children train the shared weights, then {r['scored_children_per_episode']} fresh children "
        "per episode are scored with the weights fixed and told to the controller; 'best child' is the best of these"
    )


def resumed(s: dict[str, Any]) -> str:
    n = s.get("resumed_after_children", 0)
    return f" (its {n} children from an earlier call, counted by their own seconds)" if n else ""


def optimiser(t: Any, momentum: float | None) -> str:
    """The optimiser as the results state it: the NAS phases use ``cfg.train``'s, which is AdamW by default."""
    if t.optimizer == "sgd":
        return f"SGD (Nesterov), momentum {momentum}"
    return f"{'AdamW' if t.optimizer == 'adamw' else 'Adam'}, weight decay {t.weight_decay}"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Resource-optimised architecture search (ENAS controller, shared weights)",
        "",
        *header_markdown(r),
        f"{r['episodes']} episodes x {r['children_per_episode']} children, {r['child_iterations']} "
        f"iterations of the shared weights per child ({r.get('shared_weights', '')}), seed {r['seed']}. "
        f"Loop: {loop_text(r)}. {r.get('num_stages', 4)} encoder stages (poolings after stage 3 and on searched). "
        f"Space: {r.get('search_space', 'the paper macro space')}.",
        "",
        "| | minutes (threads) | best child (val subset) | chosen child, shared weights as they are | chosen child after its "
        "final training |",
        "|---|---|---|---|---|",
    ]
    for name, s in r["searches"].items():
        final = f"{s['chosen_val_dice']:.4f} ({s['final_minutes']:.1f} min)" if r.get("final_iterations") else ""
        shared = s.get("chosen_val_dice_shared_weights", s["chosen_val_dice"])
        prior = f", start_prob {s['start_prob']}" if s.get("start_prob") else ""
        prior += f", controller lr {s['controller_lr']:g}" if s.get("controller_lr") else ""
        prior += f", {s['warmup_children']} uniform warm-up children first" if s.get("warmup_children") else ""
        lines.append(
            f"| {name} search ({s.get('cpu', m['cpu'])}{prior}){resumed(s)} | {s['minutes']:.1f} ({s.get('threads', 2)}) | {s['best_child_reward']:.4f} | {shared:.4f} | {final} |"
        )
    if "base_unet" in r:
        b = r["base_unet"]
        lines.append(
            f"| base residual U-Net, {b['iterations']} iterations = {b['minutes']:.1f} min at {b['rate_per_minute']:.0f} "
            f"iterations/min (idle, 2 threads{'; ' + b['rate_note'] if b.get('rate_note') else ''})"
            f"{' (' + b['reused'] + ')' if b.get('reused') else ''} | {b['wall_minutes']:.1f} "
            f"({b['threads']}) | | | {b['val_dice']:.4f} |"
        )
    lines += [
        "",
        "Chosen children and the base U-Net are scored on all 42 held-out cases. "
        + (f"Final training: {r['final_training']}; its minutes are part of the search's. " if r.get("final_iterations") else "")
        + "Minutes are wall-clock; the ENAS search ran alone at 2 threads. Searches or training at 1 thread shared the "
        "machine with another job, so their minutes are not comparable; their budgets are in iterations. A search resumed "
        "from its search.pt counts its earlier children's own seconds.",
    ]
    for name, s in r["searches"].items():
        lines += ["", f"{name}: chosen architecture `{json.dumps(s['chosen'])}`"]
        if "first_child" in s:
            diff = {k: v for k, v in s["chosen"].items() if s["first_child"].get(k) != v}
            lines += ["", f"{name}: where it differs from the first child (largest patch, every operation and skip): `{json.dumps(diff)}`"]
    lines += ["", f"![reward and entropy per episode]({r.get('name', 'architecture_search')}.png)", ""]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    from leanseg.bench import panels, save_figure

    fig, (a, b) = panels()
    for i, (name, s) in enumerate(r["searches"].items()):
        x = [e["episode"] + 1 for e in s["episodes"]]
        a.plot(x, [e["mean_reward"] for e in s["episodes"]], "o-", color=f"C{i}", label=f"{name}: mean child Dice")
        a.plot(x, [e["best_reward"] for e in s["episodes"]], "s--", color=f"C{i}", alpha=0.6, label=f"{name}: best child Dice")
        if name == "enas":
            b.plot(x, [e["entropy"] for e in s["episodes"]], "^-", color=f"C{i}", label="ENAS controller entropy")
        if r.get("final_iterations"):
            a.axhline(s["chosen_val_dice"], color=f"C{i}", ls="-.", label=f"{name}: chosen child after final training (42 cases)")
    if "base_unet" in r:
        a.axhline(r["base_unet"]["val_dice"], color="k", ls=":", label="base U-Net, same time (42 cases)")
    a.set(xlabel="episode (0: the uniform warm-up, if any)", ylabel="validation Dice")
    b.set(xlabel="episode", ylabel="entropy (nats)")
    save_figure(fig, (a, b), path)


if __name__ == "__main__":
    main()
