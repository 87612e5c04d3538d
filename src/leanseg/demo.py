"""``leanseg demo``: phantoms -> train -> predict -> evaluate -> overlay, in a few minutes on 2 cores."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.utils import atomic_path


def save_overlay(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, path: Path, title: str = "") -> Path:
    """Three orthogonal slices through the reference's centre: image with reference (green) and prediction (red) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fg = np.argwhere(reference > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else np.asarray(reference.shape) // 2
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    for ax, axis in zip(axes, range(3)):
        sl = [slice(None)] * 3
        sl[axis] = centre[axis]
        im, ref, pred = (np.rot90(a[tuple(sl)]) for a in (image, reference, prediction))
        ax.imshow(im, cmap="gray")
        for k in np.unique(ref[ref > 0]):
            ax.contour(ref == k, levels=[0.5], colors="lime", linewidths=1.0)
        for k in np.unique(pred[pred > 0]):
            ax.contour(pred == k, levels=[0.5], colors="red", linewidths=1.0, linestyles="--")
        ax.set_title(["sagittal", "coronal", "axial"][axis])
        ax.axis("off")
    fig.suptitle(f"{title}  (green: reference, red dashed: prediction)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def run_demo(out: Path, minutes: float = 3.0, num_cases: int = 24, seed: int = 0, console: Any = None) -> dict[str, Any]:
    """Run the whole road on synthetic phantoms and return the evaluation means."""
    from rich.console import Console

    from leanseg.cli_render import print_metrics
    from leanseg.config import ExperimentConfig
    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_image, read_label
    from leanseg.data.synthetic import generate_phantom_dataset
    from leanseg.inference import Predictor
    from leanseg.metrics import evaluate_folders
    from leanseg.runfolder import RunFolder
    from leanseg.training import train

    console = console or Console()
    out = Path(out)
    data = out / "data"
    if not (data / "dataset.json").is_file():
        console.print(f"[bold]1/4[/] generating {num_cases} phantoms into {data}")
        generate_phantom_dataset(data, num_cases, seed)
    console.print(f"[bold]2/4[/] training for {minutes} min on 2 threads (fold 0 of 5)")
    cfg = ExperimentConfig().with_overrides(
        {
            "train.budget_minutes": minutes,
            "train.seed": seed,
            "train.val_every": 100,
            "train.checkpoint_every": 100,
        }
    )
    run = out / "run"
    result = train(data, run, cfg, fold=0)
    val_ids = RunFolder(run).split()["val"]
    console.print(f"[bold]3/4[/] predicting the {len(val_ids)} validation cases")
    ds = load_dataset(data)
    predictor = Predictor.from_run(run)
    preds = out / "predictions"
    results = predictor.predict_files([(c, list(ds.case(c).images)) for c in val_ids], preds)
    refs = out / "references"
    refs.mkdir(exist_ok=True)
    for c in val_ids:
        target = refs / ds.case(c).label.name  # type: ignore[union-attr]
        if not target.exists():
            shutil.copyfile(ds.case(c).label, target)  # type: ignore[arg-type]
    console.print("[bold]4/4[/] evaluating")
    res = evaluate_folders(preds, refs, ds.labels, out)
    print_metrics(console, res)
    first = ds.case(val_ids[0])
    overlay = save_overlay(
        read_image(list(first.images)).array[0],
        read_label(first.label).array,
        read_label(preds / first.images[0].name).array,  # type: ignore[arg-type]
        out / "overlay.png",
        title=first.case_id,
    )
    sec = float(np.mean([r.seconds for r in results]))
    console.print(
        f"mean foreground Dice {res['mean']['dice_mean']:.4f}, HD95 {res['mean']['hd95_mean']:.2f} mm; "
        f"{result.iterations} iterations; {sec:.3f} s per case to predict.\n"
        f"data: {data}\nrun (config, checkpoints, metrics.csv, training_curve.png): {run}\n"
        f"predictions: {preds}\nmetrics: {out / 'metrics.md'} (.csv, .json)\noverlay: {overlay}"
    )
    return res["mean"]
