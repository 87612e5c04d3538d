"""LowRes two-stage inference against full-resolution networks on large chest CTs (the paper's Tables 1-2, Figure 1).

Data: ``--cases`` seeded synthetic LUNA16-like chest CTs (300 x 300 x 200 voxels, 1 x 1 x 1.5 mm), with
``--nodules-per-scan`` nodules on average (LUNA16 has 1.34; more here so that the held-out part holds
enough objects) of LUNA16's sizes; fold 0 of a ``--folds``-fold split held out. Their statistics are
stated beside LUNA16's. Three models trained on the same training cases, each for a fixed number of
iterations (so a busy machine changes how long training takes, not what is learned):

* ``unet``: the base residual U-Net with its planned patch, predicted by Gaussian sliding windows at
  overlap 0.5, 0.25 and 0 (plain tiling), in bf16 (the fast path on a CPU with native bf16);
* ``light``: the same U-Net at a quarter of the widths (a lighter full-resolution network), bf16;
* ``lowres``: the two-stage model (``configs/lowres_chest.yaml``), stage one then stage two, eager,
  bf16 and on ONNX Runtime (``leanseg export``; the box loop in Python).

Every entry is run in a fresh process (its peak resident memory is the process's), at 2 threads on every
held-out case and at 1 thread on the first ``--timing-cases``; one warm-up on a crop first. Quality from
the 2-thread run: object recall (overall and by nodule size), FROC (LUNA16 seven-point and the paper's
average recall over 0-5 false positives per scan), object Dice, plain Dice. The U-Net's fair setting is
its fastest overlap whose recall is within one object of overlap 0.5's; LowRes's speed-up is quoted
against it, at the U-Net's precision (LowRes bf16) and in fp32. Stage one's probability at each held-out
nodule, by size, shows what its threshold misses; ``--stage-one-variants pos_weight=40`` retrains stage one
with one setting changed and scores it the same way.

    python benchmarks/lowres/run.py --only-train       # train the three models (55 min on a 2-core Zen 4)
    python benchmarks/lowres/run.py --reuse --stage-one-variants pos_weight=40   # time and score (77 min), alone

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
LABELS = {"unet": "residual U-Net", "light": "light U-Net (1/4 widths)", "lowres": "LowRes (two-stage)"}
# what is timed and scored: entry name -> (model, inference settings)
# the full-resolution networks run in bf16, their fast path on a CPU with native bf16 (2x fp32's speed there): the
# strongest simple baseline; LowRes's speed-up is quoted at the same precision
ENTRIES: dict[str, tuple[str, dict[str, Any]]] = {
    "U-Net, overlap 0.5, bf16": ("unet", {"overlap": 0.5, "backend": "bf16"}),
    "U-Net, overlap 0.25, bf16": ("unet", {"overlap": 0.25, "backend": "bf16"}),
    "U-Net, tiled (overlap 0), bf16": ("unet", {"overlap": 0.0, "backend": "bf16"}),
    "light U-Net, overlap 0.5, bf16": ("light", {"overlap": 0.5, "backend": "bf16"}),
    "LowRes": ("lowres", {}),
    "LowRes, bf16": ("lowres", {"backend": "bf16"}),
    "LowRes, ONNX Runtime": ("lowres", {"backend": "onnx"}),
}
REFERENCE_UNET = "U-Net, overlap 0.5, bf16"
STAGE_ONE_THRESHOLDS = (0.5, 0.25, 0.1, 0.05)


def configs(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[str, Any]]]:
    """Each model: its training runs in order, as (run name, config)."""
    from leanseg.config import ExperimentConfig

    smoke = {"data.patch_size": [32, 32, 32]} if args.smoke else {}
    common = {
        **smoke,
        "data.num_folds": args.folds,
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


def evaluate(run_dir: str, cases: list[tuple[str, str, str]], threads: int, quality: bool, settings: dict) -> dict[str, Any]:
    """Predict ``cases`` (id, image, label) with ``threads`` threads and inference ``settings``; times per case and,
    with ``quality``, the object metrics (objects sized in mm from the image's spacing)."""
    from leanseg.data.io import Volume, read_image
    from leanseg.inference import Predictor
    from leanseg.metrics import dice
    from leanseg.objects import score_probabilities
    from leanseg.utils import set_threads

    set_threads(threads)
    p = Predictor.from_run(run_dir, num_threads=threads, **{"backend": "eager", **settings})
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
            objects, pred = score_probabilities(probs, ref, spacing=image.spacing)
            row.update(dice=dice(pred, ref), objects=objects.__dict__)
        rows.append(row)
        print(f"  {Path(run_dir).name} {settings} {threads} thread(s) {cid}: {seconds:.2f} s", flush=True)
    return {"cases": rows}


def stage_one_at_objects(run_dirs: list[str], cases: list[tuple[str, str, str]], threads: int) -> list[dict[str, Any]]:
    """For each run's stage one: its probability (the 1/8-resolution map, upsampled trilinearly) at its highest over
    each held-out object, with the object's size, and the share of the volume above each threshold: what the threshold
    misses. Each case is read and its objects labelled once for all runs."""
    import scipy.ndimage as ndi

    from leanseg.data.io import read_image
    from leanseg.inference import Predictor
    from leanseg.objects import components, sphere_diameters
    from leanseg.utils import set_threads

    set_threads(threads)
    predictors = [Predictor.from_run(r, num_threads=threads, backend="eager") for r in run_dirs]
    for p in predictors:
        p.model.stage = 1  # inference returns stage one's map as class 1 (LowResNet)
    scores = [{"objects": [], "above": {t: [] for t in STAGE_ONE_THRESHOLDS}} for _ in run_dirs]
    for _, image_path, label_path in cases:
        image = read_image([Path(image_path)])
        lab, n = components(np.asarray(read_image([Path(label_path)]).array[0]) > 0)
        sizes = sphere_diameters(lab, n, image.spacing)
        for p, score in zip(predictors, scores):
            prob = p.predict_volume_probabilities(image)[0].numpy()[1]
            peaks = ndi.maximum(prob, lab, index=np.arange(1, n + 1)) if n else []
            score["objects"] += [{"size_mm": float(d), "probability": float(m)} for d, m in zip(sizes, peaks)]
            for t in STAGE_ONE_THRESHOLDS:
                score["above"][t].append(float((prob >= t).mean()))
    return [{"objects": s["objects"], "volume_above": {str(t): float(np.mean(v)) for t, v in s["above"].items()}} for s in scores]


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=36)
    ap.add_argument("--folds", type=int, default=2, help="fold 0 of this many is held out")
    ap.add_argument("--nodules-per-scan", type=float, default=10.0, help="mean nodules per scan (LUNA16: 1.34)")
    ap.add_argument("--unet-iterations", type=int, default=1500)
    ap.add_argument("--light-iterations", type=int, default=1500)
    ap.add_argument("--stage1-iterations", type=int, default=1500)
    ap.add_argument("--stage2-iterations", type=int, default=1500)
    ap.add_argument("--timing-cases", type=int, default=2, help="held-out cases also timed at 1 thread")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--entries", nargs="*", default=list(ENTRIES), choices=list(ENTRIES), help="what to time and score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep finished training runs in --work")
    ap.add_argument("--only-train", action="store_true", help="train, then stop (time the models later, on an idle machine)")
    ap.add_argument("--train-threads", type=int, default=2, help="threads for training (iterations fix what is learned)")
    ap.add_argument(
        "--stage-one-variants",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="stage one retrained with one numeric model.extra setting changed (pos_weight=40)",
    )
    ap.add_argument("--keep", nargs="*", default=[], choices=list(ENTRIES), help="entries kept from the last results file")
    benchmark_arguments(ap, "lowres", "/tmp/leanseg_bench/lowres")
    return ap


def chest_data(args: argparse.Namespace, work: Path) -> tuple[Path, tuple[int, int, int]]:
    """The synthetic chest folder, generated unless ``--reuse`` finds one."""
    from leanseg.data.synthetic_chest import generate_chest_dataset

    data, shape = work / "chest", (96, 96, 64) if args.smoke else (300, 300, 200)
    if not (args.reuse and (data / "dataset.json").is_file()):
        print(f"generating {args.cases} chest CTs", flush=True)
        generate_chest_dataset(data, args.cases, args.seed, shape, progress=True, nodules_per_scan=args.nodules_per_scan)
    return data, shape


def main() -> None:
    args = arguments().parse_args()
    if args.smoke:  # six small volumes, a few iterations per network
        args.cases, args.timing_cases, args.nodules_per_scan = 6, 1, 3.0
        args.unet_iterations = args.light_iterations = args.stage1_iterations = args.stage2_iterations = 3
        args.stage_one_variants = args.stage_one_variants or ["pos_weight=40"]

    from leanseg.bench import Results, results_folder
    from leanseg.data.datasets import load_dataset
    from leanseg.data.prepare import make_splits
    from leanseg.data.synthetic_chest import LUNA16, chest_statistics

    work = Path(args.work)
    data, shape = chest_data(args, work)
    ds = load_dataset(data)
    runs = configs(args, work)
    split = make_splits([c.case_id for c in ds.cases], args.folds, runs["unet"][0][1].data.split_seed)[0]
    by_id = {c.case_id: c for c in ds.cases}
    val = [(cid, str(by_id[cid].images[0]), str(by_id[cid].label)) for cid in split["val"]]
    nodules = json.loads((data / "nodules.json").read_text())
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "lowres",
        render,
        plot,
        threads=2,
        seed=args.seed,
        split=f"fold 0 of {args.folds} held out ({len(val)} volumes), the other {len(split['train'])} for training",
        data=f"{args.cases} synthetic chest CTs (seed {args.seed}), {'x'.join(map(str, shape))} voxels at 1x1x1.5 mm",
        smoke=args.smoke,
        nodules={
            "luna16": LUNA16,
            "generated": chest_statistics(nodules),
            "held_out": chest_statistics({cid: nodules[cid] for cid, _, _ in val}),
        },
        models={},
        entries={},
    )
    for name in args.models:
        results["models"][name] = train_model(name, runs[name], data, work, args.reuse)
    if args.only_train:
        print(json.dumps(results["models"], indent=1))
        return
    for entry in args.keep:
        results.keep("entries", entry)
    if "lowres" in args.models and any(ENTRIES[e][1].get("backend") == "onnx" for e in args.entries):
        from leanseg.export import export_onnx

        export_onnx(work / "lowres")
    for entry in args.entries:
        if entry not in args.keep and ENTRIES[entry][0] in args.models:
            model, settings = ENTRIES[entry]
            results["entries"][entry] = {"model": model, **evaluate_entry(work / model, val, args.timing_cases, settings, args.smoke)}
            results.write()
    if "lowres" in args.models:
        variants = {v: stage_one_variant(v, runs["lowres"][0][1], data, work, args.reuse) for v in args.stage_one_variants}
        run_dirs = [str(work / "lowres")] + [str(work / next(iter(v["training"]))) for v in variants.values()]
        stage_ones, _ = run_isolated(stage_one_at_objects, run_dirs, val, 2, inline=args.smoke)
        results["stage_one"] = stage_ones[0]
        if variants:
            results["stage_one_variants"] = {v: {**info, **s} for (v, info), s in zip(variants.items(), stage_ones[1:])}
    results.write(with_plot=True)
    print(results.markdown())


def stage_one_variant(variant: str, base: Any, data: Path, work: Path, reuse: bool) -> dict[str, Any]:
    """Stage one retrained with one numeric ``model.extra`` setting changed (``KEY=VALUE``): its run and training."""
    key, value = variant.split("=")
    cfg = base.with_overrides({"model.extra": {**base.model.extra, key: float(value)}})
    return {"training": train_model("lowres", [(f"lowres_stage1_{key}{value}", cfg)], data, work, reuse)["training"]}


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
    info["parameters"] = _parameters(work / runs[-1][0])
    return info


def evaluate_entry(run: Path, val: list, timing_cases: int, settings: dict, inline: bool) -> dict[str, Any]:
    """Time one entry at 2 threads on the held-out volumes (with their object metrics) and at 1 thread on the first few."""
    from leanseg.bench import timing_stats
    from leanseg.data.synthetic_chest import SIZE_BINS_MM
    from leanseg.objects import CaseObjects, object_metrics, recall_by_size

    print(f"evaluating {run.name} {settings}", flush=True)
    res2, rss2 = run_isolated(evaluate, str(run), val, 2, True, settings, inline=inline)
    res1, rss1 = run_isolated(evaluate, str(run), val[:timing_cases], 1, False, settings, inline=inline)
    cases = [CaseObjects(**r["objects"]) for r in res2["cases"]]
    info: dict[str, Any] = {
        "settings": settings,
        "threads": {
            "2": {"seconds": timing_stats([r["seconds"] for r in res2["cases"]]), "peak_rss_mib": rss2, "cases": res2["cases"]},
            "1": {"seconds": timing_stats([r["seconds"] for r in res1["cases"]]), "peak_rss_mib": rss1, "cases": res1["cases"]},
        },
        "quality": {**object_metrics(cases), "dice": float(np.nanmean([r["dice"] for r in res2["cases"]]))},
        "recall_by_size": recall_by_size(cases, SIZE_BINS_MM),
    }
    if "fraction" in res2["cases"][0]:  # two-stage
        for key in ("fraction", "stage1", "stage2"):
            info[key] = float(np.mean([r[key] for r in res2["cases"]]))
    return info


def fair_unet(entries: dict[str, Any]) -> str | None:
    """The fastest U-Net entry whose recall is within one object of overlap 0.5's (the paper's baseline setting)."""
    unets = {k: v for k, v in entries.items() if v["model"] == "unet"}
    reference = unets.get(REFERENCE_UNET)
    if not reference:
        return None
    q = reference["quality"]
    keeps = [k for k, v in unets.items() if v["quality"]["object_recall"] >= q["object_recall"] - 1 / max(q["objects"], 1) - 1e-9]
    return min(keeps, key=lambda k: unets[k]["threads"]["2"]["seconds"]["mean"])


def targets(r: dict[str, Any]) -> list[str]:
    """The issue's targets against the measured entries, one line each."""
    e, fair = r["entries"], fair_unet(r["entries"])
    lo = e.get("LowRes")
    if not fair or not lo:
        return []
    f, q = e[fair], lo["quality"]
    lines = []
    for name in ("LowRes, bf16", "LowRes"):  # same precision as the U-Net first, then LowRes in fp32 against it
        if name in e:
            speed = f["threads"]["2"]["seconds"]["mean"] / e[name]["threads"]["2"]["seconds"]["mean"]
            lines.append(
                f"- {name} {speed:.1f}x faster than the fair U-Net ({fair}) at 2 threads: target 20x, {'met' if speed >= 20 else 'missed'}."
            )
    lines += [
        f"- U-Net recall {f['quality']['object_recall']:.3f}: target 0.75, {'met' if f['quality']['object_recall'] >= 0.75 else 'missed'}.",
        f"- Held-out objects {q['objects']:.0f}: target 150, {'met' if q['objects'] >= 150 else 'missed'}.",
    ]
    for key, name in (("object_recall", "recall"), ("froc_luna16", "FROC (LUNA16)"), ("froc_avg_recall_0_5", "FROC (avg 0-5 FP)")):
        ratio = q[key] / f["quality"][key] if f["quality"][key] else float("nan")
        lines.append(f"- LowRes {name} {q[key]:.3f} = {ratio:.2f} of the U-Net's: target 0.95, {'met' if ratio >= 0.95 else 'missed'}.")
    onnx = e.get("LowRes, ONNX Runtime")
    if onnx:
        t_onnx, t_eager = onnx["threads"]["2"]["seconds"]["mean"], lo["threads"]["2"]["seconds"]["mean"]
        lines.append(
            f"- ONNX Runtime {t_onnx:.2f} s against eager {t_eager:.2f} s: target at least as fast, {'met' if t_onnx <= t_eager else 'missed'}."
        )
    return lines


def _parameters(run: Path) -> int:
    import torch

    state = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)["model"]
    return int(sum(v.numel() for v in state.values() if v.dtype.is_floating_point))


def render(r: dict[str, Any]) -> str:
    lines = ["# LowRes: two-stage inference on large volumes, against full-resolution networks", "", *header_markdown(r)]
    lines += nodule_table(r["nodules"])
    fair = fair_unet(r["entries"])
    base = r["entries"][fair]["threads"]["2"]["seconds"]["mean"] if fair else None
    bins = " / ".join(next(iter(r["entries"].values()))["recall_by_size"]) if r["entries"] else ""
    lines += [
        "",
        "| entry | parameters | training | s/volume, 2 threads (mean ± sd, n) | s/volume, 1 thread | peak RSS (MiB, 2 thr) "
        f"| object recall | recall {bins} | FROC LUNA16 | FROC avg recall 0-5 FP | object Dice | Dice | FP/scan |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in r["entries"].items():
        m, t2, t1, q = r["models"].get(e["model"], {}), e["threads"]["2"], e["threads"]["1"], e["quality"]
        train_s = ", ".join(f"{k} {v['iterations']} it / {v['minutes']:.1f} min" for k, v in m.get("training", {}).items())
        speed = f" ({base / t2['seconds']['mean']:.1f}x)" if base else ""
        if f"entries/{name}" in r.get("kept", {}):
            name += f" (measured at {r['kept'][f'entries/{name}']})"
        by_size = " / ".join(f"{b['recall']:.2f} ({b['objects']})" for b in e["recall_by_size"].values())
        lines.append(
            f"| {name} | {m.get('parameters', 0) / 1e6:.2f} M | {train_s} "
            f"| {t2['seconds']['mean']:.2f} ± {t2['seconds']['std']:.2f} (n={t2['seconds']['n']}){speed} "
            f"| {t1['seconds']['mean']:.2f} ± {t1['seconds']['std']:.2f} (n={t1['seconds']['n']}) | {t2['peak_rss_mib']:.0f} "
            f"| {q['object_recall']:.3f} ({q['objects']:.0f} objects) | {by_size} | {q['froc_luna16']:.3f} | {q['froc_avg_recall_0_5']:.3f} "
            f"| {q['object_dice']:.3f} | {q['dice']:.3f} | {q['fp_per_scan']:.2f} |"
        )
    if fair:
        lines += [
            "",
            f"Speed-ups against the U-Net's fair setting, {fair} (its fastest overlap within one object of overlap 0.5's recall).",
            "",
        ]
        lines += targets(r)
    lo = r["entries"].get("LowRes", {})
    if "fraction" in lo:
        lines += [
            "",
            f"LowRes sends {100 * lo['fraction']:.2f} % of each volume to stage two on average; stage one {lo['stage1']:.2f} s, "
            f"stage two {lo['stage2']:.2f} s per volume (2 threads); the rest is reading, preprocessing and writing back.",
        ]
    if r.get("stage_one"):
        lines += stage_one_table(r["stage_one"], "as trained")
    for variant, s in r.get("stage_one_variants", {}).items():
        t = next(iter(s["training"].values()))
        lines += stage_one_table(s, f"retrained with {variant} ({t['iterations']} iterations)")
    lines += [
        "",
        "Times include preprocessing and inverse preprocessing (not reading the file).",
        "",
        "![time against quality](lowres.png)",
        "",
    ]
    return "\n".join(lines)


def nodule_table(n: dict[str, Any]) -> list[str]:
    """The generated nodules beside LUNA16's published counts."""
    g, h, luna = n["generated"], n["held_out"], n["luna16"]
    rows = [
        ("scans", luna["scans"], g["scans"], h["scans"]),
        ("nodules", luna["nodules"], g["nodules"], h["nodules"]),
        ("nodules per scan", f"{luna['nodules_per_scan']:.2f}", f"{g['nodules_per_scan']:.2f}", f"{h['nodules_per_scan']:.2f}"),
        (
            "diameter min / median / max (mm)",
            f"{luna['min_diameter_mm']:g} / - / {luna['max_diameter_mm']:g}",
            *(_diameters(x) for x in (g, h)),
        ),
    ]
    rows += [(f"share {b}", "-", f"{g['size_bins'][b]:.2f}", f"{h['size_bins'][b]:.2f}") for b in g["size_bins"]]
    rows += [(f"share {v}", "-", f"{g[k][v]:.2f}", f"{h[k][v]:.2f}") for k in ("attachment", "texture") for v in g[k]]
    lines = [
        "",
        "Nodules, against LUNA16's reference standard (luna16.grand-challenge.org; its diameter range as quoted from annotations.csv):",
        "",
    ]
    lines += ["| | LUNA16 | generated | held out |", "|---|---|---|---|"]
    return lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]


def _diameters(s: dict[str, Any]) -> str:
    d = s["diameter_mm"]
    return f"{d['min']:.1f} / {d['median']:.1f} / {d['max']:.1f}"


def stage_one_table(s: dict[str, Any], which: str) -> list[str]:
    """Stage one's probability at the held-out objects by size: which threshold would pass them, at what cost."""
    from leanseg.data.synthetic_chest import SIZE_BINS_MM
    from leanseg.objects import size_bands

    ts = STAGE_ONE_THRESHOLDS
    lines = [
        "",
        f"Stage one {which}, at the held-out objects (its highest probability over each; share of objects at or above each threshold):",
        "",
    ]
    lines += ["| size | objects | median probability | " + " | ".join(f">= {t:g}" for t in ts) + " |", "|---|---|---|" + "---|" * len(ts)]
    probability = np.array([o["probability"] for o in s["objects"]])
    for band, inside in size_bands([o["size_mm"] for o in s["objects"]], SIZE_BINS_MM).items():
        sel = probability[inside]
        shares = " | ".join(f"{np.mean(sel >= t):.2f}" if len(sel) else "-" for t in ts)
        lines.append(f"| {band} | {len(sel)} | {np.median(sel) if len(sel) else float('nan'):.3f} | {shares} |")
    lines.append("| volume above it | | | " + " | ".join(f"{100 * s['volume_above'][str(t)]:.2f} %" for t in ts) + " |")
    return lines


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    from leanseg.bench import panels

    fig, axes = panels()
    for i, (name, e) in enumerate(r["entries"].items()):
        for ax, key, ylabel in (
            (axes[0], "object_recall", "object recall"),
            (axes[1], "froc_avg_recall_0_5", "FROC: average recall, 0-5 FP/scan"),
        ):
            for threads, marker in (("2", "o"), ("1", "s")):
                ax.plot(
                    e["threads"][threads]["seconds"]["mean"],
                    e["quality"][key],
                    marker,
                    color=f"C{i}",
                    ms=8,
                    label=f"{name}, {threads} thread(s)",
                )
            ax.set(xscale="log", xlabel="seconds per volume (log)", ylabel=ylabel, ylim=(0, 1.02))
            ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"time against quality: {r['data']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
