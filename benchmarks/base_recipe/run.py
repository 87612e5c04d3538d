"""Base recipe: what a 2-core CPU's training minutes buy on hippocampus, measured variant by variant.

Each cell trains one recipe variant on one fold of the 5-fold split of the 208 shared MSD hippocampus cases
for ``--minutes`` of wall clock (2 threads, alone on the machine), then predicts the held-out fold from the
original NIfTI files and scores Dice and HD95 there. ``peer`` is the plain MONAI recipe
(``monai_peer.py``, no leanseg code) under the same minutes and split. Screen on one fold, then confirm the
finalists on all five:

    python benchmarks/base_recipe/run.py --folds 0 --variants default monai_unet fast peer     # screen
    python benchmarks/base_recipe/run.py --folds 0 1 2 3 4 --variants default peer best       # confirm

Cells already in the results file (same minutes) are kept, so a long confirmation can run in parts.
``--profile`` also times one training step per variant, split into data, forward, backward and optimiser.
Writes benchmarks/results/base_recipe.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown, held_out_references, predict_held_out, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PEER = Path(__file__).with_name("monai_peer.py")

# each variant: overrides of leanseg's defaults (no config file), one factor at a time from ``default``
NO_AUGMENT = {f"augment.{k}": 0.0 for k in ("rotate_scale", "noise", "smooth", "sharpen", "contrast", "shift")}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "monai_unet": {"model.name": "monai_unet"},
    "monai_unet_b4": {"model.name": "monai_unet", "train.batch_size": 4},
    "fast": {"model.features": [8, 32, 64, 128], "model.extra": {"decoder_convs": 1}},
    "fast_b4": {"model.features": [8, 32, 64, 128], "model.extra": {"decoder_convs": 1}, "train.batch_size": 4},
    "sgd": {"train.optimizer": "sgd", "train.lr": 0.01, "train.weight_decay": 3e-5},  # the default until issue 33
    "adam": {"train.optimizer": "adam", "train.lr": 1e-3, "train.weight_decay": 3e-5},
    "adamw": {"train.optimizer": "adamw", "train.lr": 1e-3, "train.weight_decay": 1e-2},
    "monai_unet_adam": {"model.name": "monai_unet", "train.optimizer": "adam", "train.lr": 1e-3},
    "batch4": {"train.batch_size": 4},
    "small_patch_b4": {"data.patch_size": [32, 48, 32], "train.batch_size": 4},
    "no_deep_supervision": {"model.deep_supervision": False},
    "fp32": {"train.bf16": False},
    "flips_only": NO_AUGMENT,  # under the default optimiser of the run's time (SGD before issue 33's move)
    "adamw_flips": {"train.optimizer": "adamw", "train.lr": 1e-3, "train.weight_decay": 1e-2, **NO_AUGMENT},
    "foreground_half": {"data.foreground_oversample": 0.5},
    "peer": {},  # monai_peer.py
}
INFERENCE = {  # inference settings scored on the default variant's model (no retraining)
    "eager, overlap 0.5": {},
    "bf16": {"backend": "bf16"},
    "overlap 0.25": {"overlap": 0.25},
    "mirroring (8 flips)": {"tta": True},
}


def train_job(data: str, run: str, overrides: dict, fold: int) -> dict:
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    r = train(data, run, ExperimentConfig().with_overrides(overrides), fold=fold, show_progress=False, resume=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds, "ended_by": r.ended_by, "data_wait_share": r.data_wait_share}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--folds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["default", "peer"], choices=list(VARIANTS))
    ap.add_argument("--inference", action="store_true", help="also score the inference settings on the default model")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also time one training step of every variant (cells already in the results file are not retrained)",
    )
    ap.add_argument("--ensemble", default=None, help="also time the ensemble of this variant's 5 fold models per case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    benchmark_arguments(ap, "base_recipe", "/tmp/leanseg_bench/base_recipe")
    args = ap.parse_args()
    if args.smoke:  # every section, on a few iterations
        args.inference, args.profile, args.ensemble = True, True, args.ensemble or "default"

    from leanseg.bench import Results, results_folder, smoke_phantoms
    from leanseg.config import ExperimentConfig
    from leanseg.data.datasets import load_dataset
    from leanseg.data.prepare import make_splits, prepare_data

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = str(smoke_phantoms(work)) if args.smoke else args.data
    prepare_data(Path(data), ExperimentConfig())  # fingerprint + cache once, outside every budget
    ds = load_dataset(data)
    minutes = 0.05 if args.smoke else args.minutes
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "base_recipe",
        render_markdown,
        plot,
        threads=args.threads,
        seed=args.seed,
        split="5-fold, split_seed 12345 (leanseg's); each cell scored on its held-out fold",
        data=f"{len(ds.cases)} cases of {data}",
        smoke=args.smoke,
        minutes=minutes,
        variants=dict(VARIANTS),
        cells={},
        inference={},
        profile={},
        ensemble={},
    )
    results.keep_cells("cells", same=("minutes",))
    results.keep("inference")
    results.keep("profile")
    results.keep("ensemble")
    splits = make_splits([c.case_id for c in ds.cases], 5, 12345)
    for fold in args.folds:
        refs = held_out_references(ds, splits[fold]["val"], work / f"references_fold{fold}")
        for variant in args.variants:
            key = f"{variant}/fold{fold}"
            if key in results["cells"]:
                continue
            print(f"{key}: training {minutes} min", flush=True)
            results["cells"][key] = {**run_cell(variant, fold, data, refs, minutes, args, work), "cpu": results["machine"]["cpu"]}
            results.write()
    if args.inference:
        results["inference"] = score_inference(work / "runs" / f"default/fold{args.folds[0]}", data, work, args)
    if args.ensemble:
        results["ensemble"] = time_ensemble(args.ensemble, data, ds, splits, work, args)
    if args.profile:
        shown = args.variants if args.smoke else list(VARIANTS)  # every variant's step, trained or not
        results["profile"] = {v: profile_step(v, data, args.smoke) for v in shown if v != "peer"}
        results["profile"]["default, channels-last 3D"] = profile_step("default", data, args.smoke, channels_last=True)
    results.write(with_plot=True)
    print(results.markdown())


def run_cell(variant: str, fold: int, data: str, refs: Path, minutes: float, args: argparse.Namespace, work: Path) -> dict:
    """Train ``variant`` on ``fold`` for ``minutes`` in its own process, predict the held-out fold, score it."""
    from leanseg.metrics import evaluate_folders

    run, pred = work / "runs" / variant / f"fold{fold}", work / "predictions" / variant / f"fold{fold}"
    for p in (run, pred):
        shutil.rmtree(p, ignore_errors=True)
    if variant == "peer":
        cell = peer_cell(data, refs, pred, minutes, args)
    else:
        overrides = {
            **VARIANTS[variant],
            "train.budget_minutes": minutes,
            "train.seed": args.seed,
            "train.num_threads": args.threads,
            **({"train.iterations": 3} if args.smoke else {}),
        }
        cell, rss = run_isolated(train_job, data, str(run), overrides, fold, inline=args.smoke)
        cell.update(peak_rss_mib=rss, curve=validation_curve(run), **predict_held_out(run, data, refs, pred, {}, args.threads))
    scores = evaluate_folders(pred, refs)
    cell.update(dice=scores["mean"], cases=len(scores["cases"]), seconds_per_iteration=cell["train_seconds"] / max(cell["iterations"], 1))
    print(f"  mean Dice {scores['mean']['dice_mean']:.4f}, {cell['iterations']} iterations", flush=True)
    return cell


def peer_cell(data: str, refs: Path, pred: Path, minutes: float, args: argparse.Namespace) -> dict:
    """The plain MONAI recipe in its own process (its peak memory is its own, read from /usr/bin/time's report)."""
    ids = pred.parent / f"{pred.name}_val_ids.txt"
    ids.parent.mkdir(parents=True, exist_ok=True)
    ids.write_text("\n".join(sorted(p.name.split(".")[0] for p in refs.iterdir())))
    cmd = [sys.executable, str(PEER), "--data", data, "--val-ids", str(ids), "--out", str(pred), "--minutes", str(minutes)]
    cmd += ["--threads", str(args.threads), "--seed", str(args.seed)] + (["--iterations", "3"] if args.smoke else [])
    t0 = time.time()
    out = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib %M", *cmd], capture_output=True, text=True, check=True)
    rss = [line for line in out.stderr.splitlines() if line.startswith("maxrss_kib")]
    cell = json.loads(out.stdout.strip().splitlines()[-1])
    return {**cell, "peak_rss_mib": int(rss[-1].split()[1]) / 1024 if rss else None, "wall_seconds": time.time() - t0}


def validation_curve(run: Path) -> list[tuple[float, float]]:
    """(seconds, validation Dice) pairs of a run's metrics.csv: the Dice-against-minutes curve."""
    from leanseg.training.history import read_history

    return [(r["seconds"], r["val_dice"]) for r in read_history(run) if "val_dice" in r]


def score_inference(run: Path, data: str, work: Path, args: argparse.Namespace) -> dict:
    """Each inference setting on one trained model: Dice on the held-out fold and seconds per case."""
    from leanseg.metrics import evaluate_folders

    refs = work / f"references_fold{args.folds[0]}"
    out = {}
    for name, settings in INFERENCE.items():
        pred = work / "predictions" / "inference" / name.replace(" ", "_")
        shutil.rmtree(pred, ignore_errors=True)
        timing = predict_held_out(run, data, refs, pred, settings, args.threads)
        out[name] = {**timing, "dice": evaluate_folders(pred, refs)["mean"]}
    return out


def time_ensemble(variant: str, data: str, ds: Any, splits: list, work: Path, args: argparse.Namespace) -> dict:
    """Seconds per case of the ensemble of ``variant``'s fold models (the folds trained so far) against one model,
    on the first member's held-out cases. Its Dice is not scored: every other member has seen those cases."""
    runs = sorted((work / "runs" / variant).glob("fold*"))
    if not runs:
        raise SystemExit(f"--ensemble {variant}: no fold models under {work / 'runs' / variant}; train its folds first.")
    fold = int(runs[0].name.removeprefix("fold"))
    refs = held_out_references(ds, splits[fold]["val"], work / f"references_fold{fold}")
    one = predict_held_out(runs[0], data, refs, work / "predictions" / "ensemble_one", {}, args.threads)
    out = work / "predictions" / "ensemble"
    shutil.rmtree(out, ignore_errors=True)
    every = predict_held_out(runs, data, refs, out, {}, args.threads)  # type: ignore[arg-type]
    return {
        "variant": variant,
        "members": len(runs),
        "cases_of_fold": fold,
        "one_model": one["predict_seconds_per_case"],
        "ensemble": every["predict_seconds_per_case"],
    }


def profile_step(variant: str, data: str, smoke: bool, channels_last: bool = False) -> dict:
    """Seconds of one training step of ``variant`` (mean of 10 after 3 warm-up), split into its parts."""
    from leanseg.config import ExperimentConfig
    from leanseg.training.profile import profile_training_step

    cfg = ExperimentConfig().with_overrides(VARIANTS[variant])
    return profile_training_step(Path(data), cfg, steps=2 if smoke else 10, channels_last=channels_last)


def render_markdown(r: dict) -> str:
    lines = ["# Base recipe: leanseg's training recipe on hippocampus, variant by variant", "", *header_markdown(r)]
    lines += [f"Budget: {r['minutes']} min of training per cell (the clock ends it), 2 threads, alone on the machine.", ""]
    head = "| variant | folds | mean Dice | per fold | anterior / posterior | HD95 (mm) | iterations | s / iteration | peak RSS (MiB) |"
    lines += [head, "|---|---|---|---|---|---|---|---|---|"]
    by_variant: dict[str, list[tuple[int, dict]]] = {}
    for key, cell in r["cells"].items():
        variant, fold = key.split("/fold")
        by_variant.setdefault(variant, []).append((int(fold), cell))
    for variant, cells in sorted(by_variant.items(), key=lambda kv: -_mean([c["dice"]["dice_mean"] for _, c in kv[1]])):
        cells.sort()
        dice = [c["dice"]["dice_mean"] for _, c in cells]
        per = ", ".join(f"{f}: {d:.4f}" for (f, _), d in zip(cells, dice))
        its = _mean([c["iterations"] for _, c in cells])
        spi = _mean([c["seconds_per_iteration"] for _, c in cells])
        rss = max((c.get("peak_rss_mib") or 0) for _, c in cells)
        classes = " / ".join(f"{_mean([c['dice'][f'dice_{k}'] for _, c in cells]):.4f}" for k in (1, 2))
        hd = _mean([c["dice"]["hd95_mean"] for _, c in cells])
        lines.append(f"| {variant} | {len(cells)} | {_mean(dice):.4f} | {per} | {classes} | {hd:.2f} | {its:.0f} | {spi:.3f} | {rss:.0f} |")
    if r.get("inference"):
        lines += ["", "Inference settings on the default model (no retraining):", "", "| setting | mean Dice | s / case |", "|---|---|---|"]
        lines += [f"| {k} | {v['dice']['dice_mean']:.4f} | {v['predict_seconds_per_case']:.3f} |" for k, v in r["inference"].items()]
    if r.get("ensemble"):
        e = r["ensemble"]
        lines += [
            "",
            f"Ensemble of `{e['variant']}`'s {e['members']} fold models: {e['ensemble']:.3f} s per case against {e['one_model']:.3f} s for one "
            f"(fold {e.get('cases_of_fold', 0)}'s held-out cases; its Dice is not scored on the 208, which every member but one has seen).",
        ]
    if r.get("profile"):
        lines += ["", "One training step (s; mean of 10 after 3 warm-up steps):", ""]
        head = "| variant | data wait | forward | loss | backward | optimiser | total | making a batch | parameters (M) | convolution time by resolution |"
        lines += [head, "|---|---|---|---|---|---|---|---|---|---|"]
        for v, p in r["profile"].items():
            parts = " | ".join(f"{p[k]:.3f}" for k in ("data", "forward", "loss", "backward", "optimizer", "total"))
            shares = sorted(((k, x) for k, x in p["convolution_share"].items() if k != "other"), key=lambda kv: -_voxels(kv[0]))
            by_size = ", ".join(f"{k}: {100 * x:.0f} %" for k, x in shares if x >= 0.01)
            batch = f"{p['batch_cpu_seconds']:.3f}" if "batch_cpu_seconds" in p else "-"
            lines.append(f"| {v} | {parts} | {batch} | {p['parameters'] / 1e6:.2f} | {by_size} |")
    lines += ["", "Variants (overrides of leanseg's defaults):", ""]
    lines += [
        f"- `{k}`: {json.dumps(v) if v else ('the plain MONAI recipe, monai_peer.py' if k == 'peer' else 'none')}"
        for k, v in r["variants"].items()
    ]
    return "\n".join(lines) + "\n"


def _voxels(size: str) -> int:
    a, b, c = (int(v) for v in size.split("x"))
    return a * b * c


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, cell in sorted(r["cells"].items()):
        if cell.get("curve"):
            s, d = zip(*cell["curve"])
            ax.plot([x / 60 for x in s], d, marker=".", label=f"{key} (validation cases)")
        ax.scatter([cell["train_seconds"] / 60], [cell["dice"]["dice_mean"]], marker="*", s=80)
    ax.set_xlabel("training minutes (2 threads)")
    ax.set_ylabel("mean foreground Dice")
    ax.set_title("Dice against minutes; stars: held-out fold, original grid")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
