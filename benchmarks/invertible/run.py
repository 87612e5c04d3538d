"""Memory-efficient training: plain U-Net, checkpointed U-Net, Partially- and Fully-InvRes.

Measures, on 2 threads, for each model at the same widths (16, 32, 64, 128) and the same number of
3x3x3 convolution layers per stage (4: two residual units of the plain U-Net, or one coupling
whose F and G hold two layers each), in float32:
1. bytes autograd holds for backward in one training step (saved-tensor hooks, unique storages),
   the step's peak resident memory above the process's baseline, and the step time, on
   hippocampus-sized (40x56x40) and BraTS-sized (96^3, 2 channels) patches;
2. those bytes as depth and patch size grow (plot);
3. the largest cubic patch each model trains under a fixed cap on peak resident memory;
4. Dice and HD95 on the original grid of hippocampus fold 0's held-out cases after ``--iterations`` training
   steps (the same for every model: a slower step shows in part 1, not in the Dice), each model with and without
   the VAE regulariser, ``--seeds`` seeds under the base recipe's optimiser and one under the paper's (Adam 2e-4);
   each cell is kept in the results file, so the grid runs in parts, on any machine (an iteration budget buys the
   same training everywhere);
5. Dice and HD95 of BraTS's regions (whole tumour, tumour core, enhancing tumour, as the paper's Table 3) on the
   held-out cases of the BraTS subset (fold 0 of 3) after ``--brats-iterations`` steps of each model, in the
   original files; cells kept like part 4's.

    python benchmarks/invertible/run.py [--iterations 1600] [--precision bf16] [--seeds 0 1 2] [--brats-iterations 1000]
    python benchmarks/invertible/run.py --only-training --skip-brats --seeds 1 --dice-models Fully-InvRes --vae on

Writes benchmarks/results/invertible.{json,md,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"
MODELS = {
    "plain U-Net": {"model.name": "resunet", "model.blocks_per_stage": 2},
    "checkpointed U-Net": {"model.name": "resunet", "model.blocks_per_stage": 2, "model.extra": {"gradient_checkpointing": True}},
    "Partially-InvRes": {"model.name": "partially_invres", "model.extra": {"depth": 1}},
    "Fully-InvRes": {"model.name": "fully_invres", "model.extra": {"depth": 1, "sampling": "squeeze"}},
}
# the capacity attempt, in part 1's step table and part 4's Dice cells beside the four models above: Fully-InvRes with
# Myronenko's 1, 2, 2, 4 couplings per encoder level, 2.20 M parameters (the plain U-Net's 2.60 M) added where voxels
# are few; depth 3 at every level has as many parameters at 3.2x the plain U-Net's bf16 step time (docs/benchmarks)
CAPACITY = {
    "Fully-InvRes 1-2-2-4": {
        "model.name": "fully_invres",
        "model.extra": {"depth": 1, "encoder_depths": [1, 2, 2, 4], "sampling": "squeeze"},
    }
}
# the third attempt (issue 58): learned invertible sampling, an orthogonal 2x2x2 convolution per channel from the Haar
# wavelet and an orthogonal channel mixing before every coupling (iUNets), in place of the pixel shuffle
LEARNED = {"Fully-InvRes learned": {"model.name": "fully_invres", "model.extra": {"depth": 1, "sampling": "learned"}}}
ARMS = {**MODELS, **CAPACITY, **LEARNED}
RECIPES = {  # optimiser settings over the base recipe's defaults
    "base recipe": {},
    "paper: Adam 2e-4": {"train.optimizer": "adam", "train.lr": 2e-4, "train.weight_decay": 1e-5},  # Myronenko's L2 1e-5
}
RECIPE_OPTIONS = {"base": "base recipe", "paper": "paper: Adam 2e-4"}
# BraTS's evaluation regions from the subset's labels (1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing tumour)
BRATS_REGIONS = {"whole tumour": [1, 2, 3, 4], "tumour core": [1, 3, 4], "enhancing tumour": [4]}
SMOKE_REGIONS = {"both classes": [1, 2], "class 2": [2]}  # the phantoms' two classes, read as regions
COMMON = {
    "model.deep_supervision": False,
    "model.features": [16, 32, 64, 128],
    "model.strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "train.bf16": False,
}


def build(name: str, in_ch: int, out_ch: int, overrides: dict | None = None):
    import leanseg.models  # noqa: F401
    from leanseg.config import ExperimentConfig
    from leanseg.registry import MODELS as REG

    cfg = ExperimentConfig().with_overrides({**COMMON, **ARMS[name], **(overrides or {})})
    return REG.create(cfg.model.name, in_ch, out_ch, cfg.model, features=cfg.model.features, strides=cfg.model.strides)


def step_job(name: str, in_ch: int, out_ch: int, patch: tuple, steps: int, overrides: dict | None = None) -> dict:
    """Train ``steps`` base-recipe steps (``Trainer.train_step``) at batch 2: saved bytes, peak RSS above baseline, step time."""
    import statistics

    import torch

    from leanseg.bench import peak_rss_mib, saved_for_backward
    from leanseg.config import ExperimentConfig
    from leanseg.training import Trainer
    from leanseg.training.schedule import make_optimizer

    class MeasuringTrainer(Trainer):
        """The base trainer, counting what autograd keeps for backward in the first forward pass."""

        saved_bytes: int | None = None

        def forward(self, x: torch.Tensor):
            if self.saved_bytes is not None:
                return super().forward(x)
            self.saved_bytes, out = saved_for_backward(lambda: super(MeasuringTrainer, self).forward(x))
            return out

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = ExperimentConfig().with_overrides({**COMMON, **ARMS[name], **(overrides or {})})
    net = build(name, in_ch, out_ch, overrides).train()
    trainer = MeasuringTrainer.for_step(cfg, net, make_optimizer(net.parameters(), cfg.train))
    x = torch.randn(2, in_ch, *patch)
    y = torch.randint(0, out_ch, (2, 1, *patch)).float()
    base = peak_rss_mib()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step(x, y)
        times.append(time.perf_counter() - t0)
    return {
        "saved_mib": trainer.saved_bytes / 2**20,
        "peak_rss_above_base_mib": peak_rss_mib() - base,
        "step_seconds": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "params": sum(p.numel() for p in net.parameters()),
    }


def train_job(data: str, run: str, name: str, budget: dict, fold: int, extra: dict) -> dict:
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    overrides = {
        **COMMON,
        **ARMS[name],  # ``extra`` may replace its model.extra (the VAE switched on)
        "train.val_every": 10**6,
        "train.checkpoint_every": 10**6,
        **budget,
        **extra,
    }
    cfg = ExperimentConfig().with_overrides(overrides)
    r = train(data, run, cfg, fold=fold, show_progress=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds, **r.val}


def model_overrides(name: str, vae: bool) -> dict:
    """``name``'s overrides, with the VAE branch switched on in its ``model.extra`` where ``vae``."""
    o = dict(ARMS[name])
    if vae:
        o["model.extra"] = {**o.get("model.extra", {}), "vae": True}
    return o


def dice_cell(name: str, vae: bool, recipe: str, seed: int, data: str, refs: Path, budget: dict, work: Path, smoke: bool) -> dict:
    """Part 4's cell: train one model for ``budget`` (its iterations and precision), score the held-out cases."""
    tag = f"{name.replace(' ', '_')}{'_vae' if vae else ''}_{recipe.split(':')[0].replace(' ', '_')}_seed{seed}"
    extra = {**model_overrides(name, vae), **RECIPES[recipe], "train.seed": seed}
    return trained_scores(name, data, refs, work / "dice_runs" / tag, work / "dice_predictions" / tag, budget, extra, smoke)


def trained_scores(
    name: str, data: str, refs: Path, run: Path, pred: Path, budget: dict, extra: dict, smoke: bool, regions: dict | None = None
) -> dict:
    """Train ``name`` for ``budget`` (its iterations and precision; no validation inside it) in its own process, then
    score the original files of the cases in ``refs``: Dice and HD95 per class (per region of ``regions``) and their means."""
    import shutil

    from leanseg.bench import predict_held_out
    from leanseg.metrics import evaluate_folders

    for f in (run, pred):
        shutil.rmtree(f, ignore_errors=True)
    steps = {"train.iterations": 3 if smoke else budget["iterations"], "train.bf16": budget["precision"] == "bf16"}
    res, rss = run_isolated(train_job, data, str(run), name, {}, 0, {"train.val_max_cases": 1, **extra, **steps}, inline=smoke)
    res.update(train_peak_rss_mib=rss, **predict_held_out(run, data, refs, pred, {}, 2))
    named = {"labels": dict(enumerate(regions, 1)), "regions": list(regions.values())} if regions else {}
    scores = evaluate_folders(pred, refs, **named)
    return {**{k: v for k, v in res.items() if not k.startswith("val_")}, "dice": scores["mean"], "cases": len(scores["cases"])}


# what each part measures, at full size and in a smoke run (tiny patches, phantoms, a few iterations, in-process)
FULL = {
    "steps": (("hippocampus", 1, 3, (40, 56, 40)), ("brats", 2, 5, (96, 96, 96))),
    "depths": (4, 8, 12, 16),
    "depth_patch": (48, 48, 48),
    "edges": (32, 48, 64, 80, 96),
    "largest": (64, 96, 128, 160, 192),
}
SMOKE = {
    "steps": (("hippocampus", 1, 3, (16, 16, 16)),),
    "depths": (4, 8),
    "depth_patch": (16, 16, 16),
    "edges": (16, 24),
    "largest": (16, 24),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--iterations",
        type=int,
        default=1600,
        help="training steps of each hippocampus Dice cell, every model alike (1600: the plain U-Net's 15 minutes of the base "
        "recipe in float32 on the Intel Xeon where the first cells ran made 1586)",
    )
    ap.add_argument(
        "--precision",
        choices=["bf16", "float32"],
        default="bf16",
        help="the Dice cells' autocast (bf16: 2x faster steps where the CPU has native bf16; cells of one table share it)",
    )
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the base-recipe cells (the paper's recipe: the first)"
    )
    ap.add_argument("--dice-models", nargs="+", default=list(ARMS), choices=list(ARMS), help="models of the Dice cells to run now")
    ap.add_argument(
        "--vae", nargs="+", default=["off", "on"], choices=["off", "on"], help="VAE branch settings of the Dice cells to run now"
    )
    ap.add_argument(
        "--recipes", nargs="+", default=list(RECIPE_OPTIONS), choices=list(RECIPE_OPTIONS), help="recipes of the Dice cells to run now"
    )
    ap.add_argument("--skip-brats", action="store_true", help="run no BraTS cell now (those in the last results file are kept)")
    ap.add_argument("--brats-iterations", type=int, default=1000, help="training steps of each BraTS cell (64^3 patches, batch 2)")
    ap.add_argument("--brats-models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models of the BraTS cells to run now")
    ap.add_argument("--cap-mib", type=float, default=3072.0, help="peak-RSS cap for the largest-patch search")
    ap.add_argument("--skip-training", action="store_true", help="measure parts 1-3; keep parts 4-5 from the last results file")
    ap.add_argument("--only-training", action="store_true", help="keep parts 1-3 from the last results file, run parts 4-5")
    sizes = [s[0] for s in FULL["steps"]]
    ap.add_argument(
        "--step-sizes", nargs="+", default=sizes, choices=sizes, help="part 1's patch sizes to measure now (the others are kept)"
    )
    ap.add_argument("--skip-sweeps", action="store_true", help="keep parts 2-3 from the last results file")
    benchmark_arguments(ap, "invertible", "/tmp/leanseg_bench/invertible")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder
    from leanseg.config import DataConfig

    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "invertible",
        render,
        plot,
        threads=2,
        seed="per Dice cell (its seed column); 0 for parts 1-3 and 5",
        split=f"hippocampus: fold 0 of 5 (split seed {DataConfig().split_seed}, the trainer's default) held out; BraTS subset: fold 0 of 3",
        data="random tensors at each dataset's patch size (parts 1-3); the shared hippocampus and BraTS folders (parts 4-5)",
        smoke=args.smoke,
        precision="float32",
        widths=COMMON["model.features"],
        conv_layers_per_stage=4,
        iterations=3 if args.smoke else args.iterations,
        dice_precision=args.precision,
        recipes=RECIPES,
        dice={},
        brats_iterations=3 if args.smoke else args.brats_iterations,
        brats={},
    )
    sizes = SMOKE if args.smoke else FULL
    step_sizes = [] if args.only_training else [s for s in sizes["steps"] if s[0] in args.step_sizes or args.smoke]
    for data_name in {s[0] for s in FULL["steps"]} - {s[0] for s in step_sizes}:
        results.keep("steps", data_name)  # first, so that every write while measuring holds them
    for key in ("depth_sweep", "patch_sweep", "largest_patch") if args.only_training or args.skip_sweeps else ():
        results.keep(key)
    results.keep_cells("dice", same=("iterations", "dice_precision", "recipes"), same_cpu=False)
    results.keep_cells("brats", same=("brats_iterations", "dice_precision"), same_cpu=False)
    measure_steps(results, step_sizes, args.smoke)
    if not (args.only_training or args.skip_sweeps):
        measure_sweeps(results, 0.0 if args.smoke else args.cap_mib, sizes, args.smoke)
    if not args.skip_training:
        measure_dice(results, args)
        if not args.skip_brats:
            measure_brats(results, args)
    results.write(with_plot=True)
    print(results.markdown())


def measure_dice(results: Any, args: argparse.Namespace) -> None:
    """Part 4: every model with and without the VAE, each recipe, each seed; cells already in the file are kept."""
    from leanseg.bench import smoke_phantoms

    work = Path(args.work)
    data = str(smoke_phantoms(work)) if args.smoke else str(SHARED / "Task04_Hippocampus")
    refs = fold0_references(data, 5, work / "references_fold0")
    grid = dice_grid(args)
    if args.smoke:  # every model and branch once, the paper's recipe once
        grid = [(m, v, "base recipe", 0) for m in [*MODELS, *LEARNED] for v in (False, True)] + [
            ("Fully-InvRes", True, "paper: Adam 2e-4", 0)
        ]
    budget = {"iterations": results["iterations"], "precision": results["dice_precision"]}
    print(f"4/5 Dice on hippocampus fold 0 after {budget['iterations']} iterations ({budget['precision']}) per cell", flush=True)
    for name, vae, recipe, seed in grid:
        key = f"{name}{' + VAE' if vae else ''}/{recipe}/seed{seed}"
        if key in results["dice"]:
            continue
        cell = dice_cell(name, vae, recipe, seed, data, refs, budget, work, args.smoke)
        results["dice"][key] = {**cell, "cpu": results["machine"]["cpu"]}
        print(key, f"Dice {cell['dice']['dice_mean']:.4f}, {cell['iterations']} iterations", flush=True)
        results.write()


def dice_grid(args: argparse.Namespace) -> list[tuple[str, bool, str, int]]:
    """The cells to run now, seed by seed (so that a grid cut short holds whole seeds): the base recipe's for each of
    ``--seeds``, the paper's recipe for the first seed only."""
    recipes = [RECIPE_OPTIONS[r] for r in args.recipes]
    seeds = {"base recipe": args.seeds, "paper: Adam 2e-4": args.seeds[:1]}
    vaes = [v == "on" for v in args.vae]
    return [(m, v, r, s) for r in recipes for s in seeds[r] for m in args.dice_models for v in vaes]


def measure_brats(results: Any, args: argparse.Namespace) -> None:
    """Part 5: each model (no VAE, base recipe, seed 0) on the BraTS subset's fold 0 of 3, scored on BraTS's regions in
    the held-out cases' original files; cells already in the file are kept."""
    from leanseg.bench import smoke_phantoms

    work = Path(args.work)
    data = smoke_phantoms(work) if args.smoke else SHARED / "BraTS2013_subset"
    refs = fold0_references(data, 3, work / "brats_references_fold0")
    extra = {"data.num_folds": 3, **({} if args.smoke else {"data.patch_size": [64, 64, 64]})}
    budget = {"iterations": results["brats_iterations"], "precision": results["dice_precision"]}
    regions = SMOKE_REGIONS if args.smoke else BRATS_REGIONS
    print(f"5/5 BraTS regions after {budget['iterations']} iterations ({budget['precision']}) per model", flush=True)
    for name in MODELS if args.smoke else args.brats_models:
        if name in results["brats"]:
            continue
        tag = name.replace(" ", "_")
        run, pred = work / "brats_runs" / tag, work / "brats_predictions" / tag
        cell = trained_scores(name, str(data), refs, run, pred, budget, {**MODELS[name], **extra}, args.smoke, regions)
        results["brats"][name] = {**cell, "regions": list(regions), "cpu": results["machine"]["cpu"]}
        print("brats", name, f"Dice {cell['dice']['dice_mean']:.4f}", flush=True)
        results.write()


def fold0_references(data: str | Path, folds: int, folder: Path) -> Path:
    """The label files of fold 0 of ``folds`` under the trainer's split (DataConfig's split seed), copied into ``folder``."""
    from leanseg.bench import held_out_references
    from leanseg.config import DataConfig
    from leanseg.data.datasets import load_dataset
    from leanseg.data.prepare import make_splits

    ds = load_dataset(data)
    return held_out_references(ds, make_splits([c.case_id for c in ds.cases], folds, DataConfig().split_seed)[0]["val"], folder)


def measure_steps(results, step_sizes: list, inline: bool) -> None:
    """Part 1 at each of ``step_sizes`` (data name, channels in, classes, patch): every arm with and without the VAE."""
    print("1/4 memory and step time at the datasets' patch sizes", flush=True)
    for data_name, in_ch, out_ch, patch in step_sizes:
        results.put("steps", data_name, {"patch": patch, "models": {}})
        for name in ARMS:
            for vae in (False, True):  # the VAE branch's own cost, for the targets' memory and step time
                res, rss = run_isolated(step_job, name, in_ch, out_ch, patch, 4, model_overrides(name, vae), inline=inline)
                res["process_peak_rss_mib"] = rss
                results["steps"][data_name]["models"][name + (" + VAE" if vae else "")] = res
                print(data_name, name, "VAE" if vae else "", res, flush=True)
        results.write()


def measure_sweeps(results, cap_mib: float, sizes: dict, inline: bool) -> None:
    """Parts 2-3: held bytes as depth and patch size grow; the largest cubic patch under ``cap_mib`` of peak RSS."""
    print("2/4 memory as depth and patch size grow", flush=True)
    results["depth_sweep"] = {name: {} for name in MODELS}
    for name in MODELS:
        for layers in sizes["depths"]:  # 3x3x3 conv layers per stage
            extra = {k: ({**v, "depth": layers // 4} if k == "model.extra" and "depth" in v else v) for k, v in MODELS[name].items()}
            if "model.blocks_per_stage" in extra:
                extra["model.blocks_per_stage"] = layers // 2
            res, _ = run_isolated(step_job, name, 1, 3, sizes["depth_patch"], 1, extra, inline=inline)
            results["depth_sweep"][name][layers] = res["saved_mib"]
    results["patch_sweep"] = {name: {} for name in MODELS}
    for name in MODELS:
        for edge in sizes["edges"]:
            res, _ = run_isolated(step_job, name, 1, 3, (edge,) * 3, 1, inline=inline)
            results["patch_sweep"][name][edge] = res["saved_mib"]
    results.write()

    print(f"3/4 largest cubic patch under {cap_mib:.0f} MiB of peak resident memory", flush=True)
    results["largest_patch"] = {"cap_mib": cap_mib, "models": {}}
    for name in MODELS:
        best = None
        for edge in sizes["largest"]:
            res, rss = run_isolated(step_job, name, 1, 3, (edge,) * 3, 1, inline=inline)
            if cap_mib and rss > cap_mib:
                break
            best = {"edge": edge, "process_peak_rss_mib": rss}
        results["largest_patch"]["models"][name] = best
        print(name, best, flush=True)
    results.write()


def render(r: dict) -> str:
    lines = [
        "# Invertible residual U-Nets: training memory",
        "",
        *header_markdown(r),
        f"All models float32, widths {r['widths']}, {r['conv_layers_per_stage']} 3x3x3 conv layers per stage (2 residual units, or 1 coupling with 2 layers in F and in G), batch 2, "
        "one step of the base recipe's `Trainer.train_step` (Dice + CE, gradient clipping, SGD).",
        "`saved MiB`: bytes autograd holds for backward in one step; `peak RSS`: the step's peak resident memory above the process's baseline.",
        "",
    ]
    if "memory_parts_from" in r:  # results files written before the shared Results writer
        k = r["memory_parts_from"]
        lines += [f"Memory and step-time tables from commit {k['leanseg_commit']}, {k['date']}; the Dice tables from the run above.", ""]
    for data_name, d in r.get("steps", {}).items():
        plain = d["models"].get("plain U-Net")
        lines += [
            f"## {data_name} patch {'x'.join(map(str, d['patch']))}",
            "",
            "| model | params | saved MiB | vs plain | peak RSS MiB | vs plain | step s | vs plain |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in d["models"].items():
            lines.append(
                f"| {name} | {v['params'] / 1e6:.2f} M | {v['saved_mib']:.0f} | {v['saved_mib'] / plain['saved_mib']:.2f} | {v['peak_rss_above_base_mib']:.0f} | "
                f"{v['peak_rss_above_base_mib'] / max(plain['peak_rss_above_base_mib'], 1e-9):.2f} | {v['step_seconds']:.2f} | {v['step_seconds'] / plain['step_seconds']:.2f} |"
            )
        lines.append("")
    if "largest_patch" in r:
        lines += [
            f"## Largest cubic patch under {r['largest_patch']['cap_mib']:.0f} MiB peak resident memory (batch 2, one channel)",
            "",
            "| model | largest edge | its peak RSS MiB |",
            "|---|---|---|",
        ]
        for name, v in r["largest_patch"]["models"].items():
            lines.append(f"| {name} | {v['edge'] if v else '< 64'} | {v['process_peak_rss_mib']:.0f} |" if v else f"| {name} | < 64 | |")
        lines.append("")
    lines += dice_markdown(r)
    lines += brats_markdown(r)
    lines += ["![memory against depth and patch size](invertible.png)", ""]
    return "\n".join(lines)


def brats_markdown(r: dict) -> list[str]:
    """Part 5's table: BraTS's regions per model, as the paper's Table 3 (one seed, far shorter training than its)."""
    cells = r.get("brats", {})
    if not cells:
        return []
    regions = next(iter(cells.values()))["regions"]
    lines = [
        f"## BraTS subset: Dice (HD95 mm) of the tumour regions after {r.get('brats_iterations')} iterations ({r.get('dice_precision')})",
        "",
        f"Fold 0 of 3 ({next(iter(cells.values()))['cases']} volumes held out, the others train), 64^3 patches, batch 2, base "
        "recipe, seed 0, no VAE. The paper trains to convergence on the full BraTS training set: these models are far from "
        "it, so the table says whether a model falls behind under one budget, not what it reaches.",
        "",
        f"| model | {' | '.join(regions)} | mean Dice | training min | training peak RSS MiB |",
        f"|---|{'---|' * len(regions)}---|---|---|",
    ]
    for name, c in cells.items():
        d = c["dice"]
        per = " | ".join(f"{d[f'dice_{k}']:.3f} ({d[f'hd95_{k}']:.1f})" for k in range(1, len(regions) + 1))
        lines.append(f"| {name} | {per} | **{d['dice_mean']:.4f}** | {c['train_seconds'] / 60:.1f} | {c['train_peak_rss_mib']:.0f} |")
    return [*lines, ""]


def dice_by_config(r: dict) -> dict[tuple[str, str], list[dict]]:
    """The Dice cells grouped by (model with or without VAE, recipe), seeds in order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for key in sorted(r.get("dice", {}), key=_table_order):
        model, recipe, _ = key.split("/")
        groups.setdefault((model, recipe), []).append(r["dice"][key])
    return groups


def _table_order(key: str) -> tuple:
    """A Dice cell's place in the tables: the models in ``ARMS``'s order, each without then with the VAE, recipes, seeds."""
    model, recipe, seed = key.split("/")
    name = model.removesuffix(" + VAE")
    return (list(ARMS).index(name) if name in ARMS else len(ARMS), name, model != name, recipe, seed)


def dice_markdown(r: dict) -> list[str]:
    """Part 4's tables: each configuration's seeds (mean, spread), then the VAE's effect on each model."""
    import statistics

    groups = dice_by_config(r)
    if not groups:
        return []
    lines = [
        f"## Hippocampus: Dice on the original grid of fold 0's held-out cases after {r.get('iterations')} iterations "
        f"({r.get('dice_precision')}, every model alike)",
        "",
        "Training minutes are each cell's own wall clock at 2 threads (the step table above compares speed; a cell that shared "
        "the machine took longer without changing its Dice).",
        "",
        "| model | recipe | seeds | mean Dice | spread (min-max) | per seed | HD95 (mm) | training min | training peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, recipe), cells in groups.items():
        d = [c["dice"]["dice_mean"] for c in cells]
        lines.append(
            f"| {model} | {recipe} | {len(d)} | {statistics.mean(d):.4f} | {min(d):.4f}-{max(d):.4f} | {', '.join(f'{x:.4f}' for x in d)} | "
            f"{statistics.mean(c['dice']['hd95_mean'] for c in cells):.2f} | {statistics.mean(c['train_seconds'] for c in cells) / 60:.1f} | "
            f"{max(c['train_peak_rss_mib'] for c in cells):.0f} |"
        )
    return [*lines, "", *vae_lines(r), *target_lines(r)]


def dice_by_seed(r: dict, recipe: str) -> dict[str, dict[str, float]]:
    """Mean Dice of each model's cells under ``recipe``, by seed ("seed0", ...)."""
    by_seed: dict[str, dict[str, float]] = {}
    for key, cell in r.get("dice", {}).items():
        model, cell_recipe, seed = key.split("/")
        if cell_recipe == recipe:
            by_seed.setdefault(model, {})[seed] = cell["dice"]["dice_mean"]
    return by_seed


def vae_lines(r: dict) -> list[str]:
    """The VAE's effect per model and recipe, over the seeds both arms have: the mean difference against the larger
    spread of the two arms over those seeds (inside it: no effect)."""
    import statistics

    lines = [
        "The VAE's effect (mean Dice with it minus without over the seeds both have; a difference inside either arm's "
        "spread over those seeds is no effect):",
        "",
        "| model | recipe | seeds | with VAE - without | larger spread | reading |",
        "|---|---|---|---|---|---|",
    ]
    for recipe in RECIPES:
        by_seed = dice_by_seed(r, recipe)
        for model in sorted(by_seed, key=lambda m: _table_order(f"{m}/{recipe}/seed0")):
            plain = by_seed.get(model.removesuffix(" + VAE"))
            seeds = sorted(set(by_seed[model]) & set(plain or {}))
            if not model.endswith(" + VAE") or not seeds:
                continue
            a, b = ([arm[s] for s in seeds] for arm in (by_seed[model], plain))
            delta, spread = statistics.mean(a) - statistics.mean(b), max(max(a) - min(a), max(b) - min(b))
            reading = "one seed: not judged" if len(seeds) < 2 else "no effect" if abs(delta) <= spread else "gain" if delta > 0 else "loss"
            lines.append(f"| {model.removesuffix(' + VAE')} | {recipe} | {len(seeds)} | {delta:+.4f} | {spread:.4f} | {reading} |")
    return [*lines, ""]


def target_lines(r: dict, arm: str = "Fully-InvRes learned") -> list[str]:
    """Issue 58's target: ``arm`` within the plain U-Net's seed spread (its mean Dice at least the plain U-Net's worst
    seed, base recipe, the same seeds), at most 0.3x the bytes the plain U-Net holds for backward and 1.5x its step
    time (part 1, hippocampus, one run)."""
    import statistics

    by_seed = dice_by_seed(r, "base recipe")
    if "plain U-Net" not in by_seed or arm not in by_seed:
        return []
    seeds = sorted(by_seed["plain U-Net"])
    if not set(seeds) <= set(by_seed[arm]):
        return [f"Target not judged: {arm} has seeds {', '.join(sorted(by_seed[arm]))} of the plain U-Net's {', '.join(seeds)}.", ""]
    plain = [by_seed["plain U-Net"][s] for s in seeds]
    mean = statistics.mean(by_seed[arm][s] for s in seeds)
    steps = r.get("steps", {}).get("hippocampus", {}).get("models", {})
    if arm not in steps or "plain U-Net" not in steps:
        return [f"Target not judged: part 1 holds no hippocampus step of {arm} (run it with --step-sizes hippocampus).", ""]
    held = steps[arm]["saved_mib"] / steps["plain U-Net"]["saved_mib"]
    step = steps[arm]["step_seconds"] / steps["plain U-Net"]["step_seconds"]
    met = mean >= min(plain) and held <= 0.3 and step <= 1.5
    return [
        f"Target ({'met' if met else 'missed'}): {arm} {mean:.4f} mean Dice over seeds {', '.join(k.removeprefix('seed') for k in seeds)} "
        f"against the plain U-Net's spread {min(plain):.4f}-{max(plain):.4f} (at least its worst seed), {held:.2f}x its bytes held "
        f"for backward (at most 0.3x), {step:.2f}x its step time (at most 1.5x).",
        "",
    ]


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, d in r.get("depth_sweep", {}).items():
        a.plot([int(k) for k in d], list(d.values()), "o-", label=name)
    a.set_xlabel("3x3x3 conv layers per stage")
    a.set_ylabel("MiB held for backward (48^3, batch 2)")
    for name, d in r.get("patch_sweep", {}).items():
        b.plot([int(k) for k in d], list(d.values()), "o-", label=name)
    b.set_xlabel("cubic patch edge (voxels)")
    b.set_ylabel("MiB held for backward (batch 2)")
    b.set_yscale("log")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
