"""Beyond one machine, measured on one: cohort prediction on Ray workers and data-parallel training (DDP).

Prediction: every case of a dataset (the 208 hippocampus images, the 6 BraTS volumes) predicted by the plain command
(one process, 1 and 2 threads) and on a local Ray cluster with 1 and 2 workers of 1 thread each; Ray's own start is
timed apart from the prediction, and every Ray output is checked voxel for voxel against the plain command's.
The model of each dataset is trained briefly here (the throughput, not the Dice, is measured).

Training: the hippocampus step with the global batch 2 as DDP over 2 processes x 1 thread against 1 process x 2
threads. On 2 cores this measures the overhead of the second process and its all-reduce, not a speed-up; the
record estimates the scaling to N machines from the gradient bytes each step sends.

    python benchmarks/scale/run.py [--hippocampus DIR] [--brats DIR] [--smoke]

Writes benchmarks/results/scale.{json,md}. Every cell is kept once measured (stamped with its commit): a run
interrupted part-way measures only what is missing when started again.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown, run_isolated

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"
MODES = {
    "plain, 1 thread": (None, 1),
    "plain, 2 threads": (None, 2),
    "Ray, 1 worker x 1 thread": (1, 1),
    "Ray, 2 workers x 1 thread": (2, 1),
}
DDP = {"1 process x 2 threads": 1, "DDP 2 processes x 1 thread": 2}
LINKS_GBIT = (1, 10, 100)


def train_model(data: str, run: str, iterations: int, threads: int) -> dict:
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    cfg = ExperimentConfig().with_overrides({"train.iterations": iterations, "train.val_every": iterations, "train.num_threads": threads})
    r = train(data, run, cfg, show_progress=False)
    return {"iterations": r.iterations, "train_seconds": r.seconds}


def predict_plain(run: str, inputs: str, out: str, threads: int) -> dict:
    """What `leanseg predict` does, in a process of its own: load once, predict every case."""
    from leanseg.inference import Predictor, collect_inputs
    from leanseg.utils import set_threads

    set_threads(threads)
    t0 = time.perf_counter()
    p = Predictor.from_run(Path(run), num_threads=threads)
    results = p.predict_files(collect_inputs(Path(inputs), p.plan.num_channels), Path(out))
    return {"seconds": time.perf_counter() - t0, "cases": len(results), "network_seconds": sum(r.timings["network"] for r in results)}


def predict_ray(run: str, inputs: str, out: str, workers: int, threads: int) -> dict:
    """`leanseg predict --ray-address local --workers W --threads T`: Ray's start timed apart from the prediction."""
    from leanseg.cohort import predict_cohort
    from leanseg.inference import Predictor, collect_inputs
    from leanseg.utils import connect_ray

    t0 = time.perf_counter()
    ray = connect_ray("local", num_cpus=2)
    t1 = time.perf_counter()
    p = Predictor.from_run(Path(run), num_threads=threads)
    s = predict_cohort(p, [Path(run)], {}, collect_inputs(Path(inputs), p.plan.num_channels), Path(out), "local", workers, threads)
    t2 = time.perf_counter()
    ray.shutdown()
    return {"ray_start_seconds": t1 - t0, "seconds": t2 - t1, "cases": len(s.done), "failed": len(s.failed)}


def ddp_step(data: str, run: str, nproc: int, iterations: int) -> dict:
    """Seconds per step of the default hippocampus training at global batch 2 on 2 threads in all (iterations 20 on)."""
    from leanseg.config import ExperimentConfig
    from leanseg.models import build_model
    from leanseg.runfolder import RunFolder
    from leanseg.training import train
    from leanseg.training.history import read_history

    cfg = ExperimentConfig().with_overrides(
        {"train.iterations": iterations, "train.val_every": 10**6, "train.checkpoint_every": 10**6, "train.num_threads": 2}
    )
    train(data, run, cfg, show_progress=False, nproc=nproc)
    rows = {int(r["iteration"]): r["seconds"] for r in read_history(Path(run))}
    start = min(k for k in rows if k >= 20)
    end = max(rows)
    model = build_model(cfg.model, RunFolder(run).plan())
    params = sum(p.numel() for p in model.parameters())
    return {"seconds_per_step": (rows[end] - rows[start]) / (end - start), "steps_timed": end - start, "parameters": params}


def inputs_of(data: str, work: Path) -> Path:
    """The dataset's training images in one folder (as a user's cohort), nnU-Net channel names kept."""
    from leanseg.data.datasets import load_dataset

    folder = work / "inputs"
    if folder.is_dir():
        return folder
    tmp = work / "inputs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ds = load_dataset(data)
    for c in ds.cases:
        for i, f in enumerate(c.images):
            name = f.name if ds.layout == "msd" else f"{c.case_id}_{i:04d}{ds.file_ending}"
            (tmp / name).symlink_to(f)
    tmp.rename(folder)
    return folder


def same_labels(a: Path, b: Path) -> bool:
    import numpy as np

    from leanseg.data.io import read_label

    names = sorted(p.name for p in a.glob("*.nii*"))
    return names == sorted(p.name for p in b.glob("*.nii*")) and all(
        np.array_equal(read_label(a / n).array, read_label(b / n).array) for n in names
    )


def predict_cells(results: Any, key: str, data: str, iterations: int, work: Path, smoke: bool) -> None:
    run = work / key / "run"
    if not (run / "checkpoint_final.pt").is_file():
        shutil.rmtree(run, ignore_errors=True)
        results.put("models", key, run_isolated(train_model, data, str(run), iterations, 2, inline=smoke)[0])
    inputs = inputs_of(data, work / key)
    for mode, (workers, threads) in MODES.items():
        if results.keep("predict", f"{key}: {mode}"):
            continue
        out = work / key / mode.replace(" ", "_").replace(",", "")
        shutil.rmtree(out, ignore_errors=True)
        print(f"{key}: {mode}", flush=True)
        if workers is None:
            cell, rss = run_isolated(predict_plain, str(run), str(inputs), str(out), threads)
        else:
            cell, rss = run_isolated(predict_ray, str(run), str(inputs), str(out), workers, threads)
            cell["identical_to_plain"] = same_labels(out, work / key / "plain_1_thread")
        results.put(
            "predict", f"{key}: {mode}", {**cell, "peak_rss_mib_driver": rss, "cases_per_minute": 60 * cell["cases"] / cell["seconds"]}
        )
        results.write()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hippocampus", default=str(SHARED / "Task04_Hippocampus"))
    ap.add_argument("--brats", default=str(SHARED / "BraTS2013_subset"))
    ap.add_argument("--train-iterations", type=int, default=60, help="brief training of each dataset's model (throughput only)")
    ap.add_argument("--ddp-iterations", type=int, default=120)
    benchmark_arguments(ap, "scale", "/tmp/leanseg_bench/scale")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder, smoke_phantoms

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sets = {"phantoms": str(smoke_phantoms(work))} if args.smoke else {"hippocampus": args.hippocampus, "BraTS": args.brats}
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "scale",
        render_markdown,
        threads=2,
        seed=0,
        split="every case of each dataset predicted; training: the default fold 0 split",
        data=", ".join(f"{k}: {v}" for k, v in sets.items()),
        smoke=args.smoke,
        train_iterations=3 if args.smoke else args.train_iterations,
        ddp_iterations=30 if args.smoke else args.ddp_iterations,
    )
    results.keep_cells("predict", ("train_iterations",), same_cpu=True)
    results.keep_cells("ddp", ("ddp_iterations",), same_cpu=True)
    results.keep("models")
    for key, data in sets.items():
        predict_cells(results, key, data, results["train_iterations"], work, args.smoke)
    ddp_data = next(iter(sets.values()))
    for mode, nproc in DDP.items():
        if not results.keep("ddp", mode):
            run = work / "ddp" / str(nproc)
            shutil.rmtree(run, ignore_errors=True)
            results.put("ddp", mode, run_isolated(ddp_step, ddp_data, str(run), nproc, results["ddp_iterations"], inline=args.smoke)[0])
            results.write()
    results.write()
    print(results.markdown())


def scaling(ddp: dict[str, Any]) -> list[str]:
    """Ring all-reduce sends 2 (N-1)/N of the gradient bytes a step per machine. Each machine keeps the measured step
    (its batch of 2; the global batch 2N), so N machines process N x the patches a second, less the all-reduce's
    time on the link: speed-up N t / (t + c), with no overlap of compute and communication assumed (a lower bound)."""
    one = ddp.get("1 process x 2 threads")
    if not one:
        return []
    grad = 4 * one["parameters"]
    lines = [
        "",
        f"Scaling on paper: {one['parameters']:,} parameters, {grad / 2**20:.1f} MiB of fp32 gradients a step. "
        "Ring all-reduce sends 2(N-1)/N of them per machine. Each machine keeps the measured 1-process step and its "
        "batch of 2 (global batch 2N); patches per second against one machine, no overlap of compute and communication:",
        "",
        "| machines N | " + " | ".join(f"speed-up at {g} Gbit/s" for g in LINKS_GBIT) + " |",
        "|---" * (len(LINKS_GBIT) + 1) + "|",
    ]
    step = one["seconds_per_step"]
    for n in (2, 4, 8, 16):
        comm = [2 * (n - 1) / n * grad * 8 / (g * 1e9) for g in LINKS_GBIT]
        lines.append(f"| {n} | " + " | ".join(f"{n * step / (step + c):.2f}x" for c in comm) + " |")
    return lines


def render_markdown(r: dict[str, Any]) -> str:
    lines = ["# Scale: cohort prediction on Ray, data-parallel training", "", *header_markdown(r)]
    lines += [
        "| dataset: mode | cases | Ray start s | prediction s | cases / min | identical to plain | driver peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, c in r.get("predict", {}).items():
        same = {True: "yes", False: "**no**"}.get(c.get("identical_to_plain"), "")
        start = f"{c['ray_start_seconds']:.1f}" if "ray_start_seconds" in c else ""
        lines.append(
            f"| {k} | {c['cases']} | {start} | {c['seconds']:.1f} | {c['cases_per_minute']:.1f} | {same} | {c['peak_rss_mib_driver']:.0f} |"
        )
    lines += ["", "| training (global batch 2, 2 threads in all) | s / step | steps timed |", "|---|---|---|"]
    for k, c in r.get("ddp", {}).items():
        lines.append(f"| {k} | {c['seconds_per_step']:.3f} | {c['steps_timed']} |")
    lines += scaling(r.get("ddp", {}))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
