"""Hippocampus baseline: leanseg's residual U-Net against MONAI's UNet, same budget, same pipeline.

Trains both on folds 1-4 of a deterministic 5-fold split of the 208 shared MSD hippocampus cases
(fold 0, 42 cases, held out for validation) under the same wall-clock budget on 2 threads, then
predicts the held-out fold from the original NIfTI files with each CPU back-end and evaluates Dice
and HD95 in millimetres on the original grid.

    python benchmarks/hippocampus_baseline/run.py [--minutes 15] [--data ../shared/data/Task04_Hippocampus]

Writes benchmarks/results/hippocampus_baseline.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from leanseg.bench import benchmark_arguments, header_markdown, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("resunet", "monai_unet")
BACKENDS = ("eager", "bf16", "onnx")
CONFIG = ROOT / "configs" / "hippocampus_baseline.yaml"


def train_job(data: str, run: str, overrides: dict, fold: int) -> dict:
    """Train one model with the baseline config and ``overrides``; the run's summary figures."""
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    cfg = ExperimentConfig.load(CONFIG).with_overrides(overrides)
    r = train(data, run, cfg, fold=fold, show_progress=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds, "data_wait_share": r.data_wait_share, **r.val}


def predict_job(data: str, run: str, out: str, backend: str, threads: int, fold: int, tta: bool = False) -> dict:
    import torch

    from leanseg.data.datasets import load_dataset
    from leanseg.inference import Predictor
    from leanseg.runfolder import RunFolder

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    val = RunFolder(run).split(fold)["val"]
    p = Predictor.from_run(run, backend=backend, num_threads=threads, tta=tta)
    cases = [(c, list(ds.case(c).images)) for c in val]
    p.predict_files(cases[:2], Path(out) / "warmup")  # first calls allocate and tune kernels
    results = p.predict_files(cases, out)
    return {
        "seconds": [r.seconds for r in results],
        "network_seconds": [r.timings["network"] for r in results],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--reuse", action="store_true", help="keep trained runs in --work and their training figures; predict again")
    benchmark_arguments(ap, "hippocampus_baseline", "/tmp/leanseg_bench/hippocampus_baseline")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder, smoke_phantoms
    from leanseg.config import ExperimentConfig
    from leanseg.data.datasets import load_dataset
    from leanseg.data.prepare import prepare_data

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = str(smoke_phantoms(work)) if args.smoke else args.data
    t0 = time.time()
    prepare_data(Path(data), ExperimentConfig())  # fingerprint + cache once, outside the budget
    ds = load_dataset(data)
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "hippocampus_baseline",
        render_markdown,
        plot,
        threads=args.threads,
        seed=args.seed,
        split=f"5-fold, split_seed 12345, validation fold {args.fold}",
        data=f"{len(ds.cases)} cases of {data}",
        smoke=args.smoke,
        budget=f"{args.minutes} min per model" if not args.smoke else "5 iterations per model",
        config=str(CONFIG.relative_to(ROOT)),
        work=str(work),
        preprocessing_seconds=time.time() - t0,
        models={},
        training={},
    )
    from leanseg.data.prepare import make_splits

    cfg = ExperimentConfig.load(CONFIG)
    val = make_splits([c.case_id for c in ds.cases], cfg.data.num_folds, cfg.data.split_seed)[args.fold]["val"]
    refs = work / "references"  # the held-out fold's labels: evaluate refuses references that have no prediction
    shutil.rmtree(refs, ignore_errors=True)
    refs.mkdir()
    for c in val:
        shutil.copy(ds.case(c).label, refs / ds.case(c).label.name)  # type: ignore[arg-type]
    for name in args.models:
        run = work / name
        if not (args.reuse and (run / "checkpoint_final.pt").is_file() and results.keep("training", name)):
            budget = {"train.iterations": 5, "train.budget_minutes": None} if args.smoke else {"train.budget_minutes": args.minutes}
            train_model(run, name, data, {**budget, "train.seed": args.seed, "train.num_threads": args.threads}, args, results)
        results["models"][name] = predict_backends(run, data, refs, ds.labels, args, work)
        results["total_seconds"] = time.time() - t0
        results.write()
    results.write(with_plot=True)
    print(results.markdown())


def train_model(run: Path, name: str, data: str, overrides: dict, args: argparse.Namespace, results) -> None:
    """Train ``name`` afresh in ``run`` (in its own process: its peak memory is its own), export it for ONNX Runtime."""
    from leanseg.export import export_onnx

    if run.exists():
        shutil.rmtree(run)
    print(f"training {name}", flush=True)
    summary, train_rss = run_isolated(train_job, data, str(run), {"model.name": name, **overrides}, args.fold, inline=args.smoke)
    export_onnx(run)
    results["training"][name] = {**summary, "peak_rss_mib": train_rss}


def predict_backends(run: Path, data: str, refs: Path, labels: dict, args: argparse.Namespace, work: Path) -> dict:
    """Predict the held-out fold with every back-end (and bf16 with mirroring); time per case and Dice/HD95 on the original grid."""
    from leanseg.bench import timing_stats
    from leanseg.metrics import evaluate_folders

    backends = {}
    for backend, tta in [(b, False) for b in BACKENDS] + [("bf16", True)]:
        key = backend + (" + mirroring" if tta else "")
        pred_dir = work / f"pred_{run.name}_{backend}{'_tta' if tta else ''}"
        if pred_dir.exists():
            shutil.rmtree(pred_dir)
        print(f"predicting with {run.name} / {key}", flush=True)
        timing, rss = run_isolated(predict_job, data, str(run), str(pred_dir), backend, args.threads, args.fold, tta, inline=args.smoke)
        shutil.rmtree(pred_dir / "warmup")
        metrics = evaluate_folders(pred_dir, refs, labels)
        backends[key] = {
            "seconds_per_case": timing_stats(timing["seconds"]),
            "network_seconds_per_case": timing_stats(timing["network_seconds"]),
            "peak_rss_mib": rss,
            "mean": metrics["mean"],
        }
    return {"backends": backends}


def render_markdown(r: dict) -> str:
    lines = [
        "# Hippocampus baseline",
        "",
        *header_markdown(r),
        f"Config `{r['config']}`, training budget {r['budget']}; preprocessing {r['preprocessing_seconds']:.0f} s (once, cached).",
        "",
        "Dice and HD95 on the held-out fold, on the original grid (label files written by `leanseg predict`).",
        "",
        "| model | back-end | Dice anterior | Dice posterior | mean Dice | HD95 anterior (mm) | HD95 posterior (mm) | s / case (mean ± sd) | network s / case | peak RSS predict (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in r["models"].items():
        for b, v in e["backends"].items():
            mm, s, n = v["mean"], v["seconds_per_case"], v["network_seconds_per_case"]
            lines.append(
                f"| {name} | {b} | {mm['dice_1']:.4f} | {mm['dice_2']:.4f} | **{mm['dice_mean']:.4f}** | {mm['hd95_1']:.2f} | {mm['hd95_2']:.2f} "
                f"| {s['mean']:.3f} ± {s['std']:.3f} | {n['mean']:.3f} | {v['peak_rss_mib']:.0f} |"
            )
    lines += [
        "",
        f"Training ({r['budget']}; validation Dice here is the trainer's, on 20 of the held-out cases on the preprocessed grid):",
        "",
        "| model | iterations | training s | data wait share | training peak RSS (MiB) | trainer's validation Dice |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in r["training"].items():
        lines.append(
            f"| {name} | {t['iterations']} | {t['train_seconds']:.0f} | {100 * t['data_wait_share']:.1f}% | {t['peak_rss_mib']:.0f} | {t['val_dice']:.4f} |"
        )
    lines += ["", "![validation Dice during training](hippocampus_baseline.png)", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leanseg.training.history import read_history

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in r["training"]:
        log = Path(r["work"]) / name / "metrics.csv"
        if not log.is_file():
            continue
        rows = [row for row in read_history(log.parent) if "val_dice" in row]
        ax.plot([row["seconds"] / 60 for row in rows], [row["val_dice"] for row in rows], "o-", label=name)
    ax.set_xlabel("training time (min, 2 threads)")
    ax.set_ylabel("validation Dice (20 cases, preprocessed grid)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
