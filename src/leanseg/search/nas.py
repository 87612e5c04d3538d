"""Resource-optimised neural architecture search (Bae et al., MICCAI 2019): the search loop behind
``leanseg search architecture``.

A child is an architecture the controller asks for (never one whose memory estimate exceeds the
limit). ``loop`` says what an episode does with its children:

* ``two_phase`` (ENAS, the default): ``children`` children, each training the shared supernet for
  ``child_iterations`` iterations on patches of its own size, not judged; then, with the weights
  fixed, ``scored_children`` fresh children, each scored by the validation Dice of the shared weights
  and told to the controller. The controller learns only from children none of whom trained the
  weights just before being scored.
* ``interleaved`` (leanseg's earlier loop): each of the ``children`` trains the shared weights, is
  scored right after its own update and told to the controller, so that children the controller
  already favours have trained the weights most recently.

The first child is the largest patch with every operation and skip (the paper's start).
``warmup_children`` (optional) are drawn uniformly before the first episode and train the shared
weights without being told to the controller. After the last episode the chosen child (ENAS's
derivation: the best of the controller's most probable architecture and ``derive_samples`` drawn from
it, scored with the shared weights fixed; for random search, the best-scored child) is evaluated on
every validation case and written as a run folder that ``leanseg predict`` uses as it is: no
retraining. ``final_iterations`` (default 0) first trains that child alone for a while, from the
shared weights (not from scratch).

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
from leanseg.models.nas_space import ArchitectureSpace, arch_to_json, architecture_space
from leanseg.runfolder import RunFolder
from leanseg.search.controllers.base import Controller
from leanseg.training.schedule import make_optimizer
from leanseg.training.trainer import Trainer
from leanseg.utils import atomic_path, atomic_write_text, resolve_device, seed_everything, set_threads

PROCESS_OVERHEAD_BYTES = 600 * 2**20  # torch, MONAI and the data cache in a training process, measured ~0.5-0.6 GiB here
LOOPS = ("two_phase", "interleaved")
SKIPS = ("cross", "same_level")


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
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
    final_progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> NasResult:
    """Search a U-Net's macro structure with shared weights; resumes from ``out_dir/search.pt``.

    The settings are ``base.search.architecture`` (:class:`~leanseg.config.ArchitectureSearchConfig`), each
    replaceable by a keyword of the same name (``episodes=10``); an unknown one is refused with the valid names.

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

    The controller's defaults are the paper's (Adam at 0.001, a near-uniform start); ``start_prob`` 0.7 and
    ``controller_lr`` 0.01 are the earlier defaults, measured with the interleaved loop as follows.

    ``start_prob`` (ENAS only; ``None`` or 0: a near-uniform start) centres the controller's initial policy on the
    first child, each decision choosing as it does with this probability. Started uniform, the controller left
    its entropy at 24 of 27 nats after 320 children on hippocampus, and its chosen child (dilation 2-3 in 11 of
    12 stage 2-4 convolutions, two second convolutions dropped) stayed 1.15 Dice points under the base U-Net,
    while a child close to the first (leaky ReLU, no long skips) trained alone from scratch matched the base U-Net;
    random search stays uniform.

    ``controller_lr`` (ENAS only) is the controller's Adam learning rate (the paper's 0.001 by default): one
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
    cfg = (base or ExperimentConfig()).with_overrides({f"search.architecture.{k}": v for k, v in settings.items()})
    search = _Search(Path(data_dir), Path(out_dir), cfg)
    search.run(progress)
    return search.finish(final_progress)


class SupernetTrainer(Trainer):
    """The base trainer's step on the shared weights of one child at a time (``arch``), with plain Dice + CE."""

    arch: dict[str, Any]

    def build_loss(self) -> Any:
        from leanseg.training.losses import IgnoringDiceCE, dice_ce_loss

        plan = getattr(self, "plan", None)
        return dice_ce_loss() if plan is None or plan.ignore_label is None else IgnoringDiceCE(plan.ignore_label)

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x, self.arch)

    def compute_loss(self, output: Any, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(output.float(), y)


class _Search:
    """One architecture search: data, space, supernet and controller; :meth:`run` the children, :meth:`finish`."""

    def __init__(self, data_dir: Path, out: Path, cfg: ExperimentConfig) -> None:
        import psutil

        from leanseg.data.prepare import fold_split, prepare_data
        from leanseg.models.nas_unet import SuperNet

        a = cfg.search.architecture
        if a.warmup_children < 0:
            raise LeansegError(f"--warmup-children must be 0 or more; got {a.warmup_children}.")
        if a.loop not in LOOPS:
            raise LeansegError(f"Unknown search loop '{a.loop}'; use {' or '.join(LOOPS)}.")
        if a.skips not in SKIPS:
            raise LeansegError(f"Unknown long-skip space '{a.skips}'; use {' or '.join(SKIPS)}.")
        if a.loop == "two_phase" and a.scored_children < 1:
            raise LeansegError(f"--scored-children must be 1 or more for the two-phase loop; got {a.scored_children}.")
        self.a, self.data_dir, self.out = a, data_dir, out
        out.mkdir(parents=True, exist_ok=True)
        set_threads(cfg.train.num_threads)
        seed_everything(a.seed)
        self.prep = prepare_data(data_dir, cfg)
        self.plan = self.prep.plan
        if self.plan.regions:
            raise LeansegError(f"{data_dir} has region-based labels; the architecture search trains one class per voxel.")
        self.split = fold_split(self.prep, cfg)
        self.val_ids = self.split["val"][: a.val_cases] if a.val_cases else self.split["val"]
        p = self.plan
        self.space = architecture_space(
            p.median_shape, p.target_spacing, p.num_channels, p.num_classes, a.num_stages, cfg.model.base_features, a.skips == "cross"
        )
        self.net = SuperNet(self.space).to(resolve_device(cfg.train.device))  # children train where train.device says
        self.num_params = sum(q.numel() for q in self.net.parameters())
        self.limit = (a.memory_limit_gb * 2**30) if a.memory_limit_gb else psutil.virtual_memory().available / 2
        if a.memory_limit_gb is None:
            self.limit = _saved_limit(out, self.limit)  # the default limit, half the free memory, is the first run's
        self.enas = a.controller == "enas"  # the start and the learning rate are the ENAS controller's; random search has neither
        self.warmup = a.warmup_children if self.enas else 0  # random search is uniform throughout: a warm-up would be more of it
        self.scored = a.scored_children if a.loop == "two_phase" else 0  # children per episode scored with the weights fixed
        self.total = self.warmup + a.episodes * (a.children + self.scored)
        trained = self.warmup + a.episodes * a.children  # children that train the shared weights
        self.final_cfg = cfg if a.final_momentum is None else cfg.with_overrides({"train.momentum": a.final_momentum})
        # built now, so that an unknown schedule is said before the search, not after it
        t = self.final_cfg.train
        self.final_lr = final_lr(t.lr, t.schedule, a.final_schedule, trained * a.child_iterations, max(a.final_iterations, 1))
        self.cfg = cfg if a.momentum is None else cfg.with_overrides({"train.momentum": a.momentum})
        self.trainer = SupernetTrainer.for_step(self.cfg, self.net, make_optimizer(self.net.parameters(), self.cfg.train), self.plan)
        self.ctrl = self._controller()

    def fits(self, arch: dict[str, Any]) -> bool:
        return memory_needed(self.space, arch, self.num_params, self.cfg.train.batch_size) <= self.limit

    def _controller(self) -> Controller:
        from leanseg.search.controllers import WarmupController, make_controller

        a, space = self.a, self.space
        self.start = first_child(space, self.fits)
        start_prob = a.start_prob if self.enas and a.start_prob else None
        options = {k: v for k, v in {"start_prob": start_prob, "lr": a.controller_lr if self.enas else None}.items() if v is not None}
        self.meta = {
            "data": str(self.data_dir.resolve()),
            "loop": a.loop,
            "episodes": a.episodes,
            "children": a.children,
            "scored_children": self.scored,
            "child_iterations": a.child_iterations,
            "seed": a.seed,
            "momentum": self.cfg.train.momentum,
            "start_prob": start_prob,
            "controller_lr": options.get("lr"),
            "warmup_children": self.warmup,
            "space": space.to_dict(),
            "limit_bytes": int(self.limit),
        }
        ctrl = make_controller(a.controller, space, seed=a.seed, start=space.unit(self.start), **options)
        if self.warmup:
            warm = make_controller("random", space, seed=a.seed + 1, start=space.unit(self.start))  # the warm-up's uniform draws
            ctrl = WarmupController(ctrl, warm, self.warmup)
        return ctrl.constrain(self.fits)

    def child_trial(self, index: int, arch: dict[str, Any]) -> dict[str, Any]:
        """One trial of the search, by the child's phase (:func:`child_role`): train the shared weights on ``arch`` for
        ``child_iterations``, score them on the validation subset, or both. A child that only trains has reward None:
        the runner does not tell it to the controller."""
        phase = child_role(index, self.warmup, self.a.children, self.scored)[2]
        if phase != "score":
            self.trainer.arch = arch
            train_child(self.trainer, self._patches(arch, self.a.seed + 7919 * index), self.a.child_iterations)
        return {
            "reward": None if phase == "train" else self._score(arch, self.val_ids),
            "memory_estimate_mib": memory_needed(self.space, arch, self.num_params, self.cfg.train.batch_size) / 2**20,
            "patch": list(self.space.patch_size(arch)),
            "arch": arch_to_json(arch),
        }

    def _patches(self, arch: dict[str, Any], seed: int) -> Any:
        from leanseg.data.sampling import PatchDataset

        c = self.cfg
        return PatchDataset(
            self.prep.cache_dir, self.split["train"], self.space.patch_size(arch), c.augment, c.data.foreground_oversample, seed=seed
        )

    def run(self, progress: Callable[[dict[str, Any], int, int], None] | None) -> None:
        from leanseg.search.executors import InProcessExecutor
        from leanseg.search.runner import run_search

        def make_trial(c: Any) -> tuple[Callable[..., dict[str, Any]], dict[str, Any]]:
            return self.child_trial, {"index": c.id, "arch": self.space.normalise(c.values)}

        def on_result(trials: list[dict[str, Any]]) -> None:
            self.history = history_rows(trials, self.warmup, self.a.children, self.scored)
            write_reports(self.out, self.history)

        def show(trial: dict[str, Any], done: int, total: int) -> None:
            if progress:
                progress(self.history[-1], done, total)

        def attach() -> dict[str, Any]:
            return {"supernet": self.net.state_dict(), "optimizer": self.trainer.optimizer.state_dict()}

        def restore(d: dict[str, Any]) -> None:
            self.net.load_state_dict(d["supernet"])
            self.trainer.optimizer.load_state_dict(d["optimizer"])

        trials = run_search(self.ctrl, make_trial, self.total, InProcessExecutor(), self.out, self.meta, show, attach, restore, on_result)
        self.history = history_rows(trials, self.warmup, self.a.children, self.scored)

    def choose(self) -> dict[str, Any]:
        """ENAS's derivation where the controller has a policy (its most probable architecture and ``derive_samples``
        drawn from it, each scored on the validation subset with the shared weights; the best is chosen), else the
        best-scored child (random search)."""
        best = self.ctrl.best()
        chosen = self.space.normalise(self.space.values(best["unit"])) if best else self.start
        options = [self.space.normalise(self.space.values(u)) for u in self.ctrl.derive(self.a.derive_samples, self.a.seed)]
        scored = [(self._score(a, self.val_ids), i) for i, a in enumerate(options) if self.fits(a)]
        return options[max(scored)[1]] if scored else chosen

    def _score(self, arch: dict[str, Any], case_ids: list[str]) -> float:
        return validate_child(self.net, arch, self.prep.cache_dir, case_ids, self.plan, self.cfg)

    def finish(self, final_progress: Callable[[int, int], None] | None) -> NasResult:
        """Choose, score on every validation case, optionally train the chosen child alone, write its run folder."""
        a, chosen = self.a, self.choose()
        full_ids = self.split["val"]
        dice = shared_dice = self._score(chosen, full_ids)
        final_seconds = 0.0
        if a.final_iterations > 0:
            t0 = time.perf_counter()
            final = SupernetTrainer.for_step(
                self.final_cfg, self.net, make_optimizer(self.net.parameters(), self.final_cfg.train), self.plan
            )
            final.arch = chosen
            train_child(final, self._patches(chosen, a.seed + 7919 * self.total), a.final_iterations, self.final_lr, final_progress)
            final_seconds = time.perf_counter() - t0
            dice = self._score(chosen, full_ids)
        # the run folder's config says how its weights were last trained: the final phase's momentum where it ran
        run_dir = save_child_run(
            self.out / "final", self.net, self.space, chosen, self.final_cfg if a.final_iterations > 0 else self.cfg, self.plan
        )
        summary = {
            "arch": arch_to_json(chosen),
            "val_dice": dice,
            "val_dice_shared_weights": shared_dice,
            "final_iterations": a.final_iterations,
            "final_seconds": final_seconds,
            "val_cases": len(full_ids),
            "children": len(self.history),
        }
        RunFolder(run_dir).write_summary(summary)
        return NasResult(self.out, self.history, chosen, dice, run_dir, shared_dice, final_seconds)


def child_role(index: int, warmup: int, children: int, scored_children: int) -> tuple[int, int, str]:
    """Episode (-1: the warm-up), number within its phase and phase of the search's child ``index``: "train" (trains the
    shared weights, not judged), "score" (scored with the weights fixed) or "both" (the interleaved loop, where
    ``scored_children`` is 0: trains, then is scored). The two-phase loop's warm-up children only train."""
    both = scored_children == 0
    if index < warmup:
        return -1, index, "both" if both else "train"
    episode, k = divmod(index - warmup, children + scored_children)
    if both:
        return episode, k, "both"
    return (episode, k, "train") if k < children else (episode, k - children, "score")


def history_rows(trials: list[dict[str, Any]], warmup: int, children: int, scored_children: int = 0) -> list[dict[str, Any]]:
    """The search's history for people, one row per child: episode (-1: warm-up), child and phase (:func:`child_role`),
    reward (None for a child that only trained), entropy, seconds, memory estimate, patch, arch."""
    rows = []
    for t in trials:
        episode, child, phase = child_role(t["candidate"]["id"], warmup, children, scored_children)
        r = t["result"]
        rows.append(
            {
                "episode": episode,
                "child": child,
                "phase": phase,
                "reward": t["reward"],
                "entropy": t["entropy"],
                "seconds": t["seconds"],
                "memory_estimate_mib": r["memory_estimate_mib"],
                "patch": r["patch"],
                "arch": r["arch"],
            }
        )
    return rows


def read_search_state(path: Path | str) -> dict[str, Any]:
    """A saved search (its folder or ``search.pt``): ``meta``, ``controller`` state, ``history`` rows, ``supernet`` and
    ``optimizer`` states."""
    from leanseg.search.runner import finished_trials, read_journal

    path = Path(path)
    j, attached = read_journal(path / "search.pt" if path.is_dir() else path)
    meta = j["meta"]
    history = history_rows(finished_trials(j["trials"]), meta["warmup_children"], meta["children"], meta.get("scored_children", 0))
    return {"meta": meta, "controller": j["controller"], "history": history, **attached}


def _saved_limit(out: Path, default: float) -> float:
    """The memory limit an earlier run of this search used, read from the journal's copy for people
    (``state.json``: the same meta as ``search.pt``, without loading the weights), else ``default``."""
    from leanseg.search.runner import read_journal

    copy = out / "state.json"
    return float(read_journal(copy)[0]["meta"].get("limit_bytes", default)) if copy.is_file() else default


def final_lr(lr: float, schedule: str, how: str, shared_iterations: int, final_iterations: int) -> Callable[[int], float]:
    """The final training's learning rate at its step ``i``: "restart" runs ``schedule`` from ``lr`` over the final
    iterations alone; "continue" runs it over the shared weights' iterations plus the final ones, as if those had been
    its first part, so it starts part-way down (poly, 8000 shared and 3000 final iterations: at 0.31 x ``lr``)."""
    from leanseg.training.schedule import lr_at

    before = {"restart": 0, "continue": shared_iterations}  # iterations the schedule counts as already done
    if how not in before:
        raise LeansegError(f"Unknown final schedule '{how}'; use {' or '.join(before)}.")
    done = before[how]
    return lambda i: lr_at(lr, schedule, (done + i) / (done + final_iterations))


def train_child(
    trainer: SupernetTrainer,
    ds: Any,
    iterations: int,
    lr_for: Callable[[int], float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """``iterations`` of the base trainer's step on the shared weights of ``trainer.arch`` (patches ``ds[i * batch + b]``);
    ``lr_for(i)`` sets step i's learning rate (None: the optimiser's); ``progress(done, iterations)`` every 50 steps and at
    the end."""
    trainer.model.train()
    batch = trainer.cfg.train.batch_size
    for i in range(iterations):
        if lr_for is not None:
            trainer.set_lr(lr_for(i))
        items = [ds[i * batch + b] for b in range(batch)]
        x = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()
        y = torch.stack([torch.as_tensor(it["label"]) for it in items]).float()
        trainer.train_step(x, y)
        if progress and ((i + 1) % 50 == 0 or i + 1 == iterations):
            progress(i + 1, iterations)


def validate_child(
    net: torch.nn.Module, arch: dict[str, Any], cache_dir: Path, case_ids: list[str], plan: Any, cfg: ExperimentConfig
) -> float:
    """Mean foreground Dice of a child (shared weights as they are) on preprocessed validation cases."""
    from leanseg.training.validation import mean_dice

    return mean_dice(child_case_dice(net, arch, cache_dir, case_ids, plan, cfg))


def child_case_dice(
    net: torch.nn.Module, arch: dict[str, Any], cache_dir: Path, case_ids: list[str], plan: Any, cfg: ExperimentConfig
) -> np.ndarray:
    """Foreground Dice per case and class (cases x classes) of a child, shared weights as they are."""
    from leanseg.training.validation import case_dice

    net.eval()

    device = next(net.parameters()).device

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x.to(device), arch).cpu()

    space = net.space  # type: ignore[attr-defined]
    scores = case_dice(run, cache_dir, case_ids, plan, space.patch_size(arch), net.total_stride(arch), cfg.inference)  # type: ignore[operator]
    net.train()
    return scores


def decisions_apart(a: dict[str, Any], b: dict[str, Any]) -> int:
    """How many decisions two children of one space take differently."""
    return sum(a[k] != b[k] for k in a)


def score_children(
    state: Path | str, archs: dict[str, dict[str, Any]], data_dir: Path | str, cfg: ExperimentConfig, reward_cases: int
) -> list[dict[str, Any]]:
    """Score children as a saved search's shared weights hold them, beside how often and how near the search sampled them.

    Per child of ``archs`` (name -> decisions): times sampled, decisions to the nearest sampled child and (mean) to the
    last episode's, Dice on the first ``reward_cases`` held-out cases (the search's reward) and on all of fold 0's.
    """
    from leanseg.data.prepare import make_splits, prepare_data
    from leanseg.models.nas_unet import SuperNet
    from leanseg.training.validation import mean_dice

    st = read_search_state(state)
    space = ArchitectureSpace.from_dict(st["meta"]["space"])
    net = SuperNet(space)
    net.load_state_dict(st["supernet"])
    prep = prepare_data(Path(data_dir), cfg)
    val = make_splits([c.case_id for c in prep.dataset.cases], cfg.data.num_folds, cfg.data.split_seed)[0]["val"]
    sampled = [space.normalise(h["arch"]) for h in st["history"]]
    last = [a for a, h in zip(sampled, st["history"]) if h["episode"] == st["history"][-1]["episode"]]
    rows = []
    for name, given in archs.items():
        arch = space.normalise(given)
        per_case = child_case_dice(net, arch, prep.cache_dir, val, prep.plan, cfg)  # the reward cases come first
        rows.append(
            {
                "name": name,
                "sampled": sum(a == arch for a in sampled),
                "nearest_sampled": min(decisions_apart(a, arch) for a in sampled),
                "apart_last_episode": float(np.mean([decisions_apart(a, arch) for a in last])),
                "reward_dice": mean_dice(per_case[:reward_cases]),
                "dice_all": mean_dice(per_case),
                "arch": arch_to_json(arch),
            }
        )
    return rows


def save_child_run(
    run_dir: Path, net: torch.nn.Module, space: ArchitectureSpace, arch: dict[str, Any], cfg: ExperimentConfig, plan: Any
) -> Path:
    """A run folder for ``leanseg predict``: model ``nas_unet`` with the chosen architecture and the shared weights."""
    from dataclasses import replace

    from leanseg.checkpoint import save_checkpoint

    run = RunFolder(run_dir)
    child_cfg = cfg.with_overrides({"model.name": "nas_unet", "model.extra": {"arch": arch_to_json(arch), "space": space.to_dict()}})
    child_plan = replace(plan, patch_size=space.patch_size(arch))
    run.write_model_only(child_cfg, child_plan)
    save_checkpoint(run.final, net, child_cfg, child_plan)
    return run_dir


def write_reports(out: Path, history: list[dict[str, Any]]) -> None:
    """``history.csv`` (one row per child) and ``search.png``; the journal (``state.json``, ``search.pt``) is the runner's."""
    buf = io.StringIO()
    keys = ["episode", "child", "phase", "reward", "entropy", "seconds", "memory_estimate_mib", "patch"]
    w = csv.writer(buf)
    w.writerow(keys + ["arch"])
    for r in history:
        w.writerow([r[k] for k in keys] + [json.dumps(r["arch"])])
    atomic_write_text(out / "history.csv", buf.getvalue())
    plot_search(history, out / "search.png")


def episode_stats(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean and best reward and the controller's entropy at the end, per episode with scored children."""
    eps: dict[int, list[dict[str, Any]]] = {}
    for r in history:
        if r["reward"] is not None:
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
    """Mean and best child reward per episode, and the controller's entropy (the paper's Figure 3); nothing before the
    first scored child."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = episode_stats(history)
    if not stats:  # the two-phase loop's first children only train: nothing to plot yet
        return
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
