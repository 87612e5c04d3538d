"""A run's metrics table (``metrics.csv``) and training curve (``training_curve.png``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from leanseg.utils import atomic_path, atomic_write_text


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    plot_training_curve(history, out / "training_curve.png")


def read_history(run: Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` as :func:`write_history` wrote them, each with its filled cells as floats."""
    with open(Path(run) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def plot_training_curve(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    its = [r["iteration"] for r in history]
    ax.plot(its, [r["loss"] for r in history], color="tab:blue", lw=0.8, label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Dice + CE loss")
    vals = [(r["iteration"], r["val_dice"]) for r in history if "val_dice" in r]
    if vals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*vals), "o-", color="tab:red", label="validation Dice")
        ax2.set_ylabel("validation Dice (mean foreground)")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right")
    ax.legend(loc="upper right")
    ax.set_title("training curve")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
