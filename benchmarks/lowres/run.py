"""LowRes two-stage inference against full-resolution networks on large chest CTs (the paper's Tables 1-2, Figure 1).

Data: ``--cases`` seeded synthetic LUNA16-like chest CTs (300 x 300 x 200 voxels, 1 x 1 x 1.5 mm, 2-6
nodules of 3-30 mm each), fold 0 of a 6-fold split held out. Three models trained on the same
training cases, each for a fixed number of iterations (so a busy machine changes how long training
takes, not what is learned):

* ``unet``: the base residual U-Net with its planned patch, predicted by Gaussian sliding windows;
* ``light``: the same U-Net at a quarter of the widths (a lighter full-resolution network);
* ``lowres``: the two-stage model (``configs/lowres_chest.yaml``), stage one then stage two.

Inference on the held-out volumes, each model in a fresh process (its peak resident memory is the
process's), eager fp32, at 2 threads on every held-out case and at 1 thread on the first
``--timing-cases``; one warm-up on a crop first. Quality from the 2-thread run: object recall,
FROC (LUNA16 seven-point and the paper's average recall over 0-5 false positives per scan), object
Dice and plain Dice.

    python benchmarks/lowres/run.py [--cases 24] [--reuse]

Writes benchmarks/results/lowres.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.bench import benchmark_arguments, header_markdown, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("unet", "light", "lowres")
LABELS = {"unet": "residual U-Net (sliding window)", "light": "light U-Net (1/4 widths)", "lowres": "LowRes (two-stage)"}


def configs(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[str, Any]]]:
    """Each model: its training runs in order, as (run name, config)."""
    from leanseg.config import ExperimentConfig

    smoke = {"data.patch_size": [32, 32, 32]} if args.smoke else {}
    common = {
        **smoke,
        "data.num_folds": 6,
        "train.val_every": 10**6,
        "train.val_max_cases": 1,
        "train.checkpoint_every": 250,
        "train.seed": args.seed,
        "train.num_threads": args.train_threads,
    }
    # SGD learns little in a few hundred iterations here (LowRes stage two collapsed to background, validation
    # Dice 0.0 after 600; the U-Net's held-out Dice was 0.23 after 600); Adam at 1e-3 gave stage two Dice 0.36
    # after 300 iterations, so every full-resolution network and stage two train with it
    adam = {"train.optimizer": "adam", "train.lr": 1e-3}
    unet = ExperimentConfig().with_overrides({**common, "train.iterations": args.unet_iterations, **adam})
    light = unet.with_overrides({"model.base_features": 4, "model.max_features": 64, "train.iterations": args.light_iterations})
    one = ExperimentConfig.load(ROOT / "configs" / "lowres_chest.yaml").with_overrides(
        {**common, "train.iterations": args.stage1_iterations}
    )
    two = one.with_overrides(
        {
            "model.extra": {**one.model.extra, "stage": 2},
            "data.patch_size": [32, 32, 32] if args.smoke else [64, 64, 64],
            "data.foreground_oversample": 1.0,  # it only ever sees boxes around stage one's candidates
            "train.iterations": args.stage2_iterations,
            **adam,
            "train.init_checkpoint": str(work / "lowres_stage1" / "checkpoint_final.pt"),
        }
    )
    return {"unet": [("unet", unet)], "light": [("light", light)], "lowres": [("lowres_stage1", one), ("lowres", two)]}


def evaluate(run_dir: str, cases: list[tuple[str, str, str]], threads: int, quality: bool) -> dict[str, Any]:
    """Predict ``cases`` (id, image, label) with ``threads`` threads; times per case and, with ``quality``, the metrics."""
    from leanseg.data.io import Volume, read_image
    from leanseg.inference import Predictor
    from leanseg.metrics import dice
    from leanseg.objects import score_probabilities
    from leanseg.utils import set_threads

    set_threads(threads)
    p = Predictor.from_run(run_dir, num_threads=threads, backend="eager")
    first = read_image([Path(cases[0][1])])
    p.predict_volume(Volume(first.array[:, :160, :160, :128], first.affine))  # warm-up: one-time allocations
    rows = []
    for cid, image_path, label_path in cases:
        image = read_image([Path(image_path)])
        t0 = time.perf_counter()
        probs, timings = p.predict_volume_probabilities(image)
        probs = probs.numpy()
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"case": cid, "seconds": seconds, **timings}
        if quality:
            ref = np.asarray(read_image([Path(label_path)]).array[0]) > 0
            objects, pred = score_probabilities(probs, ref)
            row.update(dice=dice(pred, ref), objects=objects.__dict__)
        rows.append(row)
        print(f"  {Path(run_dir).name} {threads} thread(s) {cid}: {seconds:.2f} s", flush=True)
    return {"cases": rows}


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--unet-iterations", type=int, default=1500)
    ap.add_argument("--light-iterations", type=int, default=1500)
    ap.add_argument("--stage1-iterations", type=int, default=1500)
    ap.add_argument("--stage2-iterations", type=int, default=1500)
    ap.add_argument("--timing-cases", type=int, default=2, help="held-out cases also timed at 1 thread")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep finished training runs in --work")
    ap.add_argument("--only-train", action="store_true", help="train, then stop (time the models later, on an idle machine)")
    ap.add_argument("--train-threads", type=int, default=2, help="threads for training (iterations fix what is learned)")
    ap.add_argument("--keep", nargs="*", default=[], choices=MODELS, help="models whose results are kept from the last results file")
    benchmark_arguments(ap, "lowres", "/tmp/leanseg_bench/lowres")
    return ap


def main() -> None:
    args = arguments().parse_args()
    if args.smoke:  # six small volumes, a few iterations per network
        args.cases, args.timing_cases = 6, 1
        args.unet_iterations = args.light_iterations = args.stage1_iterations = args.stage2_iterations = 3

    from leanseg.bench import Results, results_folder
    from leanseg.data.datasets import load_dataset
    from leanseg.data.prepare import make_splits
    from leanseg.data.synthetic_chest import generate_chest_dataset

    work = Path(args.work)
    data = work / "chest"
    shape = (96, 96, 64) if args.smoke else (300, 300, 200)
    if not (args.reuse and (data / "dataset.json").is_file()):
        print(f"generating {args.cases} chest CTs", flush=True)
        generate_chest_dataset(data, num_cases=args.cases, seed=args.seed, shape=shape, progress=True)
    ds = load_dataset(data)
    runs = configs(args, work)
    split = make_splits([c.case_id for c in ds.cases], 6, runs["unet"][0][1].data.split_seed)[0]
    by_id = {c.case_id: c for c in ds.cases}
    val = [(cid, str(by_id[cid].images[0]), str(by_id[cid].label)) for cid in split["val"]]
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "lowres",
        render,
        plot,
        threads=2,
        seed=args.seed,
        split=f"fold 0 of 6 held out ({len(val)} volumes), the other {len(split['train'])} for training",
        data=f"{args.cases} synthetic chest CTs (seed {args.seed}), {'x'.join(map(str, shape))} voxels at 1x1x1.5 mm",
        smoke=args.smoke,
        backend="eager fp32",
        models={},
    )
    for name in args.models:
        results["models"][name] = train_model(name, runs[name], data, work, args.reuse)
    if args.only_train:
        print(json.dumps(results["models"], indent=1))
        return
    for name in args.keep:
        results.keep("models", name)
    for name in args.models:
        if name not in args.keep:
            results["models"][name].update(evaluate_model(work / name, val, args.timing_cases, name == "lowres", inline=args.smoke))
            results.write()
    results.write(with_plot=True)
    print(results.markdown())


def train_model(name: str, runs: list, data: Path, work: Path, reuse: bool) -> dict[str, Any]:
    """Train a model's runs in order (LowRes: stage one, then stage two); their iterations, minutes and parameters."""
    from leanseg.runfolder import RunFolder
    from leanseg.training import train

    info: dict[str, Any] = {"label": LABELS[name], "training": {}}
    for run_name, cfg in runs:
        run = work / run_name
        if not (reuse and (run / "checkpoint_final.pt").is_file()):
            print(f"training {run_name}", flush=True)
            train(data, run, cfg, fold=0, resume=False)
        summary = RunFolder(run).summary()
        info["training"][run_name] = {"iterations": summary["iterations"], "minutes": summary["train_seconds"] / 60}
    info["parameters"] = _parameters(work / name)
    return info


def evaluate_model(run: Path, val: list, timing_cases: int, two_stage: bool, inline: bool) -> dict[str, Any]:
    """Time a model at 2 threads on the held-out volumes (with their object metrics) and at 1 thread on the first few."""
    from leanseg.bench import timing_stats
    from leanseg.objects import CaseObjects, object_metrics

    print(f"evaluating {run.name}", flush=True)
    res2, rss2 = run_isolated(evaluate, str(run), val, 2, True, inline=inline)
    res1, rss1 = run_isolated(evaluate, str(run), val[:timing_cases], 1, False, inline=inline)
    cases = [CaseObjects(**r["objects"]) for r in res2["cases"]]
    info: dict[str, Any] = {
        "threads": {
            "2": {"seconds": timing_stats([r["seconds"] for r in res2["cases"]]), "peak_rss_mib": rss2, "cases": res2["cases"]},
            "1": {"seconds": timing_stats([r["seconds"] for r in res1["cases"]]), "peak_rss_mib": rss1, "cases": res1["cases"]},
        },
        "quality": {**object_metrics(cases), "dice": float(np.nanmean([r["dice"] for r in res2["cases"]]))},
    }
    if two_stage:
        info["stage_two_fraction"] = float(np.mean([r["fraction"] for r in res2["cases"]]))
        info["stage1_seconds"] = float(np.mean([r["stage1"] for r in res2["cases"]]))
        info["stage2_seconds"] = float(np.mean([r["stage2"] for r in res2["cases"]]))
    return info


def _parameters(run: Path) -> int:
    import torch

    state = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)["model"]
    return int(sum(v.numel() for v in state.values() if v.dtype.is_floating_point))


def render(r: dict[str, Any]) -> str:
    lines = [
        "# LowRes: two-stage inference on large volumes, against full-resolution networks",
        "",
        *header_markdown(r),
        f"Back-end: {r['backend']}.",
        "",
        "| model | parameters | training | s/volume, 2 threads (mean ± sd, n) | s/volume, 1 thread | peak RSS (MiB, 2 thr) "
        "| object recall | FROC LUNA16 | FROC avg recall 0-5 FP | object Dice | Dice | FP/scan |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    unet_t = r["models"].get("unet", {}).get("threads", {}).get("2", {}).get("seconds", {}).get("mean")
    for name, info in r["models"].items():
        if "quality" not in info:
            continue
        t2, t1, q = info["threads"]["2"], info["threads"]["1"], info["quality"]
        train_s = ", ".join(f"{k} {v['iterations']} it / {v['minutes']:.1f} min" for k, v in info["training"].items())
        speed = f" ({unet_t / t2['seconds']['mean']:.1f}x faster)" if unet_t and name != "unet" else ""
        if f"models/{name}" in r.get("kept", {}):
            train_s += f" (measured at {r['kept'][f'models/{name}']})"
        lines.append(
            f"| {info['label']} | {info['parameters'] / 1e6:.2f} M | {train_s} "
            f"| {t2['seconds']['mean']:.2f} ± {t2['seconds']['std']:.2f} (n={t2['seconds']['n']}){speed} "
            f"| {t1['seconds']['mean']:.2f} ± {t1['seconds']['std']:.2f} (n={t1['seconds']['n']}) | {t2['peak_rss_mib']:.0f} "
            f"| {q['object_recall']:.3f} ({q['objects']:.0f} objects) | {q['froc_luna16']:.3f} | {q['froc_avg_recall_0_5']:.3f} "
            f"| {q['object_dice']:.3f} | {q['dice']:.3f} | {q['fp_per_scan']:.2f} |"
        )
    lo = r["models"].get("lowres", {})
    if "stage_two_fraction" in lo:
        lines += [
            "",
            f"LowRes sends {100 * lo['stage_two_fraction']:.2f} % of each volume to stage two on average; "
            f"stage one {lo['stage1_seconds']:.2f} s, stage two {lo['stage2_seconds']:.2f} s per volume (2 threads); the rest of "
            "a volume's time is reading, preprocessing and writing back.",
        ]
    lines += [
        "",
        "Times include preprocessing and inverse preprocessing (not reading the file).",
        "",
        "![time against quality](lowres.png)",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, info in enumerate(r["models"].values()):
        if "quality" not in info:
            continue
        for ax, key, ylabel in (
            (axes[0], "object_recall", "object recall"),
            (axes[1], "froc_avg_recall_0_5", "FROC: average recall, 0-5 FP/scan"),
        ):
            for threads, marker in (("2", "o"), ("1", "s")):
                ax.plot(
                    info["threads"][threads]["seconds"]["mean"],
                    info["quality"][key],
                    marker,
                    color=f"C{i}",
                    ms=8,
                    label=f"{info['label']}, {threads} thread(s)",
                )
            ax.set(xscale="log", xlabel="seconds per volume (log)", ylabel=ylabel, ylim=(0, 1.02))
            ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"time against quality: {r['data']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
