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
    """Train ``steps`` steps at batch 2 in a fresh process: saved bytes, peak RSS above baseline, step time."""
    import statistics

    import torch
    from monai.losses import DiceCELoss

    from leanseg.bench import peak_rss_mib

    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = build(name, in_ch, out_ch, overrides).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.randn(2, in_ch, *patch)
    y = torch.randint(0, out_ch, (2, 1, *patch))
    base = peak_rss_mib()
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        saved[s.data_ptr()] = s.nbytes()
        return t

    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        if i == 0:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = net(x)
        else:
            out = net(x)
        logits = out["logits"] if isinstance(out, dict) else out
        loss = loss_fn(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in net.parameters())
    return {
        "saved_mib": sum(saved.values()) / 2**20,
        "peak_rss_above_base_mib": peak_rss_mib() - base,
        "step_seconds": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "params": params,
    }


def train_job(data: str, run: str, name: str, minutes: float, fold: int, extra: dict) -> dict:
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    overrides = {
        **COMMON,
        **MODELS[name],
        "train.budget_minutes": minutes,
        "train.iterations": 10**6,
        "train.val_every": 10**6,
        "train.checkpoint_every": 10**6,
        **extra,
    }
    cfg = ExperimentConfig().with_overrides(overrides)
    r = train(data, run, cfg, fold=fold, show_progress=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds, **r.val}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per model on hippocampus")
    ap.add_argument("--brats-minutes", type=float, default=3.0)
    ap.add_argument("--cap-mib", type=float, default=3072.0, help="peak-RSS cap for the largest-patch search")
    ap.add_argument("--work", default="/tmp/leanseg_bench/invertible")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--only-training", action="store_true", help="keep parts 1-3 from the committed JSON, rerun part 4")
    args = ap.parse_args()

    from leanseg.bench import machine_info, run_isolated, write_results

    out: dict = {
        "benchmark": "invertible",
        "machine": machine_info(2),
        "seed": 0,
        "precision": "float32",
        "widths": COMMON["model.features"],
        "conv_layers_per_stage": 4,
    }
    if args.only_training:
        import json

        kept = json.loads((RESULTS / "invertible.json").read_text())
        out.update({k: kept[k] for k in ("steps", "depth_sweep", "patch_sweep", "largest_patch")})
        out["memory_parts_from"] = kept["machine"]
    else:
        measure_memory(out, args.cap_mib)

    if not args.skip_training:
        print("4/4 validation Dice under the same budget", flush=True)
        out["training"] = {}
        for data_name, path, minutes, fold, extra in (
            ("hippocampus", SHARED / "Task04_Hippocampus", args.minutes, 0, {"train.val_max_cases": None}),
            ("brats", SHARED / "BraTS2013_subset", args.brats_minutes, 0, {"data.num_folds": 3, "data.patch_size": [64, 64, 64]}),
        ):
            out["training"][data_name] = {"minutes": minutes, "fold": fold, "models": {}}
            for name in MODELS:
                res, rss = run_isolated(
                    train_job, str(path), f"{args.work}/{data_name}_{name.replace(' ', '_')}", name, minutes, fold, extra
                )
                res["train_peak_rss_mib"] = rss
                out["training"][data_name]["models"][name] = res
                print(data_name, name, res, flush=True)
                write_results(RESULTS / "invertible.json", out, render(out))
    plot(out, RESULTS / "invertible.png")
    write_results(RESULTS / "invertible.json", out, render(out))
    print(render(out))


def measure_memory(out: dict, cap_mib: float) -> None:
    from leanseg.bench import run_isolated, write_results

    print("1/4 memory and step time at the datasets' patch sizes", flush=True)
    out["steps"] = {}
    for data_name, in_ch, out_ch, patch in (("hippocampus", 1, 3, (40, 56, 40)), ("brats", 2, 5, (96, 96, 96))):
        out["steps"][data_name] = {"patch": patch, "models": {}}
        for name in MODELS:
            res, rss = run_isolated(step_job, name, in_ch, out_ch, patch, 4)
            res["process_peak_rss_mib"] = rss
            out["steps"][data_name]["models"][name] = res
            print(data_name, name, res, flush=True)
        write_results(RESULTS / "invertible.json", out, render(out))

    print("2/4 memory as depth and patch size grow", flush=True)
    out["depth_sweep"] = {name: {} for name in MODELS}
    for name in MODELS:
        for layers in (4, 8, 12, 16):  # 3x3x3 conv layers per stage
            extra = {k: ({**v, "depth": layers // 4} if k == "model.extra" and "depth" in v else v) for k, v in MODELS[name].items()}
            if "model.blocks_per_stage" in extra:
                extra["model.blocks_per_stage"] = layers // 2
            res, _ = run_isolated(step_job, name, 1, 3, (48, 48, 48), 1, extra)
            out["depth_sweep"][name][layers] = res["saved_mib"]
    out["patch_sweep"] = {name: {} for name in MODELS}
    for name in MODELS:
        for edge in (32, 48, 64, 80, 96):
            res, _ = run_isolated(step_job, name, 1, 3, (edge,) * 3, 1)
            out["patch_sweep"][name][edge] = res["saved_mib"]
    write_results(RESULTS / "invertible.json", out, render(out))

    print(f"3/4 largest cubic patch under {cap_mib:.0f} MiB of peak resident memory", flush=True)
    out["largest_patch"] = {"cap_mib": cap_mib, "models": {}}
    for name in MODELS:
        best = None
        for edge in (64, 96, 128, 160, 192):
            res, rss = run_isolated(step_job, name, 1, 3, (edge,) * 3, 1)
            if rss > cap_mib:
                break
            best = {"edge": edge, "process_peak_rss_mib": rss}
        out["largest_patch"]["models"][name] = best
        print(name, best, flush=True)
    write_results(RESULTS / "invertible.json", out, render(out))


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Invertible residual U-Nets: training memory",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} cores; {m['threads']} threads; torch {m['torch']}, MONAI {m['monai']}; commit {m['leanseg_commit']}; {m['date']}.",
        f"All models float32, widths {r['widths']}, {r['conv_layers_per_stage']} 3x3x3 conv layers per stage (2 residual units, or 1 coupling with 2 layers in F and in G), batch 2, seed {r['seed']}.",
        "`saved MiB`: bytes autograd holds for backward in one step; `peak RSS`: the step's peak resident memory above the process's baseline.",
        "",
    ]
    if "memory_parts_from" in r:
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
            f"## Validation Dice after {d['minutes']} min of training: {data_name} (fold {d['fold']})",
            "",
            *(
                ["A budget this short stops every model early in training: these figures do not rank the models' quality.", ""]
                if d["minutes"] < 10
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
