"""Memory-efficient training: plain U-Net, checkpointed U-Net, Partially- and Fully-InvRes.

Measures, on 2 threads, for each model at the same widths (16, 32, 64, 128) and the same number of
3x3x3 convolution layers per stage (4: two residual units of the plain U-Net, or one coupling
whose F and G hold two layers each), in float32:
1. bytes autograd holds for backward in one training step (saved-tensor hooks, unique storages),
   the step's peak resident memory above the process's baseline, and the step time, on
   hippocampus-sized (40x56x40) and BraTS-sized (96^3, 2 channels) patches;
2. those bytes as depth and patch size grow (plot);
3. the largest cubic patch each model trains under a fixed cap on peak resident memory;
4. validation Dice after the same wall-clock training budget on hippocampus (fold 0 of 5) and on
   the BraTS subset (fold 0 of 3).

    python benchmarks/invertible/run.py [--minutes 5] [--brats-minutes 3]

Writes benchmarks/results/invertible.{json,md,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from leanseg.bench import benchmark_arguments, header_markdown, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"
MODELS = {
    "plain U-Net": {"model.name": "resunet", "model.blocks_per_stage": 2},
    "checkpointed U-Net": {"model.name": "resunet", "model.blocks_per_stage": 2, "model.extra": {"gradient_checkpointing": True}},
    "Partially-InvRes": {"model.name": "partially_invres", "model.extra": {"depth": 1}},
    "Fully-InvRes": {"model.name": "fully_invres", "model.extra": {"depth": 1}},
}
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

    cfg = ExperimentConfig().with_overrides({**COMMON, **MODELS[name], **(overrides or {})})
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
    cfg = ExperimentConfig().with_overrides({**COMMON, **MODELS[name], **(overrides or {})})
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
        **MODELS[name],
        "train.val_every": 10**6,
        "train.checkpoint_every": 10**6,
        **budget,
        **extra,
    }
    cfg = ExperimentConfig().with_overrides(overrides)
    r = train(data, run, cfg, fold=fold, show_progress=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds, **r.val}


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
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per model on hippocampus")
    ap.add_argument("--brats-minutes", type=float, default=3.0)
    ap.add_argument("--cap-mib", type=float, default=3072.0, help="peak-RSS cap for the largest-patch search")
    ap.add_argument("--skip-training", action="store_true", help="measure parts 1-3; keep part 4 from the last results file")
    ap.add_argument("--only-training", action="store_true", help="keep parts 1-3 from the last results file, rerun part 4")
    benchmark_arguments(ap, "invertible", "/tmp/leanseg_bench/invertible")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder, smoke_phantoms

    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "invertible",
        render,
        plot,
        threads=2,
        seed=0,
        split="hippocampus: fold 0 of 5 (split seed 12345) held out; BraTS subset: fold 0 of 3",
        data="random tensors at each dataset's patch size (parts 1-3); the shared hippocampus and BraTS folders (part 4)",
        smoke=args.smoke,
        precision="float32",
        widths=COMMON["model.features"],
        conv_layers_per_stage=4,
    )
    for key in (
        ("steps", "depth_sweep", "patch_sweep", "largest_patch") if args.only_training else ("training",) if args.skip_training else ()
    ):
        results.keep(key)  # first, so that every write while measuring holds them
    if not args.only_training:
        measure_memory(results, 0.0 if args.smoke else args.cap_mib, SMOKE if args.smoke else FULL, args.smoke)
    if not args.skip_training:
        print("4/4 validation Dice under the same budget", flush=True)
        datasets = (
            [("phantoms", smoke_phantoms(Path(args.work)), {"train.iterations": 3}, 0, {"train.val_max_cases": 2})]
            if args.smoke
            else [
                ("hippocampus", SHARED / "Task04_Hippocampus", {"train.budget_minutes": args.minutes}, 0, {"train.val_max_cases": None}),
                (
                    "brats",
                    SHARED / "BraTS2013_subset",
                    {"train.budget_minutes": args.brats_minutes},
                    0,
                    {"data.num_folds": 3, "data.patch_size": [64, 64, 64]},
                ),
            ]
        )
        results["training"] = {}
        for data_name, path, budget, fold, extra in datasets:
            budget = {"train.iterations": 10**6, **budget}
            minutes = budget.get("train.budget_minutes")
            results["training"][data_name] = {"minutes": minutes, "iterations": budget["train.iterations"], "fold": fold, "models": {}}
            for name in MODELS:
                run = f"{args.work}/{data_name}_{name.replace(' ', '_')}"
                res, rss = run_isolated(train_job, str(path), run, name, budget, fold, extra, inline=args.smoke)
                res["train_peak_rss_mib"] = rss
                results["training"][data_name]["models"][name] = res
                print(data_name, name, res, flush=True)
                results.write()
    results.write(with_plot=True)
    print(results.markdown())


def measure_memory(results, cap_mib: float, sizes: dict, inline: bool) -> None:
    print("1/4 memory and step time at the datasets' patch sizes", flush=True)
    results["steps"] = {}
    for data_name, in_ch, out_ch, patch in sizes["steps"]:
        results["steps"][data_name] = {"patch": patch, "models": {}}
        for name in MODELS:
            res, rss = run_isolated(step_job, name, in_ch, out_ch, patch, 4, inline=inline)
            res["process_peak_rss_mib"] = rss
            results["steps"][data_name]["models"][name] = res
            print(data_name, name, res, flush=True)
        results.write()

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
    for data_name, d in r.get("training", {}).items():
        lines += [
            f"## Validation Dice after {budget_text(d)} of training: {data_name} (fold {d['fold']})",
            "",
            *(
                ["A budget this short stops every model early in training: these figures do not rank the models' quality.", ""]
                if (d.get("minutes") or 0) < 10
                else []
            ),
            "| model | iterations | mean Dice | per class | training peak RSS MiB |",
            "|---|---|---|---|---|",
        ]
        for name, v in d["models"].items():
            per = ", ".join(f"{v[k]:.3f}" for k in sorted(v) if k.startswith("val_dice_"))
            lines.append(f"| {name} | {v['iterations']} | **{v['val_dice']:.4f}** | {per} | {v['train_peak_rss_mib']:.0f} |")
        lines.append("")
    lines += ["![memory against depth and patch size](invertible.png)", ""]
    return "\n".join(lines)


def budget_text(d: dict) -> str:
    return f"{d['minutes']} min" if d.get("minutes") else f"{d['iterations']} iterations"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, d in r["depth_sweep"].items():
        a.plot([int(k) for k in d], list(d.values()), "o-", label=name)
    a.set_xlabel("3x3x3 conv layers per stage")
    a.set_ylabel("MiB held for backward (48^3, batch 2)")
    for name, d in r["patch_sweep"].items():
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
