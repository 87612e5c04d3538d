"""AutoPath on hippocampus: heuristic block dropping against learned per-image paths.

1. trains a 3D DeepLabV3+ (ResNet-18, configs/autopath_hippocampus.yaml) on folds 1-4 of the seeded
   5-fold split of the 208 shared cases (fold 0, 42 cases, held out), 2 threads;
2. sweeps DropN, DropFirstN, DropLastN and DropRandomN on the held-out fold (the paper's Figures 3-7);
3. trains one policy per tau on the training folds (REINFORCE, frozen model) and evaluates its
   greedy paths on the held-out fold; compares each with the heuristics dropping the same number of
   blocks on the same image (Table 1) and histograms the blocks used (Figure 8);
4. times whole cases (preprocessing, policy, network, inverse preprocessing; file reading left out)
   for the full network and each policy, interleaved case by case, median of 3 runs, 2 threads.

Dice: pseudo-Dice on the preprocessed grid (mean of the two hippocampus classes per case), the same
for every row; the baseline benchmark showed it equals the Dice on the original grid to 1e-4 here.

    python benchmarks/autopath/run.py [--minutes 15] [--taus 100 500 2000] [--policy-minutes 4] [--reuse]

Writes benchmarks/results/autopath.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from leanseg.bench import benchmark_arguments, header_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "autopath_hippocampus.yaml"


def main() -> None:
    args = arguments().parse_args()

    from leanseg.bench import Results, results_folder, smoke_phantoms
    from leanseg.config import ExperimentConfig
    from leanseg.runfolder import RunFolder
    from leanseg.training import train
    from leanseg.utils import set_threads

    set_threads(args.threads)
    work = Path(args.work)
    data = str(smoke_phantoms(work)) if args.smoke else args.data
    run = work / f"deeplab_r{args.depth}"
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "autopath",
        render,
        plot,
        threads=args.threads,
        seed=0,
        split="fold 0 of a 5-fold split (split seed 0) held out",
        data=f"{data} (208 MSD hippocampus cases in the committed figures)",
        smoke=args.smoke,
        precision="bf16 autocast (training, sweep, policies and timing)",
        depth=args.depth,
    )

    print("1/4 segmentation model", flush=True)
    budget = {"train.iterations": 5, "train.budget_minutes": None} if args.smoke else {"train.budget_minutes": args.minutes}
    overrides = {"model.name": f"deeplab3d_r{args.depth}", "train.num_threads": args.threads, **budget}
    # dotted keys: each replaces its own value and keeps the config's other model.extra settings
    overrides.update({f"model.extra.{k}": v for k, v in (("drop_prob", args.drop_prob), ("drop_rule", args.drop_rule)) if v is not None})
    cfg = ExperimentConfig.load(CONFIG).with_overrides(overrides)
    if not (args.reuse and (run / "checkpoint_final.pt").is_file()):
        train(data, run, cfg, fold=0, show_progress=not args.smoke, resume=False)
    results["model"] = {**RunFolder(run).summary(), "config": cfg.to_dict()["model"]}

    print("2/4 heuristic sweep", flush=True)
    results["sweep"] = heuristic_sweep(run, data, args)

    print("3/4 policies", flush=True)
    results["policies"] = []
    evaluate_policies(results, run, Path(data), args)

    if not args.skip_timing:
        print("4/4 wall time per case", flush=True)
        results["timing"] = time_cases(run, Path(data), [p["path"] for p in results["policies"]], args.threads, 1 if args.smoke else 3)
    results.write(with_plot=True)
    print(results.markdown())


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--depth", type=int, default=18, choices=(18, 50))
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--taus", type=float, nargs="+", default=[100.0, 500.0, 2000.0])
    ap.add_argument("--policy-minutes", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=5, help="DropRandomN draws")
    ap.add_argument(
        "--no-curriculum-taus", type=float, nargs="*", default=[], help="also train these taus without the curriculum (an ablation)"
    )
    ap.add_argument(
        "--macs-taus",
        type=float,
        nargs="*",
        default=[],
        help="also train these taus with the reward counting each block's multiply-accumulates (autopath.cost=macs)",
    )
    ap.add_argument("--macs-no-curriculum-taus", type=float, nargs="*", default=[], help="both: MACs cost, no curriculum")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep the trained model, sweep and policies found in --work")
    ap.add_argument("--drop-prob", type=float, default=None, help="stochastic depth in training (default: the config's 0.3)")
    ap.add_argument(
        "--drop-rule",
        choices=("uniform", "linear"),
        default=None,
        help="how --drop-prob spreads over the blocks (default: the config's linear)",
    )
    ap.add_argument("--skip-timing", action="store_true")
    benchmark_arguments(ap, "autopath", "/tmp/leanseg_bench/autopath")
    return ap


def heuristic_sweep(run: Path, data: str, args: argparse.Namespace) -> dict:
    """DropN, DropFirstN, DropLastN and DropRandomN on the held-out fold (kept from an earlier call with ``--reuse``)."""
    from leanseg.dynamic.run import sweep_run

    sweep_file = run / "sweep" / "sweep.json"
    repeats = 1 if args.smoke else args.repeats
    sweep = (
        json.loads(sweep_file.read_text()) if args.reuse and sweep_file.is_file() else sweep_run(run, data, run / "sweep", repeats, "bf16")
    )
    summary = {k: {int(n): v for n, v in d.items()} for k, d in sweep["summary"].items()}  # JSON made the keys strings
    return {"repeats": sweep["repeats"], "val_cases": sweep["val_cases"], "summary": summary}


def policy_specs(args: argparse.Namespace) -> list[tuple[float, str]]:
    specs = [(tau, "") for tau in args.taus] + [(tau, "_nocurriculum") for tau in args.no_curriculum_taus]
    return specs + [(tau, "_macs") for tau in args.macs_taus] + [(tau, "_nocurriculum_macs") for tau in args.macs_no_curriculum_taus]


def evaluate_policies(results, run: Path, data: Path, args: argparse.Namespace) -> None:
    """Train (or, with ``--reuse``, read) one policy per tau and variant; its greedy paths against the matched heuristics."""
    from leanseg.dynamic.evaluate import blocks_used_histogram, load_split_cases, matched_heuristics
    from leanseg.dynamic.run import train_policy_for_run

    model, plan, _, split_cases = load_split_cases(run, data, "val")
    val_cases = split_cases["val"]
    classes = [k for k in plan.labels if k != 0]
    n_blocks = model.num_gated_blocks
    rng = np.random.default_rng(0)
    results["block_macs"] = model.block_macs(tuple(val_cases[0][1].shape[1:])).tolist()
    smoke = {"autopath.steps": 3, "autopath.stage_steps": 1, "autopath.budget_minutes": None} if args.smoke else {}
    for tau, variant in policy_specs(args)[: 1 if args.smoke else None]:
        pfile = run / "policies" / f"policy_tau{tau:g}{variant}.json"
        if args.reuse and pfile.is_file():
            s = json.loads(pfile.read_text())
            s["path"] = str(pfile.with_suffix(".pt"))
        else:
            ov = {"autopath.tau": tau, "autopath.budget_minutes": args.policy_minutes, **smoke}
            if "_nocurriculum" in variant:
                ov["autopath.stage_steps"] = 0  # every block decided from the first update
            if "_macs" in variant:
                ov["autopath.cost"] = "macs"
            s = train_policy_for_run(run, data, ov, out=pfile.with_suffix(".pt"), backend="bf16")
        s = {k: v for k, v in s.items() if k != "history"}
        s["label"] = f"{tau:g}" + ", ".join(
            [""] + [t for k, t in (("_nocurriculum", "no curriculum"), ("_macs", "MACs cost")) if k in variant]
        )
        s["key"] = pfile.stem
        s["paths"] = dict(Counter(r["path"] for r in s["per_case"]).most_common())  # the greedy path per held-out image
        s["macs_used"] = s["mean_macs_used"]
        dropped = {r["case"]: n_blocks - r["blocks_used"] for r in s["per_case"]}
        repeats = 1 if args.smoke else args.repeats
        s["matched_heuristics"] = matched_heuristics(model, val_cases, dropped, classes, repeats, rng, True)
        s["blocks_used_histogram"] = blocks_used_histogram(s["per_case"], n_blocks)
        results["policies"].append(s)
        print({k: v for k, v in s.items() if k not in ("per_case",)}, flush=True)
        results.write()


def time_cases(run: Path, data: Path, policies: list[str], threads: int, repeats: int = 3, backends=("bf16", "eager")) -> dict:
    """Median of ``repeats`` whole-case predictions (no file I/O), full network and each policy interleaved per case."""
    import torch

    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_image
    from leanseg.inference import Predictor
    from leanseg.runfolder import RunFolder

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    val = RunFolder(run).split(0)["val"]
    vols = [read_image(list(ds.case(c).images)) for c in val]
    out = {}
    for backend in backends:
        preds = {"full": Predictor.from_run(run, backend=backend, num_threads=threads)}
        preds.update({Path(p).stem: Predictor.from_run(run, policy=p, backend=backend, num_threads=threads) for p in policies})
        for p in preds.values():  # warm-up: first calls allocate and pick kernels
            for v in vols[:3]:
                p.predict_volume(v)
        times: dict[str, list[float]] = {k: [] for k in preds}
        network: dict[str, list[float]] = {k: [] for k in preds}
        for v in vols:
            for name, p in preds.items():
                runs = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    _, t = p.predict_volume(v)
                    runs.append((time.perf_counter() - t0, t["network"]))
                times[name].append(statistics.median(r[0] for r in runs))
                network[name].append(statistics.median(r[1] for r in runs))
        out["cases"] = len(vols)
        out[backend] = {
            k: {"mean_s": float(np.mean(times[k])), "std_s": float(np.std(times[k])), "network_mean_s": float(np.mean(network[k]))}
            for k in preds
        }
        print(backend, out[backend], flush=True)
    return out


def render(r: dict) -> str:
    md = r["model"]
    sw = r["sweep"]["summary"]
    n = len(sw["DropN"])
    full = sw["Full"][0]["dice"]
    lines = [
        f"# AutoPath: per-image block dropping in a 3D DeepLabV3+ (ResNet-{r['depth']}, {n} gated blocks)",
        "",
        *header_markdown(r),
        f"Precision: {r['precision']}.",
        f"Segmentation model: stochastic depth {md['config']['extra'].get('drop_prob', 0.0)} "
        f"({md['config']['extra'].get('drop_rule', 'uniform')} over the blocks) in training; "
        f"{md['iterations']} iterations in {md['train_seconds'] / 60:.1f} min on {md['train_cases']} cases; "
        f"validation Dice (all {md['val_cases']} held-out cases, every block) {full:.4f}.",
        "Dice: mean over cases of the mean over the two hippocampus classes, on the preprocessed grid.",
        "",
        f"## Heuristic strategies on the held-out fold (DropRandomN: mean and std of {r['sweep']['repeats']} draws)",
        "",
        "| blocks dropped | DropFirstN | DropLastN | DropRandomN | DropN (that block alone) |",
        "|---|---|---|---|---|",
    ]

    def at(name: str, k: int) -> dict | None:
        return next((v for v in sw[name].values() if v["blocks_dropped"] == k), None)

    dn = list(sw["DropN"].values())
    for k in range(0, n):
        if k == 0:
            lines.append(f"| 0 | {full:.4f} | {full:.4f} | {full:.4f} | |")
            continue
        f, la, ra = at("DropFirstN", k), at("DropLastN", k), at("DropRandomN", k)
        single = f"block {k}: {dn[k - 1]['dice']:.4f}"
        lines.append(f"| {k} | {f['dice']:.4f} | {la['dice']:.4f} | {ra['dice']:.4f} ± {ra['std']:.4f} | {single} |")
    lines.append(f"| | | | | block {n}: {dn[n - 1]['dice']:.4f} |")
    lines.append("")
    if r.get("policies"):
        lines += [
            "## AutoPath against the heuristics at the same dropping level (the paper's Table 1)",
            "",
            "Each heuristic drops, on each image, as many blocks as the policy dropped on it. Block MACs run: the share of the "
            "gated blocks' multiply-accumulates the policy's paths run ("
            + ", ".join(f"block {i + 1} {m / sum(r['block_macs']):.0%}" for i, m in enumerate(r["block_macs"]))
            + "). 'MACs cost': the reward counts that share instead of blocks used / N (`autopath.cost=macs`, ours).",
            "",
            "| tau | blocks dropped (mean) | share dropped | block MACs run | AutoPath Dice | vs full | DropFirstN | DropLastN | DropRandomN "
            "| AutoPath - DropRandomN | paths (1 = kept, block 1 first: images) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in r["policies"]:
            mh = p["matched_heuristics"]
            lines.append(
                f"| {p['label']} | {p['mean_blocks_dropped']:.2f} / {p['num_blocks']} | {p['mean_blocks_dropped'] / p['num_blocks']:.1%} | "
                f"{p['macs_used']:.1%} | **{p['dice']:.4f}** | {100 * (p['dice'] - full):+.2f} pt | {mh['DropFirstN']:.4f} | "
                f"{mh['DropLastN']:.4f} | {mh['DropRandomN']:.4f} ± {mh['DropRandomN_std']:.4f} | "
                f"{100 * (p['dice'] - mh['DropRandomN']):+.2f} pt | {', '.join(f'{k}: {v}' for k, v in p['paths'].items())} |"
            )
        lines += [
            "",
            "Blocks used per held-out image (the paper's Figure 8):",
            "",
            "| tau | " + " | ".join(str(i) for i in range(n + 1)) + " |",
        ]
        lines.append("|---" * (n + 2) + "|")
        for p in r["policies"]:
            lines.append(f"| {p['label']} | " + " | ".join(str(c) for c in p["blocks_used_histogram"]) + " |")
        lines.append("")
        lines.append(
            "Policy training: "
            + "; ".join(f"tau {p['label']}: {p['steps']} updates in {p['train_seconds'] / 60:.1f} min" for p in r["policies"])
            + "."
        )
        lines.append("")
    if r.get("timing"):
        lines += [
            f"## Wall time per case (preprocess + policy + network + inverse preprocess, {r['timing'].get('cases', '?')} cases, median of 3 runs each)",
            "",
            "| back-end | path | s/case | network + policy s | vs full | Dice |",
            "|---|---|---|---|---|---|",
        ]
        dice = {p["key"]: p["dice"] for p in r.get("policies", [])}
        for backend, d in ((k, v) for k, v in r["timing"].items() if k != "cases"):
            for name, v in d.items():
                lines.append(
                    f"| {backend} | {name} | {v['mean_s']:.4f} ± {v['std_s']:.4f} | {v['network_mean_s']:.4f} | "
                    f"{v['mean_s'] / d['full']['mean_s']:.2f} | {dice.get(name, full):.4f} |"
                )
        lines.append("")
    lines += [f"![Dice against blocks dropped, per strategy; Dice against time per tau]({r.get('name', 'autopath')}.png)", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leanseg.dynamic.evaluate import draw_sweep

    sw = {k: {int(n): v for n, v in d.items()} for k, d in r["sweep"]["summary"].items()}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    full = sw["Full"][0]["dice"]
    draw_sweep(axes[0], axes[1], sw, r.get("policies", []))
    ax = axes[2]
    n = len(r["policies"][0]["blocks_used_histogram"]) - 1 if r.get("policies") else 8
    w = 0.8 / max(len(r.get("policies", [])), 1)
    for i, p in enumerate(r.get("policies", [])):
        ax.bar(np.arange(n + 1) + i * w, p["blocks_used_histogram"], width=w, label=f"tau={p['label']}")
    ax.set(xlabel="blocks used", ylabel="held-out images", title="blocks used per image")
    ax.legend(fontsize=7)
    ax = axes[3]
    if r.get("timing"):
        for backend, style in (("eager", "o-"), ("bf16", "s--")):
            d = r["timing"][backend]
            pts = sorted(
                [(d["full"]["mean_s"], full, "full")] + [(d[p["key"]]["mean_s"], p["dice"], f"tau={p['label']}") for p in r["policies"]]
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{backend}")
            for x, y, lab in pts:
                ax.annotate(lab, (x, y), fontsize=7)
        ax.set(xlabel="s per case (2 threads)", ylabel="mean Dice", title="Dice against time per case")
        ax.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
