"""Throughput: the default training step and prediction on each path of the CPU (eager NCDHW, eager channels-last,
compiled channels-last), per kind of CPU, and 1000-iteration loss curves of today's path against the chosen one.

Kinds: this machine's own (amx, avx512_bf16 or avx2), and where it has AVX-512 also ``avx2``, emulated by torch's and
oneDNN's ISA caps (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``) in fp32, as leanseg runs on an AVX2-only
CPU; each kind compiles into its own inductor cache (torch 2.13 serves a kernel compiled for one ISA to the other).

- steps: seconds per step (median of the timed steps after a warm-up) of the default network on the hippocampus plan
  (residual U-Net 16-128, deep supervision, batch 2 of 40x56x40, AdamW, bf16 autocast where the CPU has native bf16),
  on random batches; GFLOP per step (FlopCounterMode) and GFLOP/s; the share of a dense matmul's rate on the same
  threads; the per-op profile (top ops, the reorders' ``aten::copy_`` share).
- predict: network seconds for a hippocampus-size case (whole volume, one pass) and a BraTS-size volume (2 channels,
  155x240x240, sliding windows of the plan's 64^3), eager fp32, bf16, bf16 compiled (its warm-up apart), ONNX Runtime fp32.
- curves: the real training (fold 0 of the hippocampus, 1000 iterations, 3 seeds) on today's path and the chosen one:
  loss every 10 iterations, the final validation Dice, iterations per minute.

    python benchmarks/throughput/run.py [--hippocampus DIR] [--smoke]

Writes benchmarks/results/throughput.{json,md}. Every cell is kept once measured, stamped with its commit and CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"
PATHS = {"eager NCDHW (today)": (False, False), "eager channels-last": (True, False), "compiled channels-last": (True, True)}
EMULATED = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


@contextmanager
def cpu_env(kind: str, work: Path):
    """The environment a child process of ``kind`` starts with: the ISA caps where emulated, its own inductor cache."""
    env = {**EMULATED.get(kind, {}), "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor" / kind)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def default_model(in_channels: int, classes: int, shape: list[int]) -> tuple[Any, Any]:
    """The default network and plan for images of ``shape`` (1 mm spacing), as leanseg plans them."""
    from leanseg.config import ExperimentConfig
    from leanseg.data.fingerprint import Fingerprint
    from leanseg.models import build_model
    from leanseg.plan import plan_from_fingerprint

    cfg = ExperimentConfig()
    fp = Fingerprint(
        "probe", "MR", in_channels, {k: str(k) for k in range(classes)}, ["a", "b"], [[1.0, 1.0, 1.0]] * 2, [shape] * 2,
        [{"mean": 0.0, "std": 1.0, "p00_5": -3.0, "p99_5": 3.0}] * in_channels, {0: 0.9}, [], [],
    )  # fmt: skip
    plan = plan_from_fingerprint(fp, cfg.data, cfg.model)
    return build_model(cfg.model, plan), plan


def matmul_gflops(bf16: bool) -> float:
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def step_cell(channels_last: bool, compiled: bool, steps: int, warmup: int, patch: list[int]) -> dict:
    """Seconds per default training step on one path, with its FLOPs and profile (a fresh process per cell)."""
    import statistics

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from leanseg.config import ExperimentConfig
    from leanseg.fastpath import FastPath
    from leanseg.training.schedule import make_optimizer
    from leanseg.training.trainer import Trainer
    from leanseg.utils import cpu_kind, set_threads

    set_threads(2)
    torch.manual_seed(0)
    model, plan = default_model(1, 3, patch or [36, 50, 35])  # a hippocampus case's shape: the 40x56x40 patch
    cfg = ExperimentConfig()
    t = Trainer.for_step(cfg, model, make_optimizer(model.parameters(), cfg.train), plan)
    t.net = FastPath(model, compiled, "train.compile")
    if channels_last and not compiled:
        model.to(memory_format=torch.channels_last_3d)
    shape = (cfg.train.batch_size, 1, *plan.patch_size)
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    y = torch.randint(0, 3, (shape[0], 1, *plan.patch_size)).float()
    model.train()
    t0 = time.perf_counter()
    for _ in range(warmup):
        t.train_step(x, y)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        t.train_step(x, y)
        times.append(time.perf_counter() - t0)
    profile = profile_ops(t, x, y)  # before the flop count: its dispatch mode makes the compiled step recompile
    with FlopCounterMode(display=False) as fc:
        t.train_step(x, y)
    per_step = statistics.median(times)
    gflop = fc.get_total_flops() / 1e9
    return {
        "seconds_per_step": per_step,
        "warmup_seconds": warm,
        "gflop_per_step": gflop,
        "gflops": gflop / per_step,
        "matmul_gflops": matmul_gflops(t.bf16),
        "bf16": t.bf16,
        "kind": cpu_kind(),
        "patch": list(plan.patch_size),
        "profile": profile,
    }


def profile_ops(t: Any, x: Any, y: Any, steps: int = 3, top: int = 8) -> dict[str, float]:
    """Share of the step's CPU time per op (the ``top`` largest, ``aten::copy_`` always)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t.train_step(x, y)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)
    shares = {e.key: e.self_cpu_time_total / total for e in ranked[:top]}
    shares["aten::copy_"] = sum(e.self_cpu_time_total for e in events if e.key == "aten::copy_") / total
    return shares


def predict_cell(backend: str, compiled: bool, repeats: int, smoke: bool) -> dict:
    """Network seconds (no reading or resampling) for a hippocampus-size case and a BraTS-size volume."""
    import torch

    from leanseg.config import InferenceConfig
    from leanseg.fastpath import FastPath
    from leanseg.inference import predict_probabilities, torch_net
    from leanseg.utils import set_threads

    set_threads(2)
    out = {}
    sizes = {"hippocampus 36x50x35": (1, 3, [36, 50, 35]), "BraTS 155x240x240": (2, 5, [155, 240, 240])}
    for name, (channels, classes, shape) in sizes.items():
        shape = [max(8, s // 6) for s in shape] if smoke else shape
        torch.manual_seed(0)
        model, plan = default_model(channels, classes, shape)
        net = onnx_of(model, plan) if backend == "onnx" else torch_net(model, backend, call=FastPath(model, compiled, "inference.compile"))
        x = torch.randn(channels, *shape)
        t0 = time.perf_counter()
        predict_probabilities(net, x, plan.patch_size, model.divisor, InferenceConfig())
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predict_probabilities(net, x, plan.patch_size, model.divisor, InferenceConfig())
            times.append(time.perf_counter() - t0)
        out[name] = {"seconds": min(times), "first_call_seconds": first}
    return out


def onnx_of(model: Any, plan: Any) -> Any:
    """``model`` exported as ``leanseg export`` does (dynamic sizes) and run on ONNX Runtime (fp32, 2 threads)."""
    import tempfile

    import torch

    from leanseg.export import export_part
    from leanseg.inference import onnx_net

    folder = Path(tempfile.mkdtemp(prefix="leanseg_onnx_"))
    model.eval()
    export_part(model.onnx_parts(torch.zeros(2, plan.num_channels, *plan.patch_size))["model"], folder / "model.onnx")
    return onnx_net(model, folder, 2)


def curve_cell(data: str, run: str, compiled: bool, seed: int, iterations: int) -> dict:
    """Fold 0 of the real training for ``iterations``: the loss every 10 iterations, the final validation Dice."""
    from leanseg.config import ExperimentConfig
    from leanseg.training import train
    from leanseg.training.history import read_history

    cfg = ExperimentConfig().with_overrides(
        {"train.iterations": iterations, "train.val_every": iterations, "train.seed": seed, "train.compile": compiled}
    )
    t0 = time.perf_counter()
    r = train(data, run, cfg, fold=0, show_progress=False)
    wall = time.perf_counter() - t0
    rows = [(int(row["iteration"]), row["loss"]) for row in read_history(Path(run))]
    return {
        "iterations": r.iterations,
        "train_seconds": r.seconds,
        "wall_seconds": wall,
        "iterations_per_minute": 60 * r.iterations / r.seconds,
        "val_dice": r.val["val_dice"],
        "loss": rows,
    }


def kinds_here() -> list[str]:
    from leanseg.utils import cpu_kind

    here = cpu_kind()
    return [here] if here == "avx2" else [here, "avx2"]


def measure(results: Any, work: Path, data: str, smoke: bool) -> None:
    steps, warmup = (2, 1) if smoke else (12, 4)
    patch = [12, 14, 10] if smoke else None
    for kind in kinds_here():
        for path, (cl, comp) in PATHS.items():
            key = f"{kind}: {path}"
            if not results.keep("steps", key):
                print(key, flush=True)
                with cpu_env(kind, work):
                    cell, _ = run_isolated(step_cell, cl, comp, steps, warmup, patch)
                results.put("steps", key, cell)
                results.write()
    kind = kinds_here()[0]
    backends = {
        "eager fp32": ("eager", False),
        "bf16": ("bf16", False),
        "bf16 compiled": ("bf16", True),
        "ONNX Runtime fp32": ("onnx", False),
    }
    for label, (backend, comp) in backends.items():
        key = f"{kind}: {label}"
        if not results.keep("predict", key):
            print(key, flush=True)
            with cpu_env(kind, work):
                results.put("predict", key, run_isolated(predict_cell, backend, comp, 1, smoke)[0])
            results.write()
    for seed in range(results["seeds"]):
        for label, comp in {"today (eager NCDHW)": False, "chosen (auto)": None}.items():
            key = f"{kind}: {label}, seed {seed}"
            if not results.keep("curves", key):
                print(key, flush=True)
                run = work / "curves" / f"{comp}_{seed}"
                shutil.rmtree(run, ignore_errors=True)
                with cpu_env(kind, work):
                    cell, _ = run_isolated(curve_cell, data, str(run), comp, seed, results["curve_iterations"], inline=smoke)
                results.put("curves", key, cell)
                results.write(with_plot=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hippocampus", default=str(SHARED / "Task04_Hippocampus"))
    ap.add_argument("--seeds", type=int, default=3)
    benchmark_arguments(ap, "throughput", "/tmp/leanseg_bench/throughput")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder, smoke_phantoms

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = str(smoke_phantoms(work)) if args.smoke else args.hippocampus
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "throughput",
        render_markdown,
        plot_curves,
        threads=2,
        seed="0 (steps, prediction); 0-2 (curves)",
        split="curves: fold 0 of leanseg's 5-fold split (split_seed 12345), validated on its held-out cases",
        data=data,
        smoke=args.smoke,
        seeds=1 if args.smoke else args.seeds,
        curve_iterations=4 if args.smoke else 1000,
    )
    for section, same in (("steps", ()), ("predict", ()), ("curves", ("curve_iterations",))):
        results.keep_cells(section, same, same_cpu=False)  # keyed by kind of CPU, each stamped with its own
    measure(results, work, data, args.smoke)
    results.write(with_plot=True)
    print(results.markdown())


def _ratio(cells: dict[str, Any], kind: str, path: str) -> str:
    base, cell = cells.get(f"{kind}: eager NCDHW (today)"), cells.get(f"{kind}: {path}")
    return f"{base['seconds_per_step'] / cell['seconds_per_step']:.2f}x" if base and cell else ""


def render_markdown(r: dict[str, Any]) -> str:
    from leanseg.fastpath import COMPILE_PAYS

    lines = ["# Throughput: the default training step and prediction on each path, per kind of CPU", "", *header_markdown(r), ""]
    steps = r.get("steps", {})
    lines += [
        "| kind: path | s / step | vs today | iterations / min | warm-up s | GFLOP / step | GFLOP/s | share of matmul rate | `aten::copy_` share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, c in steps.items():
        kind, path = key.split(": ", 1)
        lines.append(
            f"| {key}{' (fp32)' if not c['bf16'] else ''} | {c['seconds_per_step']:.3f} | {_ratio(steps, kind, path)} | "
            f"{60 / c['seconds_per_step']:.0f} | {c['warmup_seconds']:.1f} | {c['gflop_per_step']:.1f} | {c['gflops']:.0f} | "
            f"{c['gflops'] / c['matmul_gflops']:.0%} of {c['matmul_gflops']:.0f} | {c['profile']['aten::copy_']:.1%} |"
        )
    kinds = sorted({k.split(": ")[0] for k in steps})
    lines += ["", "Chosen by default (`train.compile` unset, runs of 1000+ iterations or 5+ minutes): "]
    lines[-1] += "; ".join(f"{k}: {'compiled channels-last' if COMPILE_PAYS.get(k) else 'eager NCDHW'}" for k in kinds) + "."
    lines += ["", "Per-op profile (share of the step's CPU time):", ""]
    for key, c in steps.items():
        if "channels-last" in key and "eager" in key:
            continue
        lines.append(f"- {key}: " + ", ".join(f"`{op}` {s:.1%}" for op, s in c["profile"].items()))
    lines += ["", "| prediction (network only) | " + " | ".join(_volumes(r)) + " |", "|---" * (1 + len(_volumes(r))) + "|"]
    for key, c in r.get("predict", {}).items():
        cells = [f"{c[v]['seconds']:.2f} s (first call {c[v]['first_call_seconds']:.1f} s)" for v in _volumes(r)]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += curve_lines(r.get("curves", {}))
    return "\n".join(lines) + "\n"


def _volumes(r: dict[str, Any]) -> list[str]:
    first = next(iter(r.get("predict", {}).values()), {})
    return list(first)


def curve_lines(curves: dict[str, Any]) -> list[str]:
    import statistics

    if not curves:
        return []
    lines = [
        "",
        "| curve | iterations / min | loss at the end (mean of the last 100 iterations) | val Dice | seconds |",
        "|---|---|---|---|---|",
    ]
    groups: dict[str, list[dict]] = {}
    for key, c in curves.items():
        tail = [loss for it, loss in c["loss"] if it > c["iterations"] - 100]
        c["tail_loss"] = statistics.mean(tail)
        groups.setdefault(key.rsplit(", seed", 1)[0], []).append(c)
        lines.append(
            f"| {key} | {c['iterations_per_minute']:.0f} | {c['tail_loss']:.4f} | {c['val_dice']:.4f} | {c['train_seconds']:.0f} |"
        )
    for name, cs in groups.items():
        if len(cs) > 1:
            tails, dice = [c["tail_loss"] for c in cs], [c["val_dice"] for c in cs]
            lines.append(
                f"| **{name}, mean ± sd of {len(cs)}** | {statistics.mean(c['iterations_per_minute'] for c in cs):.0f} | "
                f"{statistics.mean(tails):.4f} ± {statistics.stdev(tails):.4f} | {statistics.mean(dice):.4f} ± {statistics.stdev(dice):.4f} | |"
            )
    return lines


def plot_curves(r: dict[str, Any], path: Path) -> None:
    from leanseg.bench import panels, save_figure

    curves = r.get("curves", {})
    if not curves:
        return
    fig, ax = panels(1, (7, 4))
    for key, c in curves.items():
        its, losses = zip(*c["loss"])
        ax.plot(its, losses, label=key, lw=1, ls="-" if "today" in key else "--")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (Dice + CE)")
    save_figure(fig, [ax], path)


if __name__ == "__main__":
    main()
