"""Searching the training strategy (Yang et al., MICCAI 2019): augmentation probabilities and learning
rate, each trial a budgeted training run of the base trainer whose validation Dice is the reward.

Library call behind ``leanseg search strategy``; writes into ``out``: ``state.json`` (the resumable
journal), ``trials.csv``, ``best_config.yaml`` (ready for ``leanseg train --config``), ``summary.md``
and ``rewards.png``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanseg.config import ExperimentConfig, StrategySearchConfig
from leanseg.errors import LeansegError
from leanseg.search.controllers import make_controller
from leanseg.search.controllers.base import Candidate
from leanseg.search.runner import run_search
from leanseg.search.space import SearchSpace, strategy_space
from leanseg.utils import atomic_write_text


def train_trial(data_dir: str, config: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """One trial: train from ``config`` (a budget and maybe an initial checkpoint inside) and return the validation Dice."""
    from leanseg.training import train

    cfg = ExperimentConfig.from_dict(config).with_overrides({"train.num_threads": threads})
    r = train(data_dir, run_dir, cfg, show_progress=False, resume=False)
    return {"reward": r.val["val_dice"], "iterations": r.iterations, "train_seconds": r.seconds, **r.val}


@dataclass
class SearchResult:
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    out_dir: Path


def search_strategy(
    data_dir: Path | str,
    out_dir: Path | str,
    controller: str | None = None,
    trials: int | None = None,
    parallel: int | None = None,
    ray_address: str | None = None,
    base: ExperimentConfig | None = None,
    space: SearchSpace | None = None,
    seed: int | None = None,
    threads_per_trial: int | None = None,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
    controller_options: dict[str, Any] | None = None,
) -> SearchResult:
    """Search augmentation probabilities and learning rate starting from the routine defaults (probabilities 0.5).

    ``base`` carries the trial budget (``train.budget_minutes`` / ``train.iterations``), the fold, and
    ``train.init_checkpoint`` to fine-tune every trial from one checkpoint (the paper's first experiment).
    Settings left ``None`` come from ``base.search.strategy`` (:class:`~leanseg.config.StrategySearchConfig`).
    """
    cfg = base or ExperimentConfig()
    given = dict(
        controller=controller, trials=trials, parallel=parallel, ray_address=ray_address, seed=seed, threads_per_trial=threads_per_trial
    )
    cfg = cfg.with_overrides({f"search.strategy.{k}": v for k, v in given.items() if v is not None})
    st = cfg.search.strategy
    from leanseg.data.prepare import prepare_data

    out = Path(out_dir)
    space = space or strategy_space()
    space.check(cfg)
    if cfg.train.init_checkpoint:  # every trial would fail on a file that is not a checkpoint: say so before the first
        from leanseg.checkpoint import load_checkpoint

        load_checkpoint(Path(cfg.train.init_checkpoint))
    prepare_data(Path(data_dir), cfg)  # preprocess once here, not in every trial
    threads = st.threads_per_trial or max(1, (os.cpu_count() or 1) // st.parallel)
    ctrl = make_controller(st.controller, space, seed=st.seed, start=space.routine(cfg), **(controller_options or {}))

    def make_trial(c: Candidate) -> tuple[Callable[..., dict[str, Any]], dict[str, Any]]:
        trial_cfg = cfg.with_overrides(c.values)
        return train_trial, {
            "data_dir": str(Path(data_dir).resolve()),
            "config": trial_cfg.to_dict(),
            "run_dir": str((out / "trials" / f"{c.id:04d}").resolve()),
            "threads": threads,
        }

    executor = make_executor(st, threads, out / "trials" / "results")
    trial_base = {k: v for k, v in cfg.to_dict().items() if k != "search"}  # what trains a trial, not how it is searched
    meta = {"space": space.to_list(), "seed": st.seed, "base": trial_base, "data": str(Path(data_dir).resolve())}
    done = run_search(ctrl, make_trial, st.trials, executor, out, meta, progress)
    result = SearchResult(done, ctrl.best(), out)
    write_reports(result, space, cfg, st.controller)
    return result


def make_executor(st: StrategySearchConfig, threads: int, results_dir: Path) -> Any:
    """The executor the strategy-search settings ask for: Ray, this process (``in_process``), or spawned processes."""
    from leanseg.search.executors import InProcessExecutor, LocalExecutor, RayExecutor

    if st.in_process:
        if st.parallel != 1 or st.ray_address:
            raise LeansegError("search.strategy.in_process runs one trial at a time here; drop --parallel/--ray-address or in_process.")
        return InProcessExecutor()
    if st.ray_address:
        return RayExecutor(st.ray_address, st.parallel, cpus_per_trial=threads)
    return LocalExecutor(st.parallel, results_dir)


def write_reports(result: SearchResult, space: SearchSpace, base: ExperimentConfig, controller: str) -> None:
    out = result.out_dir
    keys = space.keys
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "status", "reward", *keys, "seconds", "error"])
    for t in result.trials:
        v = t["candidate"]["values"]
        w.writerow(
            [
                t["candidate"]["id"],
                t["status"],
                t.get("reward"),
                *[v[k] for k in keys],
                round(t.get("seconds") or 0, 1),
                t.get("error") or "",
            ]
        )
    atomic_write_text(out / "trials.csv", buf.getvalue())
    ranked = sorted((t for t in result.trials if t["status"] == "done"), key=lambda t: -t["reward"])
    lines = [
        f"# Strategy search: controller {controller}, {len(result.trials)} trials "
        f"({sum(t['status'] == 'failed' for t in result.trials)} failed)",
        "",
        "| rank | trial | validation Dice | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for i, t in enumerate(ranked[:10]):
        v = t["candidate"]["values"]
        lines.append(f"| {i + 1} | {t['candidate']['id']} | {t['reward']:.4f} | " + " | ".join(f"{v[k]:.4g}" for k in keys) + " |")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    if ranked:
        base.with_overrides(ranked[0]["candidate"]["values"]).save(out / "best_config.yaml")
    plot_rewards({controller: result.trials}, out / "rewards.png")


def plot_rewards(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Reward of each trial (dots) and the best so far (line), one colour per controller."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, trials) in enumerate(runs.items()):
        xs = [t["candidate"]["id"] + 1 for t in trials if t["status"] == "done"]
        ys = [t["reward"] for t in trials if t["status"] == "done"]
        best, cur = [], float("-inf")
        for y in ys:
            cur = max(cur, y)
            best.append(cur)
        ax.plot(xs, ys, ".", color=f"C{i}", alpha=0.5)
        ax.plot(xs, best, "-", color=f"C{i}", label=name)
    ax.set(xlabel="trial", ylabel="validation Dice", title="reward per trial (dots) and best so far (lines)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
