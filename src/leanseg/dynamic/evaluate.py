"""Evaluating dynamic paths: the heuristic-strategy sweep, a policy's paths, and their plots.

All Dice figures here are on the preprocessed grid of a run's own split (nnU-Net's pseudo-Dice, as
the trainer's validation), mean over foreground classes per case, then over cases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanseg.dynamic.reinforce import segment
from leanseg.dynamic.strategies import every_mask, level_masks, path_string, sweep_masks
from leanseg.errors import LeansegError
from leanseg.metrics import dice_per_class

Case = tuple[str, torch.Tensor, torch.Tensor]


def load_split_cases(run_dir: Path, data_dir: Path | None, *splits: str) -> tuple[Any, Any, Any, dict[str, list[Case]]]:
    """The trained model of ``run_dir`` (built once) and the preprocessed cases of each of ``splits`` ('train', 'val').

    ``data_dir`` ``None``: the dataset folder the run records. Returns (model, plan, config,
    {split: [(case_id, image (C, D, H, W), label (D, H, W))]}).
    """
    from leanseg.checkpoint import load_run_model
    from leanseg.data.prepare import prepare_data
    from leanseg.data.preprocess import CachedCase
    from leanseg.runfolder import RunFolder

    model, plan, cfg = load_run_model(Path(run_dir))
    if not model.num_gated_blocks:
        raise LeansegError(
            f"The model in {run_dir} ('{cfg.model.name}') has no gated blocks; train a deeplab3d_r18 or deeplab3d_r50 model first."
        )
    run = RunFolder(run_dir)
    fold = run.split(cfg.data.fold)
    prep = prepare_data(run.data_dir(data_dir), cfg)
    out: dict[str, list[Case]] = {}
    for split in splits:
        out[split] = []
        for cid in fold[split]:
            c = CachedCase(prep.cache_dir, cid)
            label = torch.from_numpy(np.array(c.label)).long()
            out[split].append((cid, torch.from_numpy(np.array(c.image)).float(), label.reshape(label.shape[-3:])))
    return model, plan, cfg, out


def case_dice(pred: torch.Tensor, label: torch.Tensor, classes: list[int]) -> float:
    return float(np.nanmean(dice_per_class(pred.numpy(), label.numpy(), classes)))


def evaluate_paths(
    model: Any, cases: list[Case], keep_for: Callable[[str, torch.Tensor], torch.Tensor], classes: list[int], bf16: bool
) -> list[dict[str, Any]]:
    """Per case: Dice, blocks used and the path ("1" kept, "0" dropped, block 1 first) that
    ``keep_for(case_id, image) -> (N,) bool`` chooses."""
    rows = []
    for cid, image, label in cases:
        keep = keep_for(cid, image).reshape(1, -1)
        pred = segment(model, image, keep, bf16)[0]
        row = {"case": cid, "dice": case_dice(pred, label, classes), "blocks_used": int(keep.sum()), "path": path_string(keep)}
        rows.append(row)
    return rows


def mask_table(
    model: Any, cases: list[Case], keeps: torch.Tensor, classes: list[int], bf16: bool, batch: int = 16, per_class: bool = False
) -> np.ndarray:
    """(masks x cases) Dice of every keep mask in ``keeps`` (M, N) on every case, ``batch`` masks per forward pass:
    the table behind the per-image oracle (:mod:`leanseg.dynamic.headroom`). With ``per_class``, (masks x cases x
    classes): each foreground class's Dice (nan where a class is empty in both), for the cross-fitted oracle."""
    table = np.zeros((len(keeps), len(cases), len(classes)) if per_class else (len(keeps), len(cases)))
    for j, (_, image, label) in enumerate(cases):
        for s in range(0, len(keeps), batch):
            preds = segment(model, image, keeps[s : s + batch], bf16)
            scores = [dice_per_class(p.numpy(), label.numpy(), classes) if per_class else case_dice(p, label, classes) for p in preds]
            table[s : s + len(preds), j] = scores
    return table


def backward_elimination(model: Any, cases: list[Case], classes: list[int], bf16: bool) -> torch.Tensor:
    """(N+1, N) keep masks, one per number of blocks kept (N down to 0): from the full network, each step drops the
    block whose removal costs ``cases`` the least mean Dice. The best fixed path where every mask cannot be tried."""
    keep = torch.ones(model.num_gated_blocks, dtype=torch.bool)
    path = [keep]
    while keep.any():
        tries = torch.stack([keep & (torch.arange(len(keep)) != i) for i in torch.nonzero(keep).flatten().tolist()])
        keep = tries[int(np.argmax(mask_table(model, cases, tries, classes, bf16).mean(1)))]
        path.append(keep)
    return torch.stack(path)


def best_fixed_paths(model: Any, cases: list[Case], classes: list[int], bf16: bool) -> list[dict[str, Any]]:
    """Per number of blocks used (N down to 0): the path of highest mean Dice on ``cases``, searched over every mask
    up to 12 blocks and by :func:`backward_elimination` above (ResNet-50's 16). ``path``: "1" kept, block 1 first."""
    n = model.num_gated_blocks
    if n <= 12:
        keeps = level_masks(n, 0)
        means, used = mask_table(model, cases, keeps, classes, bf16).mean(1), keeps.sum(1).numpy()
        best = [(rows := np.flatnonzero(used == k))[int(np.argmax(means[rows]))] for k in range(n, -1, -1)]
        keeps, means = keeps[best], means[best]
    else:
        keeps = backward_elimination(model, cases, classes, bf16)
        means = mask_table(model, cases, keeps, classes, bf16).mean(1)
    return [{"blocks_used": int(k.sum()), "path": path_string(k), "dice": float(d)} for k, d in zip(keeps, means)]


def macs_share(macs: Sequence[float], path: str) -> float:
    """Share of the blocks' multiply-accumulates (:meth:`DeepLab3D.block_macs`) a path from
    :func:`evaluate_paths` ("1" kept, "0" dropped) runs."""
    return sum(m for m, k in zip(macs, path) if k == "1") / sum(macs)


def sweep_strategies(
    model: Any,
    cases: list[Case],
    classes: list[int],
    repeats: int,
    seed: int,
    bf16: bool,
    progress: Callable[[Iterable], Iterable] | None = None,
    exhaustive: bool = False,
) -> list[dict[str, Any]]:
    """Mean Dice for every heuristic mask of :func:`sweep_masks`, plus the full network, with each case's Dice;
    with ``exhaustive``, every mask as well (:func:`every_mask`), for the best fixed path at each cost."""
    n = model.num_gated_blocks
    masks = [("Full", 0, 0, torch.ones(n, dtype=torch.bool)), *sweep_masks(n, repeats, seed), *(every_mask(n) if exhaustive else [])]
    rows = []
    for strategy, param, dropped, keep in progress(masks) if progress else masks:
        per_case = evaluate_paths(model, cases, lambda _cid, _img, k=keep: k, classes, bf16)
        rows.append(
            {
                "strategy": strategy,
                "n": param,
                "blocks_dropped": dropped,
                "keep": keep.int().tolist(),
                "dice": float(np.mean([r["dice"] for r in per_case])),
                "per_case": {r["case"]: r["dice"] for r in per_case},  # the oracle's table (leanseg.dynamic.headroom)
            }
        )
    return rows


def summarise_sweep(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """Strategy -> parameter n -> mean and std of Dice (DropRandomN over its repeats)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        out[strategy] = {}
        for n in sorted({r["n"] for r in rows if r["strategy"] == strategy}):
            vals = [r["dice"] for r in rows if r["strategy"] == strategy and r["n"] == n]
            dropped = next(r["blocks_dropped"] for r in rows if r["strategy"] == strategy and r["n"] == n)
            out[strategy][n] = {"dice": float(np.mean(vals)), "std": float(np.std(vals)), "blocks_dropped": dropped}
    return out


def draw_sweep(
    bars: Any, curves: Any, summary: dict[str, dict[int, dict[str, float]]], policies: list[dict[str, Any]] | None = None
) -> None:
    """DropN as bars on ``bars``; DropFirstN, DropLastN, DropRandomN (mean and std) and policies against blocks dropped on ``curves``."""
    full = summary["Full"][0]["dice"]
    dn = summary["DropN"]
    bars.bar([n + 1 for n in dn], [v["dice"] for v in dn.values()], color="tab:gray")
    bars.axhline(full, color="k", ls="--", lw=1, label=f"full network {full:.3f}")
    bars.set(xlabel="dropped block (DropN)", ylabel="mean Dice", title="DropN")
    bars.set_ylim(min(v["dice"] for v in dn.values()) - 0.05, full + 0.02)
    bars.legend(fontsize=8)
    for name, style in (("DropFirstN", "s-"), ("DropLastN", "^-"), ("DropRandomN", "o-")):
        d = summary[name]
        xs = [0] + [v["blocks_dropped"] for v in d.values()]
        ys = [full] + [v["dice"] for v in d.values()]
        curves.plot(xs, ys, style, label=name)
        if name == "DropRandomN":
            sd = [0.0] + [v["std"] for v in d.values()]
            curves.fill_between(xs, np.subtract(ys, sd), np.add(ys, sd), alpha=0.2)
    for p in policies or []:
        curves.plot(p["mean_blocks_dropped"], p["dice"], "*", ms=12, label=f"AutoPath tau={p.get('label', format(p['tau'], 'g'))}")
    curves.set(xlabel="blocks dropped", ylabel="mean Dice", title="strategies and policies")
    curves.legend(fontsize=7)
    for ax in (bars, curves):
        ax.grid(alpha=0.3)


def plot_sweep(summary: dict[str, dict[int, dict[str, float]]], path: Path, policies: list[dict[str, Any]] | None = None) -> None:
    """Dice against blocks dropped for each strategy (AutoPath Figures 3-7), policies as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    draw_sweep(a, b, summary, policies)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def matched_heuristics(
    model: Any, cases: list[Case], dropped: dict[str, int], classes: list[int], repeats: int, rng: np.random.Generator, bf16: bool
) -> dict[str, float]:
    """The heuristics at a policy's own dropping level (the paper's Table 1): on each case, DropFirstN, DropLastN and
    DropRandomN drop as many blocks as ``dropped[case_id]``. Mean Dice over cases; DropRandomN over ``repeats`` draws
    (with their std)."""
    from leanseg.dynamic.strategies import drop_first, drop_last, drop_random

    n = model.num_gated_blocks

    def mean_dice(keep_for: Callable[[str, torch.Tensor], torch.Tensor]) -> float:
        return float(np.mean([r["dice"] for r in evaluate_paths(model, cases, keep_for, classes, bf16)]))

    out = {
        "DropFirstN": mean_dice(lambda cid, _img: drop_first(n, dropped[cid])),
        "DropLastN": mean_dice(lambda cid, _img: drop_last(n, dropped[cid])),
    }
    draws = [mean_dice(lambda cid, _img: drop_random(n, dropped[cid], rng)) for _ in range(repeats)]
    return {**out, "DropRandomN": float(np.mean(draws)), "DropRandomN_std": float(np.std(draws))}


def blocks_used_histogram(per_case: list[dict[str, Any]], num_blocks: int) -> list[int]:
    """How many cases ran 0, 1, ..., ``num_blocks`` blocks (the paper's Figure 8), from :func:`evaluate_paths` rows."""
    return np.bincount([r["blocks_used"] for r in per_case], minlength=num_blocks + 1).tolist()
