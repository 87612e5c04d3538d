"""Resource-optimised neural architecture search (Bae et al., MICCAI 2019): the search loop behind
``leanseg search architecture``.

Episodes of ``children`` children each. A child is an architecture the controller asks for (never
one whose memory estimate exceeds the limit); it trains the shared supernet for ``child_iterations``
iterations on patches of its own size, is scored by the validation Dice of the shared weights, and
the Dice is told to the controller. The first child is the largest patch with every operation and
skip (the paper's start). ``warmup_children`` (optional) are drawn uniformly before the first
episode and train the shared weights without being told to the controller. After the last episode
the chosen child (the controller's most probable architecture; for random search, the best-scored
child) is evaluated on every validation case and written as a run folder that ``leanseg predict``
uses as it is: no retraining. ``final_iterations`` (default 0) first trains that child alone for a
while, from the shared weights (not from scratch).

Everything needed to resume (supernet weights, optimiser, controller, history) is one file,
``search.pt``, replaced atomically after every child; ``history.csv``, ``search.png`` (reward and
entropy per episode) and ``state.json`` are for people.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.config import ExperimentConfig
from leanseg.errors import LeansegError
from leanseg.search.architecture import ArchitectureSpace, arch_to_json, architecture_space
from leanseg.utils import atomic_path, atomic_write_text, cpu_has_fast_bf16, seed_everything, set_threads

PROCESS_OVERHEAD_BYTES = 600 * 2**20  # torch, MONAI and the data cache in a training process, measured ~0.5-0.6 GiB here


@dataclass
class NasResult:
    out_dir: Path
    history: list[dict[str, Any]]
    arch: dict[str, Any]
    val_dice: float
    run_dir: Path
    val_dice_shared_weights: float = float("nan")  # the chosen child before ``final_iterations``
    final_seconds: float = 0.0


def memory_needed(space: ArchitectureSpace, arch: dict[str, Any], num_params: int, batch: int) -> int:
    """Bytes a child's training step needs: activations, the supernet's weights, gradients and momentum, the process."""
    from leanseg.models.nas_unet import estimate_activation_bytes

    return estimate_activation_bytes(space, arch, batch) + 3 * 4 * num_params + PROCESS_OVERHEAD_BYTES


def first_child(space: ArchitectureSpace, fits: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The largest patch with every operation and skip; a smaller patch where that does not fit."""
    arch = space.largest()
    patches = [d for d in space.decisions if d.name.startswith("patch_")]
    order = sorted(
        ({d.name: c for d, c in zip(patches, combo)} for combo in itertools.product(*[d.choices for d in patches])),
        key=lambda a: -int(np.prod(space.patch_size({**arch, **a}))),
    )
    for p in order:
        if fits({**arch, **p}):
            return {**arch, **p}
    raise LeansegError("No architecture of the search space fits the memory limit; raise --memory-limit-gb or lower the batch size.")


def search_architecture(
    data_dir: Path | str,
    out_dir: Path | str,
    base: ExperimentConfig | None = None,
    controller: str = "enas",
    episodes: int = 4,
    children: int = 20,
    child_iterations: int = 20,
    val_cases: int | None = 10,
    memory_limit_gb: float | None = None,
    num_stages: int = 4,
    seed: int = 0,
    derive_samples: int = 10,
    momentum: float | None = 0.9,
    final_iterations: int = 0,
    final_momentum: float | None = None,
    final_schedule: str = "restart",
    start_prob: float | None = 0.7,
    controller_lr: float = 0.01,
    warmup_children: int = 0,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
    final_progress: Callable[[int, int], None] | None = None,
) -> NasResult:
    """Search a U-Net's macro structure with shared weights; resumes from ``out_dir/search.pt``.

    The shared weights train with ``cfg.train``'s optimiser, except that SGD's momentum is ``momentum``
    (``None``: the config's). The base trainer's 0.99 suits one fixed network, not a different child
    every few dozen steps: with it, children with the largest patch fell from Dice 0.71 to under 0.1
    within 120 children on hippocampus, while with 0.9 (ENAS's value) they stayed at 0.5-0.7 over 30
    random children (Adam at 1e-3 behaved like 0.9).

    The search keeps ``cfg.train.lr`` constant (a poly decay over the search ended lower on hippocampus:
    chosen child 0.797 against 0.819). ``final_iterations`` then trains the chosen child alone, from the
    shared weights as they are, with ``cfg.train``'s optimiser, momentum and schedule (the base trainer's
    recipe): the paper trains children for 3 epochs per episode, ours for a few dozen steps each, and this
    phase gives the one that is kept more training. It is not a retraining from scratch; 0 keeps the shared weights
    as they are. Its result is not in ``search.pt``: a resumed search repeats it. ``final_momentum`` (``None``: the
    config's) replaces SGD's momentum in that phase only. ``final_schedule`` "restart" runs the config's schedule
    over the final iterations alone; "continue" counts the shared weights' iterations as its first part, as if
    search and final training were one run (see ``final_lr``). On hippocampus neither mattered: from one search
    state, 3000 iterations restarted 0.8672, continued 0.8669, 6000 restarted 0.8635 (one seed).

    ``start_prob`` (ENAS only; ``None`` or 0: a near-uniform start) centres the controller's initial policy on the
    first child, each decision choosing as it does with this probability. Started uniform, the controller left
    its entropy at 24 of 27 nats after 320 children on hippocampus, and its chosen child (dilation 2-3 in 11 of
    12 stage 2-4 convolutions, two second convolutions dropped) stayed 1.15 Dice points under the base U-Net,
    while a child close to the first (leaky ReLU, no long skips) trained alone from scratch matched the base U-Net;
    random search stays uniform.

    ``controller_lr`` (ENAS only) is the controller's Adam learning rate, 10x the paper's 0.001 by default: one
    update per child moves a logit by at most about the rate, so over the 200 children of a CPU search the paper's
    rate barely changes the policy (hippocampus, 10 episodes: entropy 22.2 -> 21.0 nats, chosen child 0.76-0.81 as
    the shared weights hold it), while 0.01 brought the entropy to 11.0 nats, the mean child Dice of the last episode
    from 0.81 to 0.86 and the chosen child to 0.850 as the shared weights hold it (one seed each).

    ``warmup_children`` (ENAS only) first trains the shared weights on that many children drawn uniformly from the
    space (the first of them the paper's first child), scored and recorded as episode -1 but not told to the
    controller, which then runs its ``episodes`` as without it. Without it the controller's own samples train the
    weights for the architectures it already favours: under the ENAS search's weights on hippocampus the space's
    residual U-Net (never sampled) scored 0.797 against the chosen child's 0.850, while trained alone from scratch it
    beat it (0.8765 vs 0.8705), and under the random search's uniformly trained weights it also ranked first. It is
    not a cure: on hippocampus 60 warm-up children before 140 of the controller's left the residual U-Net at 0.612
    against the chosen child's 0.855 under the shared weights, and the chosen child at 0.8665 after 3000 iterations
    of its own (0.8672 without the warm-up; one seed).
    """
    import psutil
    from monai.losses import DiceCELoss

    from leanseg.data.sampling import PatchDataset
    from leanseg.models.nas_unet import SuperNet
    from leanseg.search.controllers import make_controller
    from leanseg.train import make_optimizer, make_splits, prepare_data

    if warmup_children < 0:
        raise LeansegError(f"--warmup-children must be 0 or more; got {warmup_children}.")
    cfg = base or ExperimentConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.train.num_threads)
    seed_everything(seed)
    prep = prepare_data(Path(data_dir), cfg)
    plan = prep.plan
    split = make_splits([c.case_id for c in prep.dataset.cases], cfg.data.num_folds, cfg.data.split_seed)[cfg.data.fold]
    val_ids = split["val"][:val_cases] if val_cases else split["val"]
    space = architecture_space(
        plan.median_shape, plan.target_spacing, plan.num_channels, plan.num_classes, num_stages, cfg.model.base_features
    )
    net = SuperNet(space)
    num_params = sum(p.numel() for p in net.parameters())
    limit = (memory_limit_gb * 2**30) if memory_limit_gb else psutil.virtual_memory().available / 2
    batch = cfg.train.batch_size
    state_path = out / "search.pt"
    st = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.is_file() else None
    if st is not None and memory_limit_gb is None:
        limit = st["meta"].get("limit_bytes", limit)  # the default limit, half the free memory, is the first run's

    def fits(arch: dict[str, Any]) -> bool:
        return memory_needed(space, arch, num_params, batch) <= limit

    start = first_child(space, fits)
    enas = controller == "enas"  # the start and the learning rate are the ENAS controller's; random search has neither
    start_prob = start_prob if enas and start_prob else None
    ctrl_lr = controller_lr if enas else None
    options = {k: v for k, v in {"start_prob": start_prob, "lr": ctrl_lr}.items() if v is not None}
    ctrl = make_controller(controller, space, seed=seed, start=space.unit(start), **options)
    ctrl.accept = fits
    warmup = warmup_children if enas else 0  # random search is uniform throughout: its warm-up would be more of the same
    warm = make_controller("random", space, seed=seed + 1, start=space.unit(start))  # the warm-up's uniform draws
    warm.accept = fits
    final_cfg = cfg if final_momentum is None else cfg.with_overrides({"train.momentum": final_momentum})
    total = warmup + episodes * children
    # built now, so that an unknown schedule is said before the search, not after it
    lr_for = final_lr(final_cfg.train.lr, final_cfg.train.schedule, final_schedule, total * child_iterations, max(final_iterations, 1))
    if momentum is not None:
        cfg = cfg.with_overrides({"train.momentum": momentum})
    opt = make_optimizer(net.parameters(), cfg)
    meta = {
        "data": str(Path(data_dir).resolve()),
        "controller": controller,
        "episodes": episodes,
        "children": children,
        "child_iterations": child_iterations,
        "seed": seed,
        "momentum": cfg.train.momentum,
        "start_prob": start_prob,
        "controller_lr": ctrl_lr,
        "warmup_children": warmup,
        "space": space.to_dict(),
        "limit_bytes": int(limit),
    }
    history: list[dict[str, Any]] = []
    if st is not None:
        if {"warmup_children": 0, **st["meta"]} != meta:  # states from before the warm-up option had none
            raise LeansegError(f"{state_path} belongs to another search; pass a new --out or the same settings to resume it.")
        net.load_state_dict(st["supernet"])
        opt.load_state_dict(st["optimizer"])
        ctrl.load_state_dict(st["controller"])
        if "warmup_controller" in st:
            warm.load_state_dict(st["warmup_controller"])
        history = st["history"]
    use_bf16 = cpu_has_fast_bf16() if cfg.train.bf16 is None else cfg.train.bf16  # as the base trainer
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    while len(history) < total:
        warming = len(history) < warmup
        episode, child = (-1, len(history)) if warming else divmod(len(history) - warmup, children)
        cand = (warm if warming else ctrl).ask()
        arch = space.normalise(cand.values)
        t0 = time.perf_counter()
        ds = PatchDataset(
            prep.cache_dir,
            split["train"],
            space.patch_size(arch),
            cfg.augment,
            cfg.data.foreground_oversample,
            seed=seed + 7919 * len(history),
        )
        train_child(net, opt, arch, ds, child_iterations, batch, loss_fn, use_bf16)
        reward = validate_child(net, arch, prep.cache_dir, val_ids, plan, cfg)
        (warm if warming else ctrl).tell(cand, reward)  # the controller never hears of the warm-up children
        row = {
            "episode": episode,
            "child": child,
            "reward": reward,
            "entropy": ctrl.entropy() if hasattr(ctrl, "entropy") else float("nan"),
            "seconds": time.perf_counter() - t0,
            "memory_estimate_mib": memory_needed(space, arch, num_params, batch) / 2**20,
            "patch": list(space.patch_size(arch)),
            "arch": arch_to_json(arch),
        }
        history.append(row)
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "meta": meta,
                    "supernet": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "controller": ctrl.state_dict(),
                    "warmup_controller": warm.state_dict(),
                    "history": history,
                },
                tmp,
            )
        write_reports(out, history, meta)
        if progress:
            progress(row, len(history), total)

    searched = history[warmup:]
    chosen = space.normalise(max(searched, key=lambda r: r["reward"])["arch"])  # random search: the best-scored child
    if hasattr(ctrl, "sample"):
        # ENAS's derivation: the most probable architecture and ``derive_samples`` drawn from the trained
        # controller, each scored on the validation subset with the shared weights; the best is chosen
        options = [space.from_indices(ctrl.greedy())] + [space.from_indices(c) for c in ctrl.sample(derive_samples, seed)]
        scored = [(validate_child(net, a, prep.cache_dir, val_ids, plan, cfg), i) for i, a in enumerate(options) if fits(a)]
        if scored:
            chosen = options[max(scored)[1]]
    full_ids = split["val"]
    dice = shared_dice = validate_child(net, chosen, prep.cache_dir, full_ids, plan, cfg)
    final_seconds = 0.0
    if final_iterations > 0:
        t0 = time.perf_counter()
        final_opt = make_optimizer(net.parameters(), final_cfg)
        ds = PatchDataset(
            prep.cache_dir, split["train"], space.patch_size(chosen), cfg.augment, cfg.data.foreground_oversample, seed=seed + 7919 * total
        )
        train_child(net, final_opt, chosen, ds, final_iterations, batch, loss_fn, use_bf16, lr_for, final_progress)
        final_seconds = time.perf_counter() - t0
        dice = validate_child(net, chosen, prep.cache_dir, full_ids, plan, cfg)
    # the run folder's config says how its weights were last trained: the final phase's momentum where it ran
    run_dir = save_child_run(out / "final", net, space, chosen, final_cfg if final_iterations > 0 else cfg, plan)
    summary = {
        "arch": arch_to_json(chosen),
        "val_dice": dice,
        "val_dice_shared_weights": shared_dice,
        "final_iterations": final_iterations,
        "final_seconds": final_seconds,
        "val_cases": len(full_ids),
        "children": len(history),
    }
    atomic_write_text(out / "final" / "summary.json", json.dumps(summary, indent=1))
    return NasResult(out, history, chosen, dice, run_dir, shared_dice, final_seconds)


def final_lr(lr: float, schedule: str, how: str, shared_iterations: int, final_iterations: int) -> Callable[[int], float]:
    """The final training's learning rate at its step ``i``: "restart" runs ``schedule`` from ``lr`` over the final
    iterations alone; "continue" runs it over the shared weights' iterations plus the final ones, as if those had been
    its first part, so it starts part-way down (poly, 8000 shared and 3000 final iterations: at 0.31 x ``lr``)."""
    from leanseg.train import lr_at

    before = {"restart": 0, "continue": shared_iterations}  # iterations the schedule counts as already done
    if how not in before:
        raise LeansegError(f"Unknown final schedule '{how}'; use {' or '.join(before)}.")
    done = before[how]
    return lambda i: lr_at(lr, schedule, (done + i) / (done + final_iterations))


def train_child(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    arch: dict[str, Any],
    ds: Any,
    iterations: int,
    batch: int,
    loss_fn: Callable[..., torch.Tensor],
    use_bf16: bool,
    lr_for: Callable[[int], float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """``iterations`` steps of the shared weights on ``arch`` (Dice + CE, gradients clipped at 12 as the base trainer);
    ``progress(done, iterations)`` every 50 steps and at the end."""
    net.train()
    for i in range(iterations):
        if lr_for is not None:
            for g in opt.param_groups:
                g["lr"] = lr_for(i)
        items = [ds[i * batch + b] for b in range(batch)]
        x = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()
        y = torch.stack([torch.as_tensor(it["label"]) for it in items]).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(x, arch)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        if progress and ((i + 1) % 50 == 0 or i + 1 == iterations):
            progress(i + 1, iterations)


def validate_child(
    net: torch.nn.Module, arch: dict[str, Any], cache_dir: Path, case_ids: list[str], plan: Any, cfg: ExperimentConfig
) -> float:
    """Mean foreground Dice of a child (shared weights as they are) on preprocessed validation cases."""
    from leanseg.train import mean_dice

    return mean_dice(child_case_dice(net, arch, cache_dir, case_ids, plan, cfg))


def child_case_dice(
    net: torch.nn.Module, arch: dict[str, Any], cache_dir: Path, case_ids: list[str], plan: Any, cfg: ExperimentConfig
) -> np.ndarray:
    """Foreground Dice per case and class (cases x classes) of a child, shared weights as they are."""
    from leanseg.train import case_dice

    net.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x, arch)

    space = net.space  # type: ignore[attr-defined]
    scores = case_dice(run, cache_dir, case_ids, plan, space.patch_size(arch), net.total_stride(arch), cfg.inference)  # type: ignore[operator]
    net.train()
    return scores


def save_child_run(
    run_dir: Path, net: torch.nn.Module, space: ArchitectureSpace, arch: dict[str, Any], cfg: ExperimentConfig, plan: Any
) -> Path:
    """A run folder for ``leanseg predict``: model ``nas_unet`` with the chosen architecture and the shared weights."""
    from dataclasses import replace

    from leanseg.checkpoint import save_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    child_cfg = cfg.with_overrides({"model.name": "nas_unet", "model.extra": {"arch": arch_to_json(arch), "space": space.to_dict()}})
    child_plan = replace(plan, patch_size=space.patch_size(arch))
    child_cfg.save(run_dir / "config.yaml")
    atomic_write_text(run_dir / "plan.json", json.dumps(child_plan.to_dict(), indent=1))
    save_checkpoint(run_dir / "checkpoint_final.pt", net, child_cfg, child_plan)
    return run_dir


def write_reports(out: Path, history: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    buf = io.StringIO()
    keys = ["episode", "child", "reward", "entropy", "seconds", "memory_estimate_mib", "patch"]
    w = csv.writer(buf)
    w.writerow(keys + ["arch"])
    for r in history:
        w.writerow([r[k] for k in keys] + [json.dumps(r["arch"])])
    atomic_write_text(out / "history.csv", buf.getvalue())
    atomic_write_text(
        out / "state.json", json.dumps({"meta": {k: v for k, v in meta.items() if k != "space"}, "history": history}, indent=1)
    )
    plot_search(history, out / "search.png")


def episode_stats(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    eps: dict[int, list[dict[str, Any]]] = {}
    for r in history:
        eps.setdefault(r["episode"], []).append(r)
    return [
        {
            "episode": e,
            "mean_reward": float(np.mean([r["reward"] for r in rows])),
            "best_reward": float(np.max([r["reward"] for r in rows])),
            "entropy": float(rows[-1]["entropy"]),
        }
        for e, rows in sorted(eps.items())
    ]


def plot_search(history: list[dict[str, Any]], path: Path) -> None:
    """Mean and best child reward per episode, and the controller's entropy (the paper's Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = episode_stats(history)
    x = [s["episode"] + 1 for s in stats]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [s["mean_reward"] for s in stats], "o-", label="mean child Dice")
    ax.plot(x, [s["best_reward"] for s in stats], "s--", label="best child Dice")
    ax.set(xlabel="episode (0: the uniform warm-up)" if x[0] == 0 else "episode", ylabel="validation Dice")
    ax.grid(alpha=0.3)
    ent = [s["entropy"] for s in stats]
    if np.isfinite(ent).all():
        ax2 = ax.twinx()
        ax2.plot(x, ent, "^:", color="tab:red", label="controller entropy")
        ax2.set_ylabel("entropy (nats)")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
