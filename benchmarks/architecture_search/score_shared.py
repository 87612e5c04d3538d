"""How do a search's shared weights rank architectures? Each given child is scored as the search scores it
(``child_case_dice``: the shared weights as they are, the held-out cases of fold 0), on the first
``--val-cases`` cases (the children's reward) and on all 42 (the chosen child's figure), next to how often the
search sampled it and how far (in decisions) its samples stayed from it. Set beside each child's Dice when trained alone from scratch
(``child_from_scratch.py``), it says whether the reward ranks children as long training does.

    python benchmarks/architecture_search/score_shared.py --search /tmp/leanseg_bench/nas_clr/enas/search.pt \\
        --arch chosen=chosen.json --arch space_resunet --name architecture_shared_scores

``--arch NAME=FILE`` (a JSON dict of decisions) or one of the built-in names: ``space_resunet`` (the space's
residual U-Net of child_from_scratch.py), ``first_child`` (the search's first child). Writes
benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from leanseg.bench import benchmark_arguments, header_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--search", help="a search's search.pt (its shared weights and history); with --smoke, a tiny search run here")
    ap.add_argument("--arch", action="append", help="NAME=FILE, or space_resunet / first_child")
    ap.add_argument("--val-cases", type=int, default=10, help="the children's reward cases (the search's --val-cases)")
    ap.add_argument("--threads", type=int, default=2)
    benchmark_arguments(ap, "architecture_shared_scores", "/tmp/leanseg_bench/architecture_shared_scores")
    args = ap.parse_args()

    from leanseg.bench import Results, results_folder
    from leanseg.config import ExperimentConfig
    from leanseg.models.nas_space import ArchitectureSpace
    from leanseg.search.nas import read_search_state, score_children
    from leanseg.utils import set_threads

    set_threads(args.threads)
    cfg = ExperimentConfig.load(ROOT / "configs" / "hippocampus_baseline.yaml")
    data = args.data
    if args.smoke:
        data, cfg, args.search, args.val_cases = smoke_search(Path(args.work))
        args.arch = args.arch or ["space_resunet", "first_child"]
    if not (args.search and args.arch):
        ap.error("--search and at least one --arch are needed (or --smoke)")
    st = read_search_state(args.search)
    space = ArchitectureSpace.from_dict(st["meta"]["space"])
    built_in = {"space_resunet": space.residual_unet(), "first_child": st["history"][0]["arch"]}
    archs = {}
    for spec in args.arch:
        name, _, file = spec.partition("=")
        archs[name] = json.loads(Path(file).read_text()) if file else built_in[name]
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "architecture_shared_scores",
        render,
        threads=args.threads,
        seed=st["meta"]["seed"],
        split=f"fold 0 of a {cfg.data.num_folds}-fold split (split seed {cfg.data.split_seed}) held out",
        data=str(data),
        smoke=args.smoke,
        search=args.search,
        search_meta={k: v for k, v in st["meta"].items() if k != "space"},
        children=len(st["history"]),
        val_cases=args.val_cases,
    )
    results["rows"] = score_children(args.search, archs, data, cfg, args.val_cases)
    results.write()
    print(results.markdown())


def smoke_search(work: Path) -> tuple[Path, Any, str, int]:
    """A two-child random search on phantoms, for ``--smoke``: (data, config, its search.pt, reward cases)."""
    from leanseg.bench import smoke_phantoms
    from leanseg.config import ExperimentConfig
    from leanseg.search.nas import search_architecture

    data = smoke_phantoms(work)
    cfg = ExperimentConfig().with_overrides({"data.patch_size": [16, 16, 16], "model.base_features": 4, "train.batch_size": 1})
    kw = dict(controller="random", episodes=1, children=2, scored_children=1, child_iterations=1, val_cases=1, num_stages=3, seed=0)
    search_architecture(data, work / "search", base=cfg, **kw)
    return data, cfg, str(work / "search" / "search.pt"), 1


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Children as a search's shared weights score them",
        "",
        *header_markdown(r),
        f"Search: `{r['search']}` ({r['children']} children, seed {r['search_meta']['seed']}).",
        "",
        f"| child | times sampled | nearest sampled child (decisions apart) | mean apart, last episode "
        f"| Dice, first {r['val_cases']} cases (the reward) | Dice, all held-out cases |",
        "|---|---|---|---|---|---|",
        *[
            f"| {x['name']} | {x['sampled']} | {x['nearest_sampled']} | {x['apart_last_episode']:.1f} | {x['reward_dice']:.4f} "
            f"| {x['dice_all']:.4f} |"
            for x in r["rows"]
        ],
        "",
        *[f"- {x['name']}: `{json.dumps(x['arch'])}`" for x in r["rows"]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
