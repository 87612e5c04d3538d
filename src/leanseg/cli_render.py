"""Tables and progress bars of the command line and the demo, rendered in one place (rich)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def nas_progress(controller: str, final_iterations: int) -> Iterator[tuple[Any, Any]]:
    """Bars for the architecture search's children and its final training: yields (per-child, final) callbacks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"[bold]architecture search ({controller})"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("children", total=None)  # the search says how many (warm-up included) as it goes
        final_task = bar.add_task("final training of the chosen child", total=max(final_iterations, 1), visible=False)

        def show_final(done: int, n: int) -> None:
            bar.update(final_task, completed=done, visible=True)

        def show(row: dict[str, Any], done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            did = "trained the shared weights" if row["reward"] is None else f"Dice {row['reward']:.4f}"
            phase = "" if row["phase"] == "both" else f"{row['phase']} "  # the interleaved loop's children train and are scored
            bar.console.print(
                f"episode {row['episode']} {phase}child {row['child']}: {did}, patch {row['patch']}, "
                f"entropy {row['entropy']:.2f}, {row['memory_estimate_mib']:.0f} MiB estimated"
            )

        yield show, show_final


def architecture_search_tables(console: Any, res: Any, final_iterations: int, out: Path) -> None:
    """The search's per-episode table and a line on the chosen child."""
    from rich.table import Table

    from leanseg.search.nas import episode_stats

    t = Table(title="architecture search: per episode")
    for col in ("episode", "mean child Dice", "best child Dice", "controller entropy"):
        t.add_column(col)
    for e in episode_stats(res.history):
        episode = str(e["episode"]) if e["episode"] >= 0 else "warm-up"
        t.add_row(episode, f"{e['mean_reward']:.4f}", f"{e['best_reward']:.4f}", f"{e['entropy']:.2f}")
    console.print(t)
    how = (
        f"shared weights as they are {res.val_dice_shared_weights:.4f}, after {final_iterations} iterations of its own"
        if final_iterations
        else "shared weights as they are, no retraining"
    )
    console.print(
        f"chosen child: Dice {res.val_dice:.4f} on the validation fold ({how}); run folder {res.run_dir} "
        f"(leanseg predict -m {res.run_dir}); plot {out / 'search.png'}"
    )


def print_metrics(console: Any, res: dict[str, Any]) -> None:
    """The evaluation table (per case where there are at most 30, then the mean) and the object-wise line."""
    from rich.table import Table

    labels = {int(k): v for k, v in res["labels"].items()}
    classes = [k for k in labels if k != 0]
    t = Table(title="evaluation")
    t.add_column("case")
    for k in classes:
        t.add_column(f"Dice {labels[k]}")
    for k in classes:
        t.add_column(f"HD95 {labels[k]} (mm)")
    objects = "object_recall" in res["mean"]
    if objects:
        for col in ("objects", "object recall", "object Dice", "false positives"):
            t.add_column(col)
    rows = res["cases"] if len(res["cases"]) <= 30 else []
    for r in rows + [{"case": "[bold]mean", **res["mean"]}]:
        obj = []
        if objects:
            fp = r.get("false_positives", r.get("fp_per_scan"))
            obj = [
                f"{r['objects']:.0f}",
                f"{r['object_recall']:.3f}",
                f"{r['object_dice']:.3f}",
                f"{fp:.2f}" if isinstance(fp, float) else str(fp),
            ]
        t.add_row(str(r["case"]), *[f"{r[f'dice_{k}']:.4f}" for k in classes], *[f"{r[f'hd95_{k}']:.2f}" for k in classes], *obj)
    console.print(t)
    from leanseg.metrics import conventions_note

    console.print(conventions_note(res), highlight=False)
    for name, values in res.get("undeclared_values", {}).items():
        console.print(f"[yellow]warning:[/] {name} holds values {values} the dataset does not declare; they count as no class.")
    if objects:
        m = res["mean"]
        console.print(
            f"all cases: object recall {m['object_recall']:.3f}, object Dice {m['object_dice']:.3f}, {m['fp_per_scan']:.2f} false positives "
            f"per scan; FROC LUNA16 {m['froc_luna16']:.3f}, average recall over 0-5 FP/scan {m['froc_avg_recall_0_5']:.3f}"
        )


def print_predictions(console: Any, p: Any, results: list[Any], skipped: list[str], failed: dict[str, str], where: str = "") -> None:
    """The table of predicted cases (seconds; blocks used with a policy; a LowRes run's stages), then what was
    skipped (``--continue``) and what failed, by name."""
    import numpy as np
    from rich.table import Table

    members = f", ensemble of {len(p.nets)}" if len(p.nets) > 1 else ""
    t = Table(
        title=f"{len(results)} case(s), back-end {p.cfg.backend}{' + mirroring' if p.cfg.tta else ''}{members}, {p.cfg.num_threads} thread(s){where}"
    )
    blocks, n_blocks = p.policy is not None, p.model.num_gated_blocks
    stages = bool(results) and "fraction" in results[0].timings  # a two-stage model (LowRes): its stages, the share sent on
    for col in (
        "case",
        "output",
        *(["blocks used"] if blocks else []),
        *(["to stage 2", "stage 1 s", "stage 2 s"] if stages else []),
        "network s",
        "total s",
    ):
        t.add_column(col)

    def cells(tm: dict[str, float], seconds: float, digits: int = 0) -> list[str]:  # blocks used: whole per case, 2 digits in the mean
        used = [f"{tm['blocks_used']:.{digits}f}/{n_blocks}"] if blocks else []
        two = [f"{100 * tm['fraction']:.2f} %", f"{tm['stage1']:.3f}", f"{tm['stage2']:.3f}"] if stages else []
        return [*used, *two, f"{tm['network']:.3f}", f"{seconds:.3f}"]

    for r in results:
        t.add_row(r.case_id, str(r.output), *cells(r.timings, r.seconds))
    if results:
        keys = [k for k in results[0].timings if all(k in r.timings for r in results)]
        mean = {k: float(np.mean([r.timings[k] for r in results])) for k in keys}
        t.add_row("[bold]mean", "", *cells(mean, float(np.mean([r.seconds for r in results])), digits=2))
    console.print(t)
    if skipped or failed:
        console.print(f"{len(results)} done, {len(skipped)} skipped (an earlier job's), {len(failed)} failed")
    for case_id, error in failed.items():
        console.print(f"[red]failed[/] {case_id}: {error}", highlight=False)
