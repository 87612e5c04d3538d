"""The ``leanseg`` command line: thin typer commands, each parsing options and calling one library
function. Heavy imports live inside the commands so that ``leanseg --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    help="leanseg: 3D medical image segmentation that costs less (time, memory, tuning).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Dataset utilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")
search_app = typer.Typer(help="Searches: training strategy (RL controller and baselines) and architecture (ENAS).", no_args_is_help=True)
app.add_typer(search_app, name="search")


def _console() -> Any:
    from rich.console import Console

    return Console()


def _run(fn: Any) -> Any:
    """Run ``fn``; a :class:`LeansegError` becomes one red sentence and exit code 2, no traceback."""
    from leanseg.errors import LeansegError

    try:
        return fn()
    except LeansegError as e:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def _progress(desc: str) -> Any:
    from leanseg.utils import progress_bar

    return progress_bar(desc)


def _load_config(config: Optional[Path], overrides: list[str], budget: Optional[float] = None) -> Any:
    from leanseg.config import ExperimentConfig

    cfg = ExperimentConfig.load(config) if config else ExperimentConfig()
    if overrides:
        cfg = cfg.with_overrides(overrides)
    if budget is not None:
        cfg = cfg.with_overrides({"train.budget_minutes": budget})
    return cfg


@app.command()
def fingerprint(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset folder (MSD or nnU-Net v2).")],
    config: Annotated[Optional[Path], typer.Option(help="Experiment config YAML.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override, e.g. data.patch_size=[40,56,40].")] = [],  # noqa: B006
    json_: Annotated[bool, typer.Option("--json", help="Print the fingerprint and the plan as JSON instead of a table.")] = False,
) -> None:
    """Show the dataset fingerprint and the plan (spacing, patch, network, normalisation) it chooses."""

    def go() -> None:
        from rich.table import Table

        from leanseg.data.prepare import fingerprint_dataset
        from leanseg.plan import plan_from_fingerprint

        cfg = _load_config(config, set_)
        ds, fp = fingerprint_dataset(data, progress=None if json_ else _progress("fingerprint"))
        plan = plan_from_fingerprint(fp, cfg.data, cfg.model)
        if json_:
            sys.stdout.write(json.dumps({"fingerprint": fp.to_dict(), "plan": plan.to_dict()}, indent=1) + "\n")
            return
        t = Table(title=f"{ds.name} ({ds.layout}, {len(ds.cases)} cases, {fp.modality})")
        t.add_column("property")
        t.add_column("value")
        t.add_row("channels", ", ".join(ds.channel_names))
        t.add_row("labels", ", ".join(f"{k}: {v}" for k, v in ds.labels.items()))
        t.add_row("median spacing (mm)", " x ".join(f"{v:.3g}" for v in fp.median_spacing))
        t.add_row("class voxel fractions", ", ".join(f"{k}: {v:.4f}" for k, v in fp.class_fractions.items()))
        for c, st in enumerate(fp.intensity):
            t.add_row(
                f"intensity ch{c} (foreground)", f"mean {st['mean']:.4g} std {st['std']:.4g} p0.5 {st['p00_5']:.4g} p99.5 {st['p99_5']:.4g}"
            )
        t.add_row("target spacing (mm)", " x ".join(f"{v:.3g}" for v in plan.target_spacing))
        t.add_row("median shape at target", " x ".join(map(str, plan.median_shape)))
        t.add_row("patch size", " x ".join(map(str, plan.patch_size)))
        t.add_row("strides", " ".join("x".join(map(str, s)) for s in plan.strides))
        t.add_row("features", ", ".join(map(str, plan.features)))
        t.add_row(
            "normalisation",
            ", ".join(n + (f" window ({w[0]:.0f}, {w[1]:.0f})" if w else "") for n, w in zip(plan.normalization, plan.ct_window)),
        )
        for note in fp.notes:
            t.add_row("note", note)
        _console().print(t)

    _run(go)


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset folder (MSD or nnU-Net v2).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (created; an existing run resumes).")],
    config: Annotated[Optional[Path], typer.Option(help="Experiment config YAML (see configs/).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override, e.g. train.lr=0.003 (repeatable).")] = [],  # noqa: B006
    fold: Annotated[Optional[str], typer.Option(help="Validation fold 0..4, or all: train on every case (default: data.fold).")] = None,
    budget_minutes: Annotated[Optional[float], typer.Option("--budget-minutes", help="Wall-clock training budget.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (default: the config's, auto).")] = None,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Data-parallel processes on this machine (DDP: gloo on CPUs, NCCL on GPUs); 1: one process.")
    ] = 1,
) -> None:
    """Train a model on a dataset folder; writes checkpoints, metrics.csv and a training curve.

    Several machines: run this command under torchrun on each (README, "More than one machine")."""

    def go() -> None:
        from leanseg.training import train as run_train

        # --fold goes through the config's own override road: "3" becomes the fold 3, "all" stays all
        cfg = _load_config(
            config, set_ + [f"train.device={device}"] * bool(device) + [f"data.fold={fold}"] * (fold is not None), budget_minutes
        )
        r = run_train(data, out, cfg, nproc=nproc)
        done = f"run {r.run_dir} was already complete; left as it is (a new --out trains afresh). " if r.already_complete else ""
        _console().print(
            done
            + f"trained {r.iterations} iterations in {r.seconds / 60:.1f} min (ended by the {'clock budget' if r.ended_by == 'budget' else 'iteration count'}); validation Dice "
            + ", ".join(f"{'mean' if k == 'val_dice' else k.removeprefix('val_dice_')}={v:.4f}" for k, v in r.val.items())
            + f"; data wait {100 * r.data_wait_share:.1f}% of step time; run folder {r.run_dir}"
        )

    _run(go)


@app.command()
def predict(
    model: Annotated[
        list[Path], typer.Option("--model", "-m", help="Run folder (or checkpoint file) from `leanseg train`; repeat to ensemble runs.")
    ],
    input: Annotated[Path, typer.Option("--input", "-i", help="Image file, folder of images, or a DICOM series folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the label files.")],
    backend: Annotated[Optional[str], typer.Option(help="eager | bf16 | onnx (needs `leanseg export`).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="auto | whole | sliding.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="Test-time mirroring (8 flips, ~8x network time).")] = None,
    policy: Annotated[
        Optional[Path], typer.Option(help="AutoPath policy (from `leanseg train-policy`): each image runs on its own blocks.")
    ] = None,
    path: Annotated[
        Optional[str], typer.Option(help="One fixed path for every image, e.g. 11101100 (from `leanseg drop-sweep --search`).")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="auto (the input's format; NIfTI for DICOM) | dicom-seg (for a DICOM series input).")
    ] = "auto",
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (default: the config's, auto).")] = None,
    resume: Annotated[
        bool, typer.Option("--continue", help="Skip the cases whose prediction an earlier (killed) job already wrote into --output.")
    ] = False,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Predict on Ray workers: a cluster address, auto (this machine's), or local.")
    ] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray workers, each loading the model once (default: CPUs / threads).")] = None,
) -> None:
    """Segment images; label files get exactly the input's shape and affine."""

    def go() -> None:
        from leanseg.cli_render import print_predictions
        from leanseg.inference import Predictor, collect_inputs
        from leanseg.utils import set_threads

        options = {"backend": backend, "mode": mode, "tta": tta, "device": device, "policy": policy, "path": path}
        p = Predictor.from_run(list(model), num_threads=threads, **options)
        set_threads(p.cfg.num_threads)
        cases = collect_inputs(input, p.plan.num_channels)
        if ray_address is None:
            results = p.predict_files(cases, output, progress=_progress("predict"), output_format=output_format, resume=resume)
            print_predictions(_console(), p, [r for r in results if not r.skipped], [r.case_id for r in results if r.skipped], {})
            return
        from leanseg.cohort import predict_cohort
        from leanseg.errors import LeansegError

        if workers is not None and workers < 1:
            raise LeansegError(f"--workers is {workers}; use 1 or more.")
        with _console().status("predicting on Ray") as status:
            s = predict_cohort(
                p, list(model), {k: v for k, v in options.items() if v is not None}, cases, output, ray_address, workers,
                p.cfg.num_threads, resume, output_format, progress=lambda done, n: status.update(f"predicting on Ray: {done}/{n} cases"),
            )  # fmt: skip
        print_predictions(_console(), p, s.done, s.skipped, s.failed, f", {s.workers} Ray worker(s)")
        if s.failed:
            raise typer.Exit(1)

    _run(go)


@app.command("train-policy")
def train_policy(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run folder of a deeplab3d_r18/r50 model.")],
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Dataset folder (default: the one the run was trained on).")] = None,
    tau: Annotated[Optional[float], typer.Option(help="Penalty of a wrong voxel (default autopath.tau): higher keeps more blocks.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Policy file (default RUN/policies/policy_tau<tau>.pt).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override, e.g. autopath.steps=400 (repeatable).")] = [],  # noqa: B006
    backend: Annotated[Optional[str], typer.Option(help="eager | bf16 for the frozen model (default: bf16 where fast).")] = None,
) -> None:
    """Train an AutoPath policy (REINFORCE) that picks which residual blocks each image runs."""

    def go() -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from leanseg.dynamic.run import train_policy_for_run

        overrides = list(set_) + ([f"autopath.tau={tau}"] if tau is not None else [])
        with Progress(TextColumn("[bold]policy"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}")) as bar:
            task = bar.add_task("policy", total=None, info="")

            def show(step: int, row: dict[str, float]) -> None:
                bar.update(
                    task,
                    completed=step,
                    info=f"step {step} stage {row['stage']} reward {row['reward']:.3f} blocks {row['greedy_blocks_used']:.1f}",
                )

            s = train_policy_for_run(model, data, overrides, out, backend, progress=show)
        _console().print(
            f"policy tau={s['tau']:g}: {s['steps']} updates in {s['train_seconds'] / 60:.1f} min; on {s['val_cases']} validation cases "
            f"Dice {s['dice']:.4f}, blocks used {s['mean_blocks_used']:.2f}/{s['num_blocks']}; written to {s['path']}"
        )

    _run(go)


def _best_fixed_table(res: dict) -> Any:
    from rich.table import Table

    t = Table(title=f"best fixed path per blocks used, chosen on these {res['val_cases']} cases (so its Dice is optimistic)")
    for col in ("blocks used", "path (predict --path)", "Dice"):
        t.add_column(col)
    for r in res["best_fixed"]:
        t.add_row(str(r["blocks_used"]), r["path"], f"{r['dice']:.4f}")
    return t


@app.command("drop-sweep")
def drop_sweep(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run folder of a deeplab3d_r18/r50 model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for sweep.json and sweep.png.")],
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Dataset folder (default: the one the run was trained on).")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="DropRandomN draws per level (default autopath.random_repeats).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="eager | bf16 (default: bf16 where fast).")] = None,
    search: Annotated[
        bool, typer.Option(help="Also find the best fixed path per blocks used (every mask up to 12 blocks), for `predict --path`.")
    ] = False,
) -> None:
    """Dice against blocks dropped for DropN, DropFirstN, DropLastN and DropRandomN on the validation split."""

    def go() -> None:
        from rich.table import Table

        from leanseg.dynamic.run import sweep_run

        res = sweep_run(model, data, out, repeats, backend, progress=_progress("sweep"), search=search)
        t = Table(title=f"mean Dice on {res['val_cases']} validation cases (DropRandomN: mean of {res['repeats']} draws)")
        t.add_column("blocks dropped")
        names = [k for k in res["summary"] if k != "Full"]
        for n in names:
            t.add_column(n)
        full = res["summary"]["Full"][0]["dice"]
        t.add_row("0", *[f"{full:.4f}"] * len(names))
        levels = sorted({v["blocks_dropped"] for k in names if k != "DropN" for v in res["summary"][k].values()})
        for lv in levels:
            cells = []
            for k in names:
                vals = [v["dice"] for v in res["summary"][k].values() if v["blocks_dropped"] == lv]
                cells.append(f"{np.mean(vals):.4f}" + (" (mean)" if k == "DropN" and vals else "") if vals else "")
            t.add_row(str(lv), *cells)
        _console().print(t)
        if search:
            _console().print(_best_fixed_table(res))
        _console().print(f"written {Path(out) / 'sweep.json'} and {Path(out) / 'sweep.png'}")

    import numpy as np

    _run(go)


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predicted label files.")],
    ref: Annotated[Path, typer.Option("--ref", help="Folder of reference label files (same names).")],
    out: Annotated[Optional[Path], typer.Option(help="Where metrics.csv/.md/.json go (default: --pred).")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Dataset folder, to name the classes.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    objects: Annotated[
        bool, typer.Option("--objects", help="Also object-wise recall, object Dice, false positives per scan and FROC (small targets).")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Score the cases that have a prediction; list the others (default: refuse).")
    ] = False,
    empty_hd95: Annotated[
        str, typer.Option("--empty-hd95", help="HD95 of a class empty on one side only: diagonal (the image's, mm) or nan (MONAI's).")
    ] = "diagonal",
) -> None:
    """Dice and HD95 (mm) per case and class, with means; writes CSV, markdown and JSON."""

    def go() -> None:
        from leanseg.metrics import evaluate_folders

        labels, ignore, regions = None, None, None
        if dataset is not None:
            from leanseg.data.datasets import load_dataset

            ds = load_dataset(dataset, require_labels=False)
            labels, ignore, regions = ds.labels, ds.ignore_label, ds.regions
        res = evaluate_folders(
            pred,
            ref,
            labels,
            out,
            objects=objects,
            allow_missing=allow_missing,
            empty_hd95=empty_hd95,
            ignore_label=ignore,
            regions=regions,
        )
        if json_:  # everything metrics.json holds: per-case rows, means, labels, missing cases, conventions
            sys.stdout.write(json.dumps(res, indent=1) + "\n")
        else:
            from leanseg.cli_render import print_metrics

            print_metrics(_console(), res)

    _run(go)


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run folder from `leanseg train`.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="ONNX file (default: RUN/model.onnx); a folder for LowRes's two graphs.")
    ] = None,
) -> None:
    """Export a trained model to ONNX for `leanseg predict --backend onnx` (LowRes: one graph per stage)."""

    def go() -> None:
        from leanseg.export import export_onnx

        for path in export_onnx(model, output):
            _console().print(f"wrote {path}")

    _run(go)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's data, run and results.")] = Path("leanseg_demo"),
    minutes: Annotated[float, typer.Option(help="Training budget in minutes.")] = 3.0,
    cases: Annotated[int, typer.Option(help="Number of synthetic phantoms.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed for data and training.")] = 0,
) -> None:
    """Generate phantoms, train, predict, evaluate, and draw an overlay: the main job end to end."""

    def go() -> None:
        from leanseg.demo import run_demo

        run_demo(out, minutes=minutes, num_cases=cases, seed=seed, console=_console())

    _run(go)


@search_app.command("strategy")
def search_strategy(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset folder (MSD or nnU-Net v2).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Search folder (an existing one resumes).")],
    controller: Annotated[
        Optional[str], typer.Option(help="ppo | hill | hill-continuous | random | tpe (default search.strategy.controller).")
    ] = None,
    trials: Annotated[Optional[int], typer.Option(help="Trials in all, failed ones included (default search.strategy.trials).")] = None,
    parallel: Annotated[Optional[int], typer.Option(help="Trials at once (default search.strategy.parallel).")] = None,
    in_process: Annotated[
        Optional[bool],
        typer.Option("--in-process", help="Trials one at a time in this process: no start-up per trial; a failing trial stops the search."),
    ] = None,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Run trials on this Ray cluster ('local': start one here).")
    ] = None,
    config: Annotated[Optional[Path], typer.Option(help="Base experiment config for every trial.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override of the base config, e.g. train.iterations=300.")] = [],  # noqa: B006
    space: Annotated[Optional[Path], typer.Option(help="Search space YAML: a list of {key, low, high, log}.")] = None,
    trial_minutes: Annotated[Optional[float], typer.Option("--trial-minutes", help="Training budget per trial.")] = None,
    init_checkpoint: Annotated[
        Optional[Path], typer.Option("--init-checkpoint", help="Fine-tune every trial from this checkpoint.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Controller seed (default search.strategy.seed).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Where each trial trains: auto | cpu | cuda | cuda:N (train.device).")] = None,
) -> None:
    """Search augmentation probabilities and learning rate; each trial's reward is its validation Dice."""

    def go() -> None:
        from rich.table import Table

        from leanseg.errors import LeansegError
        from leanseg.search.space import SearchSpace
        from leanseg.search.strategy import search_strategy as run

        overrides = list(set_) + ([f"train.device={device}"] if device else [])
        if init_checkpoint is not None:
            overrides.append(f"train.init_checkpoint={init_checkpoint.resolve()}")
        cfg = _load_config(config, overrides, trial_minutes)
        given = {"controller": controller, "trials": trials, "parallel": parallel, "seed": seed, "in_process": in_process}
        cfg = cfg.with_overrides({f"search.strategy.{k}": v for k, v in given.items() if v is not None})
        st = cfg.search.strategy
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"[bold]search ({st.controller})"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            task = bar.add_task("trials", total=st.trials)

            def show(trial: dict[str, Any], ended: int, total: int) -> None:
                bar.update(task, completed=ended)
                r = trial.get("reward")
                bar.console.print(
                    f"trial {trial['candidate']['id']}: " + (f"Dice {r:.4f}" if r is not None else f"[red]failed[/] ({trial.get('error')})")
                )

            res = run(data, out, ray_address=ray_address, base=cfg, space=SearchSpace.load(space) if space else None, progress=show)
        if res.trials and not any(x["status"] == "done" for x in res.trials):
            raise LeansegError(
                f"Every one of the {len(res.trials)} trials failed (the first: {res.trials[0].get('error')}); "
                f"see {out / 'trials.csv'} and fix the base config before searching again."
            )
        t = Table(title=f"best strategies ({st.controller}, {len(res.trials)} trials)")
        keys = list(res.trials[0]["candidate"]["values"]) if res.trials else []
        for col in ("trial", "Dice", *keys):
            t.add_column(col)
        for tr in sorted((x for x in res.trials if x["status"] == "done"), key=lambda x: -x["reward"])[:5]:
            t.add_row(str(tr["candidate"]["id"]), f"{tr['reward']:.4f}", *[f"{tr['candidate']['values'][k]:.3g}" for k in keys])
        _console().print(t)
        _console().print(f"winning config: {out / 'best_config.yaml'} (leanseg train --config); plot: {out / 'rewards.png'}")

    _run(go)


@search_app.command("architecture")
def search_architecture(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset folder (MSD or nnU-Net v2).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Search folder (an existing one resumes).")],
    episodes: Annotated[Optional[int], typer.Option(help="Controller episodes.")] = None,
    children: Annotated[Optional[int], typer.Option(help="Children per episode that train the shared weights (the paper: 20).")] = None,
    loop: Annotated[
        Optional[str],
        typer.Option(help="two_phase (ENAS: train the shared weights, then score fresh children with them fixed) | interleaved."),
    ] = None,
    scored_children: Annotated[
        Optional[int], typer.Option("--scored-children", help="two_phase: children per episode scored with the weights fixed.")
    ] = None,
    child_iterations: Annotated[Optional[int], typer.Option("--child-iterations", help="Steps of the shared weights per child.")] = None,
    skips: Annotated[
        Optional[str], typer.Option(help="cross (a long skip from any encoder stage, the paper's) | same_level (from its own level).")
    ] = None,
    controller: Annotated[Optional[str], typer.Option(help="enas (LSTM + REINFORCE) | random (the reference).")] = None,
    val_cases: Annotated[Optional[int], typer.Option("--val-cases", help="Validation cases that score each child.")] = None,
    memory_limit_gb: Annotated[
        Optional[float],
        typer.Option("--memory-limit-gb", help="Never sample a child whose estimate exceeds this (default: half the free memory)."),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option(help="Base experiment config (fold, batch size, learning rate, search.architecture...).")
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override, e.g. train.lr=0.003 or search.architecture.derive_samples=5.")] = [],  # noqa: B006
    seed: Annotated[Optional[int], typer.Option(help="Controller and sampling seed.")] = None,
    momentum: Annotated[
        Optional[float], typer.Option(help="SGD momentum of the shared weights (0.99 collapsed them on hippocampus).")
    ] = None,
    final_iterations: Annotated[
        Optional[int],
        typer.Option("--final-iterations", help="Then train the chosen child alone from the shared weights (0: as they are)."),
    ] = None,
    final_momentum: Annotated[
        Optional[float], typer.Option("--final-momentum", help="SGD momentum of that final training (default: the config's).")
    ] = None,
    final_schedule: Annotated[
        Optional[str],
        typer.Option("--final-schedule", help="restart: the schedule over the final iterations alone; continue: over search and final."),
    ] = None,
    start_prob: Annotated[
        Optional[float],
        typer.Option("--start-prob", help="ENAS: the initial policy picks the first child's choices with this probability (0: uniform)."),
    ] = None,
    controller_lr: Annotated[
        Optional[float], typer.Option("--controller-lr", help="ENAS: the controller's Adam learning rate (default the paper's 0.001).")
    ] = None,
    warmup_children: Annotated[
        Optional[int],
        typer.Option("--warmup-children", help="ENAS: first train the shared weights on this many uniform children, not told to it."),
    ] = None,
    device: Annotated[
        Optional[str], typer.Option(help="Where the shared weights train: auto | cpu | cuda | cuda:N (train.device).")
    ] = None,
) -> None:
    """Search a U-Net's macro structure with shared weights; the chosen child is ready for `leanseg predict`.

    Every option left out takes its value from the config's search.architecture section (one default each)."""
    given = {k: v for k, v in dict(locals()).items() if k not in ("data", "out", "config", "set_", "device") and v is not None}

    def go() -> None:
        from leanseg.cli_render import architecture_search_tables, nas_progress
        from leanseg.search.nas import search_architecture as run

        cfg = _load_config(config, list(set_) + ([f"train.device={device}"] if device else [])).with_overrides(
            {f"search.architecture.{k}": v for k, v in given.items()}
        )
        a = cfg.search.architecture
        with nas_progress(a.controller, a.final_iterations) as (show, show_final):
            res = run(data, out, cfg, progress=show, final_progress=show_final)
        architecture_search_tables(_console(), res, a.final_iterations, out)

    _run(go)


@data_app.command("fetch")
def data_fetch(
    task: Annotated[str, typer.Argument(help="MSD task, e.g. Task04_Hippocampus.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to unpack into.")] = Path("data"),
    url: Annotated[Optional[str], typer.Option(help="Archive address (default: the MSD mirror MONAI uses).")] = None,
    md5: Annotated[Optional[str], typer.Option(help="Expected MD5 of the archive (default: MONAI's table).")] = None,
) -> None:
    """Download an MSD task archive, verify its checksum and unpack it."""

    def go() -> None:
        from leanseg.data.fetch import fetch_msd_task

        path = fetch_msd_task(task, out, url=url, md5=md5)
        _console().print(f"{task} is in {path}")

    _run(go)


@data_app.command("phantoms")
def data_phantoms(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the MSD dataset.")],
    cases: Annotated[int, typer.Option(help="Number of cases.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write seeded synthetic phantoms as an MSD dataset folder."""

    def go() -> None:
        from leanseg.data.synthetic import generate_phantom_dataset

        _console().print(f"wrote {generate_phantom_dataset(out, cases, seed)}")

    _run(go)


@data_app.command("chest")
def data_chest(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the MSD dataset.")],
    cases: Annotated[int, typer.Option(help="Number of cases.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Voxels per volume (x y z).")] = (300, 300, 200),
    spacing: Annotated[tuple[float, float, float], typer.Option(help="Voxel spacing in mm (x y z).")] = (1.0, 1.0, 1.5),
    nodules_per_scan: Annotated[float, typer.Option(help="Mean nodules per scan (Poisson); LUNA16 has 1.34.")] = 1186 / 888,
) -> None:
    """Write seeded synthetic LUNA16-like chest CTs with 3-32 mm nodules as an MSD dataset folder."""

    def go() -> None:
        from leanseg.data.synthetic_chest import generate_chest_dataset

        _console().print(
            f"wrote {generate_chest_dataset(out, cases, seed, shape, spacing, progress=True, nodules_per_scan=nodules_per_scan)}"
        )

    _run(go)


@data_app.command("degrade")
def data_degrade(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset folder to copy (MSD or nnU-Net v2).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the degraded MSD copy.")],
    seed: Annotated[int, typer.Option(help="Seed of the severities and artefacts.")] = 0,
    max_severity: Annotated[float, typer.Option(help="Severities are drawn from 0 (clean) to this (at most 1).")] = 1.0,
    spikes: Annotated[bool, typer.Option(help="Add k-space spikes (with probability equal to the severity).")] = True,
) -> None:
    """Write a mixed-quality copy: each case degraded by MRI artefacts (bias field, Gibbs ringing, a k-space spike,
    Rician noise) at its own seeded severity; degradation.json records them."""

    def go() -> None:
        from leanseg.data.degrade import degrade_dataset

        _console().print(f"wrote {degrade_dataset(data, out, seed, max_severity, progress=True, spikes=spikes)}")

    _run(go)


if __name__ == "__main__":
    app()
