"""Library calls behind ``leanseg train-policy`` and ``leanseg drop-sweep``: a trained run folder in,
a policy file or a sweep table and plot out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.utils import atomic_write_text, cpu_has_fast_bf16


def _bf16(backend: str | None) -> bool:
    return cpu_has_fast_bf16() if backend is None else backend == "bf16"


def train_policy_for_run(
    run_dir: Path,
    data_dir: Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    out: Path | None = None,
    backend: str | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train an AutoPath policy for the frozen model of ``run_dir`` on its training split (``data_dir`` ``None``:
    the dataset folder the run records).

    Settings come from the run's ``autopath`` config section with ``overrides`` (e.g.
    ``{"autopath.tau": 20}``). The policy is written to ``out`` (default
    ``RUN/policies/policy_tau<tau>.pt``) with the model's fingerprint; the returned summary holds the
    greedy paths' Dice and blocks used on the run's validation split.
    """
    from leanseg.dynamic.evaluate import evaluate_paths, load_split_cases, macs_share
    from leanseg.dynamic.policy import save_policy
    from leanseg.dynamic.reinforce import train_policy

    model, plan, cfg, cases = load_split_cases(run_dir, data_dir, "train", "val")
    if overrides:
        cfg = cfg.with_overrides(overrides)
    acfg = cfg.autopath
    bf16 = _bf16(backend)
    result = train_policy(model, cases["train"], acfg, bf16=bf16, progress=progress)
    classes = [k for k in plan.labels if k != 0]
    rows = evaluate_paths(model, cases["val"], lambda _cid, img: result.policy.choose(model, img[None])[0], classes, bf16)
    n = model.num_gated_blocks
    macs = model.block_macs(tuple(cases["val"][0][1].shape[1:])).tolist()
    summary = {
        "tau": acfg.tau,
        "steps": len(result.history),
        "train_seconds": result.seconds,
        "val_cases": len(rows),
        "dice": float(np.mean([r["dice"] for r in rows])),
        "mean_blocks_used": float(np.mean([r["blocks_used"] for r in rows])),
        "mean_blocks_dropped": float(n - np.mean([r["blocks_used"] for r in rows])),
        "num_blocks": n,
        "samples_per_image": acfg.samples_per_image,
        "stage_steps": acfg.stage_steps,
        "cost": acfg.cost,
        "reward": acfg.reward,
        "policy_input": acfg.policy_input,
        "normalise": acfg.normalise,
        "block_costs": result.block_costs,
        # share of the blocks' multiply-accumulates the greedy paths ran (what dropping saved, whatever the reward counted)
        "mean_macs_used": float(np.mean([macs_share(macs, r["path"]) for r in rows])),
        "chosen_restart": result.chosen_restart,
        "restart_rewards": result.restart_rewards,
        "per_case": rows,
    }
    out = Path(out) if out else Path(run_dir) / "policies" / f"policy_tau{acfg.tau:g}.pt"
    save_policy(out, result.policy, model, acfg, history=json.dumps(result.history), summary=json.dumps(summary))
    atomic_write_text(out.with_suffix(".json"), json.dumps({**summary, "history": result.history}, indent=1))
    summary["path"] = str(out)
    return summary


def sweep_run(
    run_dir: Path,
    data_dir: Path | None,
    out_dir: Path,
    repeats: int | None = None,
    backend: str | None = None,
    progress: Any = None,
    search: bool = False,
) -> dict[str, Any]:
    """Sweep the heuristic strategies over the run's validation split; writes sweep.json and sweep.png. With
    ``search``, also the best fixed path per number of blocks used (``best_fixed``; chosen on the same cases)."""
    from leanseg.dynamic.evaluate import best_fixed_paths, load_split_cases, plot_sweep, summarise_sweep, sweep_strategies

    model, plan, cfg, split_cases = load_split_cases(run_dir, data_dir, "val")
    cases = split_cases["val"]
    classes = [k for k in plan.labels if k != 0]
    reps = repeats if repeats is not None else cfg.autopath.random_repeats
    rows = sweep_strategies(model, cases, classes, reps, cfg.autopath.seed, _bf16(backend), progress)
    summary = summarise_sweep(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"val_cases": len(cases), "repeats": reps, "rows": rows, "summary": summary}
    if search:
        res["best_fixed"] = best_fixed_paths(model, cases, classes, _bf16(backend))
    atomic_write_text(out_dir / "sweep.json", json.dumps(res, indent=1))
    plot_sweep(summary, out_dir / "sweep.png")
    return res
