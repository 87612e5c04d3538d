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
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("resunet", "monai_unet")
BACKENDS = ("eager", "bf16", "onnx")
CONFIG = ROOT / "configs" / "hippocampus_baseline.yaml"


def train_job(data: str, run: str, overrides: dict, fold: int) -> dict:
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    cfg = ExperimentConfig.load(CONFIG).with_overrides(overrides)
    r = train(data, run, cfg, fold=fold, show_progress=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds, "data_wait_share": r.data_wait_share, **r.val}


def predict_job(data: str, run: str, out: str, backend: str, threads: int, fold: int, tta: bool = False) -> dict:
    import torch

    from leanseg.data.datasets import load_dataset
    from leanseg.inference import Predictor

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    val = json.loads((Path(run) / "splits.json").read_text())[fold]["val"]
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
    ap.add_argument("--work", default="/tmp/leanseg_bench/hippocampus_baseline")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--reuse", action="store_true", help="keep trained runs in --work and their training figures; predict again")
    args = ap.parse_args()

    from leanseg.bench import machine_info, run_isolated, timing_stats, write_results
    from leanseg.config import ExperimentConfig
    from leanseg.data.datasets import load_dataset
    from leanseg.data.prepare import prepare_data
    from leanseg.export import export_onnx
    from leanseg.metrics import evaluate_folders

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    earlier = _previous_results() if args.reuse else {}
    t0 = time.time()
    prepare_data(Path(args.data), ExperimentConfig())  # fingerprint + cache once, outside the budget
    prep_s = time.time() - t0
    ds = load_dataset(args.data)
    refs = work / "references"
    refs.mkdir(exist_ok=True)
    for c in ds.cases:
        shutil.copy(c.label, refs / c.label.name)  # type: ignore[arg-type]

    out: dict = {
        "benchmark": "hippocampus_baseline",
        "machine": machine_info(args.threads),
        "data": {"path": args.data, "cases": len(ds.cases), "split": f"5-fold, split_seed 12345, validation fold {args.fold}"},
        "seed": args.seed,
        "budget_minutes": args.minutes,
        "config": str(CONFIG.relative_to(ROOT)),
        "preprocessing_seconds": prep_s,
        "models": {},
    }
    curves = {}
    for name in args.models:
        run = work / name
        previous = earlier.get(name) if args.reuse and (run / "checkpoint_final.pt").is_file() else None
        if previous is None:
            if run.exists():
                shutil.rmtree(run)
            overrides = {
                "model.name": name,
                "train.budget_minutes": args.minutes,
                "train.seed": args.seed,
                "train.num_threads": args.threads,
            }
            print(f"training {name} for {args.minutes} min", flush=True)
            summary, train_rss = run_isolated(train_job, args.data, str(run), overrides, args.fold)
            export_onnx(run)
            trained_at = f"commit {out['machine']['leanseg_commit']}, {out['machine']['date']}"
            entry = {"train": summary, "train_peak_rss_mib": train_rss, "trained_at": trained_at, "backends": {}}
        else:
            entry = {k: previous[k] for k in ("train", "train_peak_rss_mib", "trained_at")} | {"backends": {}}
        import csv

        with open(run / "metrics.csv") as f:
            curves[name] = [r for r in csv.DictReader(f) if r.get("val_dice")]
        for backend, tta in [(b, False) for b in BACKENDS] + [("bf16", True)]:
            key = backend + (" + mirroring" if tta else "")
            pred_dir = work / f"pred_{name}_{backend}{'_tta' if tta else ''}"
            if pred_dir.exists():
                shutil.rmtree(pred_dir)
            print(f"predicting with {name} / {key}", flush=True)
            timing, rss = run_isolated(predict_job, args.data, str(run), str(pred_dir), backend, args.threads, args.fold, tta)
            shutil.rmtree(pred_dir / "warmup")
            metrics = evaluate_folders(pred_dir, refs, ds.labels)
            entry["backends"][key] = {
                "seconds_per_case": timing_stats(timing["seconds"]),
                "network_seconds_per_case": timing_stats(timing["network_seconds"]),
                "peak_rss_mib": rss,
                "mean": metrics["mean"],
            }
        out["models"][name] = entry
        out["total_seconds"] = time.time() - t0
        write_results(RESULTS / "hippocampus_baseline.json", out, render_markdown(out))
    plot(curves, RESULTS / "hippocampus_baseline.png")
    write_results(RESULTS / "hippocampus_baseline.json", out, render_markdown(out))
    print(render_markdown(out))


def _previous_results() -> dict[str, dict]:
    """Training figures per model from the last results file (read once, before it is rewritten)."""
    path = RESULTS / "hippocampus_baseline.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    for entry in old.get("models", {}).values():
        entry.setdefault("trained_at", f"commit {old['machine']['leanseg_commit']}, {old['machine']['date']}")
    return old.get("models", {})


def render_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Hippocampus baseline",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB; {m['threads']} threads; "
        f"Python {m['python']}, torch {m['torch']}, MONAI {m['monai']}, ONNX Runtime {m['onnxruntime']}; commit {m['leanseg_commit']}; {m['date']}.",
        f"Data: {r['data']['cases']} MSD hippocampus cases, {r['data']['split']}; seed {r['seed']}; "
        f"config `{r['config']}`, training budget {r['budget_minutes']} min per model; preprocessing {r['preprocessing_seconds']:.0f} s (once, cached).",
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
        "Training (15 min each; validation Dice here is the trainer's, on 20 of the 42 held-out cases on the preprocessed grid):",
        "",
        "| model | iterations | training s | data wait share | training peak RSS (MiB) | trainer's validation Dice | trained at |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in r["models"].items():
        t = e["train"]
        lines.append(
            f"| {name} | {t['iterations']} | {t['train_seconds']:.0f} | {100 * t['data_wait_share']:.1f}% | {e['train_peak_rss_mib']:.0f} "
            f"| {t['val_dice']:.4f} | {e.get('trained_at', '')} |"
        )
    lines += ["", "![validation Dice during training](hippocampus_baseline.png)", ""]
    return "\n".join(lines)


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        ax.plot([float(r["seconds"]) / 60 for r in rows], [float(r["val_dice"]) for r in rows], "o-", label=name)
    ax.set_xlabel("training time (min, 2 threads)")
    ax.set_ylabel("validation Dice (20 cases, preprocessed grid)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if sys.argv[1:] == ["--render"]:  # rewrite the .md from the committed .json
        data = json.loads((RESULTS / "hippocampus_baseline.json").read_text())
        (RESULTS / "hippocampus_baseline.md").write_text(render_markdown(data))
    else:
        main()
