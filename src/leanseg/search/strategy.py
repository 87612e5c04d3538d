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

from leanseg.config import ExperimentConfig
from leanseg.search.controllers import Candidate, make_controller
from leanseg.search.runner import run_search
from leanseg.search.space import SearchSpace, strategy_space
from leanseg.utils import atomic_write_text


def train_trial(data_dir: str, config: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """One trial: train from ``config`` (a budget and maybe an initial checkpoint inside) and return the validation Dice."""
    from leanseg.train import train

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
    controller: str = "ppo",
    trials: int = 8,
    parallel: int = 1,
    ray_address: str | None = None,
    base: ExperimentConfig | None = None,
    space: SearchSpace | None = None,
    seed: int = 0,
    threads_per_trial: int | None = None,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
    controller_options: dict[str, Any] | None = None,
) -> SearchResult:
    """Search augmentation probabilities and learning rate starting from the routine defaults (probabilities 0.5).

    ``base`` carries the trial budget (``train.budget_minutes`` / ``train.iterations``), the fold, and
    ``train.init_checkpoint`` to fine-tune every trial from one checkpoint (the paper's first experiment).
    """
    from leanseg.search.executors import LocalExecutor, RayExecutor
    from leanseg.train import prepare_data

    out = Path(out_dir)
    cfg = base or ExperimentConfig()
    space = space or strategy_space()
    space.check(cfg)
    prepare_data(Path(data_dir), cfg)  # preprocess once here, not in every trial
    threads = threads_per_trial or max(1, (os.cpu_count() or 1) // parallel)
    ctrl = make_controller(controller, space, seed=seed, start=space.routine(cfg), **(controller_options or {}))

    def make_trial(c: Candidate) -> tuple[Callable[..., dict[str, Any]], dict[str, Any]]:
        trial_cfg = cfg.with_overrides(c.values)
        return train_trial, {
            "data_dir": str(Path(data_dir).resolve()),
            "config": trial_cfg.to_dict(),
            "run_dir": str((out / "trials" / f"{c.id:04d}").resolve()),
            "threads": threads,
        }

    executor: Any = (
        RayExecutor(ray_address, parallel, cpus_per_trial=threads) if ray_address else LocalExecutor(parallel, out / "trials" / "results")
    )
    meta = {"space": space.to_list(), "seed": seed, "base": cfg.to_dict(), "data": str(Path(data_dir).resolve())}
    done = run_search(ctrl, make_trial, trials, executor, out, meta, progress)
    result = SearchResult(done, ctrl.best(), out)
    write_reports(result, space, cfg, controller)
    return result


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
