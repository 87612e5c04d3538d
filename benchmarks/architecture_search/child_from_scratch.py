"""Does the architecture space hold a child as good as the base residual U-Net? One child of the space,
trained alone from scratch with the base trainer's recipe, against the base U-Net's trainer validation
Dice at the same iteration count.

The child (default): the space's residual U-Net: the largest patch, every operation and U-Net skip,
every encoder stage residual, dilation 1, leaky ReLU, max pooling, no long skips; ``--arch FILE`` trains
another (a JSON dict of decisions, e.g. a search's chosen child). Data and recipe as
``benchmarks/hippocampus_baseline`` (configs/hippocampus_baseline.yaml, fold 0, seed 0), counted in
iterations (by default the base U-Net's count there, 4487 in its 15 minutes) so that the figure does not depend on the machine;
the trainer's validation Dice on the first 20 held-out cases, as in that benchmark's training table.

    python benchmarks/architecture_search/child_from_scratch.py            # alone, 2 threads

    python benchmarks/architecture_search/child_from_scratch.py --arch chosen.json --label "..." --name NAME

``--init CHECKPOINT`` starts the child from given weights instead (e.g. a search's run folder written with
``--final-iterations 0``, the shared weights): the search's final training, run by the base trainer.

Writes benchmarks/results/architecture_child_from_scratch.{json,md} (or NAME.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def base_unet_training() -> dict[str, Any]:
    """The base U-Net's training row (iterations, trainer validation Dice on 20 cases) from benchmarks/hippocampus_baseline."""
    r = json.loads((RESULTS / "hippocampus_baseline.json").read_text())
    return r["training"]["resunet"] if "training" in r else r["models"]["resunet"]["train"]  # the layout before the Results writer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--arch", help="JSON file with the child's decisions (default: the space's residual U-Net)")
    ap.add_argument("--iterations", type=int, default=None, help="default: the base U-Net's count in benchmarks/hippocampus_baseline")
    ap.add_argument("--val-cases", type=int, default=20, help="held-out cases the trainer scores (0: all 42)")
    ap.add_argument("--base-unet", action="store_true", help="train the base residual U-Net (resunet) instead of a child")
    ap.add_argument(
        "--init",
        help="start from this checkpoint instead of from scratch (e.g. the chosen child's run folder a search wrote with "
        "--final-iterations 0: its shared weights)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", help="what --arch is, for the table (e.g. 'ENAS chosen child, architecture_search_controller_lr')")
    benchmark_arguments(ap, "architecture_child_from_scratch", "/tmp/leanseg_bench/architecture_child")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder, smoke_phantoms
    from leanseg.config import ExperimentConfig
    from leanseg.data.prepare import prepare_data
    from leanseg.models.nas_space import arch_to_json, architecture_space
    from leanseg.runfolder import RunFolder
    from leanseg.training import train

    base = base_unet_training()
    data = str(smoke_phantoms(Path(args.work))) if args.smoke else args.data
    iterations = 3 if args.smoke else args.iterations or base["iterations"]
    cfg = ExperimentConfig.load(ROOT / "configs" / "hippocampus_baseline.yaml")
    if args.smoke:
        cfg = cfg.with_overrides({"data.patch_size": [16, 16, 16], "model.base_features": 4, "train.batch_size": 1})
    plan = prepare_data(Path(data), cfg).plan
    space = architecture_space(plan.median_shape, plan.target_spacing, plan.num_channels, plan.num_classes, 4, cfg.model.base_features)
    arch = arch_to_json(json.loads(Path(args.arch).read_text()) if args.arch else space.residual_unet())
    model = {} if args.base_unet else {"model.name": "nas_unet", "model.extra": {"arch": arch, "space": space.to_dict()}}
    cfg = cfg.with_overrides(
        {
            **model,
            "train.budget_minutes": None,
            "train.iterations": iterations,
            "train.val_every": 10**6,
            "train.val_max_cases": args.val_cases or None,
            "train.num_threads": args.threads,
            "train.init_checkpoint": str(Path(args.init).resolve()) if args.init else None,
        }
    )
    t0 = time.time()
    r = train(data, Path(args.work) / "run", cfg, fold=0, resume=False)
    t = cfg.train
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "architecture_child_from_scratch",
        render,
        threads=args.threads,
        seed=cfg.train.seed,
        split=f"fold 0 of a {cfg.data.num_folds}-fold split (split seed {cfg.data.split_seed}) held out; trainer validation on "
        f"{'its first ' + str(args.val_cases) if args.val_cases else 'all its'} cases (preprocessed grid)",
        data=data,
        smoke=args.smoke,
        recipe=f"configs/hippocampus_baseline.yaml ({t.optimizer.upper()} lr {t.lr}, momentum {t.momentum}, {t.schedule}, "
        f"batch {t.batch_size}, bf16 {t.bf16})",
        arch=None if args.base_unet else arch,
        init=args.init,
        default_arch=not args.arch,
        label=args.label or label(args),
        val_cases=RunFolder(r.run_dir).summary()["val_cases"],
        iterations=r.iterations,
        train_minutes=r.seconds / 60,
        wall_minutes=(time.time() - t0) / 60,
        val_dice=r.val["val_dice"],
        val_dice_per_class={k: v for k, v in r.val.items() if k != "val_dice"},
        base_unet={"iterations": base["iterations"], "train_minutes": base["train_seconds"] / 60, "val_dice": base["val_dice"]},
    )
    results.write()
    print(results.markdown())


def label(args: argparse.Namespace) -> str:
    if args.base_unet:
        return "base residual U-Net (resunet)"
    return f"the child in {Path(args.arch).name}" if args.arch else "the space's residual U-Net"


def render(r: dict[str, Any]) -> str:
    which = r.get("label", "the space's residual U-Net" if r["default_arch"] else "a given child")
    n = r.get("val_cases", 20)
    b = r["base_unet"]
    rows = [f"| {which} | {r['iterations']} | {r['train_minutes']:.1f} | **{r['val_dice']:.4f}** |"]
    if n == 20:  # the base U-Net's row in benchmarks/hippocampus_baseline is scored on the same 20 cases
        rows.append(
            f"| base residual U-Net (resunet, benchmarks/hippocampus_baseline, its machine) | {b['iterations']} | "
            f"{b['train_minutes']:.1f} | {b['val_dice']:.4f} |"
        )
    return "\n".join(
        [
            f"# {'A child of the architecture space' if r['arch'] else 'The base residual U-Net'} trained alone "
            + (f"from `{r['init']}`" if r.get("init") else "from scratch"),
            "",
            *header_markdown(r),
            f"Recipe: {r['recipe']}.",
            "",
            f"| model | iterations | training minutes | trainer's validation Dice ({n} cases) |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Architecture: `{json.dumps(r['arch'])}`" if r["arch"] else "",
            "",
        ]
    )


if __name__ == "__main__":
    main()
