"""The training loop: one function driven by an :class:`~leanseg.config.ExperimentConfig`.

Dice + cross-entropy (MONAI ``DiceCELoss``, with ``DeepSupervisionLoss`` for deep supervision), SGD
with Nesterov momentum or Adam, a poly or cosine schedule over iterations *or* a wall-clock budget
(whichever runs out first sets the schedule's progress), validation Dice during training, atomic
checkpoints and resume, a progress bar, ``metrics.csv`` and ``training_curve.png`` in the run folder.

A run folder holds: ``config.yaml`` (resolved), ``plan.json``, ``fingerprint.json``, ``splits.json``,
``checkpoint_latest.pt`` / ``checkpoint_final.pt``, ``metrics.csv``, ``training_curve.png`` and
``summary.json``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.checkpoint import load_checkpoint, load_pretrained, load_weights, save_checkpoint
from leanseg.config import ExperimentConfig
from leanseg.data.datasets import Dataset, load_dataset
from leanseg.data.fingerprint import Fingerprint, Plan, compute_fingerprint, plan_from_fingerprint
from leanseg.data.preprocess import CachedCase, default_cache_root, preprocess_dataset
from leanseg.errors import LeansegError
from leanseg.utils import atomic_write_text, cpu_has_fast_bf16, progress_bar, seed_everything, set_threads


@dataclass
class PreparedData:
    dataset: Dataset
    fingerprint: Fingerprint
    plan: Plan
    cache_dir: Path


def fingerprint_dataset(data_dir: Path, cache_root: Path | None = None, progress: Any = None) -> tuple[Dataset, Fingerprint]:
    """Load a dataset folder and its fingerprint (computed once, then read from the cache)."""
    import hashlib

    ds = load_dataset(data_dir)
    stamp = json.dumps([str(ds.root.resolve()), (ds.root / "dataset.json").stat().st_mtime, [c.case_id for c in ds.cases]])
    key = hashlib.sha1(stamp.encode()).hexdigest()[:12]
    path = Path(cache_root or default_cache_root()) / "fingerprints" / f"{key}.json"
    if path.is_file():
        return ds, Fingerprint.from_dict(json.loads(path.read_text()))
    fp = compute_fingerprint(ds, progress=progress)
    atomic_write_text(path, json.dumps(fp.to_dict()))
    return ds, fp


def prepare_data(data_dir: Path, cfg: ExperimentConfig, cache_root: Path | None = None, progress: Any = None) -> PreparedData:
    """Dataset -> fingerprint -> plan -> preprocessed cache; everything trainers and searches need."""
    ds, fp = fingerprint_dataset(Path(data_dir), cache_root, progress)
    plan = plan_from_fingerprint(fp, cfg.data, cfg.model)
    cache = preprocess_dataset(ds, plan, cache_root, progress=progress)
    return PreparedData(ds, fp, plan, cache)


def make_splits(case_ids: list[str], num_folds: int, seed: int) -> list[dict[str, list[str]]]:
    """Deterministic k-fold splits: sorted ids, shuffled by ``seed``, dealt into ``num_folds`` folds."""
    if num_folds < 2:
        raise LeansegError(f"data.num_folds is {num_folds}; use at least 2 to keep a validation fold.")
    if len(case_ids) < num_folds:
        raise LeansegError(f"{len(case_ids)} cases cannot be split into {num_folds} folds; lower data.num_folds.")
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = [sorted(ids[j] for j in order[i::num_folds]) for i in range(num_folds)]
    return [{"train": sorted(set(ids) - set(f)), "val": f} for f in folds]


def lr_at(cfg_lr: float, schedule: str, progress: float) -> float:
    p = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return cfg_lr * (1 - p) ** 0.9
    if schedule == "cosine":
        return cfg_lr * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "constant":
        return cfg_lr
    raise LeansegError(f"Unknown schedule '{schedule}'; use poly, cosine or constant.")


def make_optimizer(params: Any, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    raise LeansegError(f"Unknown optimizer '{t.optimizer}'; use sgd or adam.")


def validate(
    model: torch.nn.Module, cache_dir: Path, case_ids: list[str], plan: Plan, cfg: ExperimentConfig, bf16: bool = False
) -> dict[str, float]:
    """Dice per foreground class on preprocessed validation cases (nnU-Net's pseudo-Dice, no resampling back)."""
    from leanseg.inference import torch_net

    net = torch_net(model, "bf16" if bf16 else "eager")
    icfg = replace(cfg.inference, mode="whole") if getattr(model, "whole_volume", False) else cfg.inference
    arr = case_dice(net, cache_dir, case_ids, plan, plan.patch_size, model.divisor, icfg)
    model.train()
    classes = [k for k in plan.labels if k != 0]
    out = {f"val_dice_{k}": float(np.nanmean(arr[:, i])) for i, k in enumerate(classes)}
    out["val_dice"] = mean_dice(arr)
    return out


def case_dice(
    net: Callable[[torch.Tensor], torch.Tensor],
    cache_dir: Path,
    case_ids: list[str],
    plan: Plan,
    patch_size: Sequence[int],
    divisor: Any,
    icfg: Any,
) -> np.ndarray:
    """Foreground Dice per case and class (cases x classes; NaN: class absent) of ``net`` on preprocessed cases."""
    from leanseg.inference import label_map, predict_probabilities
    from leanseg.metrics import dice_per_class

    classes = [k for k in plan.labels if k != 0]
    scores = []
    for cid in case_ids:
        case = CachedCase(cache_dir, cid)
        probs = predict_probabilities(net, torch.from_numpy(np.array(case.image)), patch_size, divisor, icfg)
        scores.append(dice_per_class(label_map(probs).numpy(), np.asarray(case.label), classes))
    return np.asarray(scores, dtype=float)


def mean_dice(case_dice: np.ndarray) -> float:
    """The mean over foreground classes of each class's mean over cases (cases x classes in; NaN: class absent)."""
    return float(np.nanmean(np.nanmean(case_dice, axis=0)))


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    seconds: float
    val: dict[str, float]
    data_wait_share: float


def train(
    data_dir: Path | str,
    out_dir: Path | str,
    cfg: ExperimentConfig | None = None,
    fold: int | None = None,
    cache_root: Path | None = None,
    show_progress: bool = True,
    resume: bool = True,
) -> TrainResult:
    """Train a segmentation model on fold ``fold`` of a dataset folder, into run folder ``out_dir``.

    Re-running on an existing run folder resumes from ``checkpoint_latest.pt`` (same config
    required). Returns the final validation Dice and the share of step time spent waiting on data.
    """
    from monai.losses import DeepSupervisionLoss, DiceCELoss
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from leanseg.data.sampling import PatchDataset
    from leanseg.models import build_model

    cfg = cfg or ExperimentConfig()
    if fold is not None:
        cfg = replace(cfg, data=replace(cfg.data, fold=fold))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LeansegError(f"Output {out} is a file; pass a folder for the run.")
    set_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    prep = prepare_data(Path(data_dir), cfg, cache_root, progress=progress_bar("fingerprint / preprocess") if show_progress else None)
    plan = prep.plan
    splits = make_splits([c.case_id for c in prep.dataset.cases], cfg.data.num_folds, cfg.data.split_seed)
    if not 0 <= cfg.data.fold < len(splits):
        raise LeansegError(f"Fold {cfg.data.fold} does not exist; choose 0..{len(splits) - 1}.")
    split = splits[cfg.data.fold]
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    if cfg_path.is_file() and resume and (out / "checkpoint_latest.pt").is_file():
        old = ExperimentConfig.load(cfg_path)
        if old.to_dict() != cfg.to_dict():
            raise LeansegError(f"{out} holds a run with another config ({cfg_path}); pass a new --out or the same settings to resume.")
    cfg.save(cfg_path)
    atomic_write_text(out / "plan.json", json.dumps(plan.to_dict(), indent=1))
    atomic_write_text(out / "fingerprint.json", json.dumps(prep.fingerprint.to_dict()))
    atomic_write_text(out / "splits.json", json.dumps(splits, indent=1))

    model = build_model(cfg.model, plan)
    optimizer = make_optimizer(model.parameters(), cfg)
    start_iter, elapsed_before, history = 0, 0.0, []
    latest = out / "checkpoint_latest.pt"
    if cfg.train.init_checkpoint:
        init_path = Path(cfg.train.init_checkpoint)
        load_pretrained(model, load_checkpoint(init_path), init_path)
    if resume and latest.is_file():
        ckpt = load_checkpoint(latest)
        load_weights(model, ckpt, cfg, plan, latest)
        optimizer.load_state_dict(ckpt["optimizer"])
        start_iter, elapsed_before = int(ckpt["iteration"]), float(ckpt["elapsed"])
        history = json.loads(ckpt.get("history", "[]"))
    t = cfg.train
    budget_s = t.budget_minutes * 60 if t.budget_minutes else None
    use_bf16 = cpu_has_fast_bf16() if t.bf16 is None else t.bf16

    loss_fn = DeepSupervisionLoss(
        DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5),
        weight_mode="exp",
    )
    ds = PatchDataset(prep.cache_dir, split["train"], plan.patch_size, cfg.augment, cfg.data.foreground_oversample, seed=t.seed)
    val_ids = split["val"][: t.val_max_cases] if t.val_max_cases else split["val"]
    # Item i of the dataset is patch i of the whole run, so resuming at iteration k reads from k * batch.
    sampler = range(start_iter * t.batch_size, 10**12)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=t.batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=t.num_workers,
        persistent_workers=t.num_workers > 0,
        prefetch_factor=4 if t.num_workers > 0 else None,
    )
    own_loss = getattr(model, "training_loss", None)
    model.train()
    it = start_iter
    wait_s = step_s = 0.0
    t_start = time.perf_counter()
    val: dict[str, float] = {}

    def progress_fraction() -> float:
        p = it / t.iterations
        if budget_s:
            p = max(p, (elapsed_before + time.perf_counter() - t_start) / budget_s)
        return p

    def checkpoint(path: Path) -> None:
        save_checkpoint(
            path,
            model,
            cfg,
            plan,
            optimizer=optimizer.state_dict(),
            iteration=it,
            elapsed=elapsed_before + time.perf_counter() - t_start,
            history=json.dumps(history),
        )

    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        task = bar.add_task("train", total=1.0, info="")
        batches = iter(loader)
        running = None
        while progress_fraction() < 1.0:
            lr = lr_at(t.lr, t.schedule, progress_fraction())
            for g in optimizer.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            x, y = batch["image"], batch["label"].float()  # float: DeepSupervisionLoss resizes it
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                out_ = model(x)
            if own_loss is not None:  # a model with its own objective (LowRes: one per stage)
                loss = own_loss(out_, y)
            else:
                # a model may add its own regulariser (the invertible U-Nets' VAE branch): {"logits", "aux_loss"}
                logits, aux = (out_["logits"], out_["aux_loss"]) if isinstance(out_, dict) else (out_, 0.0)
                loss = loss_fn(logits, y) + aux
            if not torch.isfinite(loss):
                raise LeansegError(f"The training loss became {loss.item()} at iteration {it}; lower train.lr (now {t.lr}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
            optimizer.step()
            it += 1
            t2 = time.perf_counter()
            wait_s += t1 - t0
            step_s += t2 - t0
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            row: dict[str, Any] = {"iteration": it, "seconds": round(elapsed_before + t2 - t_start, 2), "lr": lr, "loss": loss.item()}
            done = progress_fraction() >= 1.0
            if it % t.val_every == 0 or done:
                val = validate(model, prep.cache_dir, val_ids, plan, cfg, use_bf16)
                row.update(val)
            if it % t.checkpoint_every == 0 or done:
                row["data_wait_share"] = wait_s / max(step_s, 1e-9)
                history.append(row)
                checkpoint(latest)
                _write_history(out, history)
            elif "val_dice" in row or it % 10 == 0:
                history.append(row)
            bar.update(
                task,
                completed=min(progress_fraction(), 1.0),
                info=f"it {it} loss {running:.3f} lr {lr:.2e}" + (f" val Dice {val['val_dice']:.3f}" if val else ""),
            )
    seconds = elapsed_before + time.perf_counter() - t_start
    checkpoint(out / "checkpoint_final.pt")
    share = wait_s / max(step_s, 1e-9)
    _write_history(out, history)
    summary = {
        "iterations": it,
        "train_seconds": seconds,
        "data_wait_share": share,
        "fold": cfg.data.fold,
        "train_cases": len(split["train"]),
        "val_cases": len(val_ids),
        **val,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return TrainResult(out, it, seconds, val, share)


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    import io

    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    plot_training_curve(history, out / "training_curve.png")


def plot_training_curve(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leanseg.utils import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    its = [r["iteration"] for r in history]
    ax.plot(its, [r["loss"] for r in history], color="tab:blue", lw=0.8, label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Dice + CE loss")
    vals = [(r["iteration"], r["val_dice"]) for r in history if "val_dice" in r]
    if vals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*vals), "o-", color="tab:red", label="validation Dice")
        ax2.set_ylabel("validation Dice (mean foreground)")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right")
    ax.legend(loc="upper right")
    ax.set_title("training curve")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
