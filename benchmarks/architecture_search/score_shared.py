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
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    ap.add_argument("--search", required=True, help="a search's search.pt (its shared weights and history)")
    ap.add_argument("--arch", action="append", required=True, help="NAME=FILE, or space_resunet / first_child")
    ap.add_argument("--val-cases", type=int, default=10, help="the children's reward cases (the search's --val-cases)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="architecture_shared_scores", help="results file stem in benchmarks/results")
    args = ap.parse_args()

    import numpy as np

    from leanseg.bench import machine_info, write_results
    from leanseg.config import ExperimentConfig
    from leanseg.data.prepare import make_splits, prepare_data
    from leanseg.models.nas_space import ArchitectureSpace, arch_to_json
    from leanseg.models.nas_unet import SuperNet
    from leanseg.search.nas import child_case_dice, read_search_state
    from leanseg.training.validation import mean_dice
    from leanseg.utils import set_threads

    sys.path.insert(0, str(Path(__file__).parent))
    from child_from_scratch import residual_unet_of_the_space

    set_threads(args.threads)
    st = read_search_state(args.search)
    space = ArchitectureSpace.from_dict(st["meta"]["space"])
    net = SuperNet(space)
    net.load_state_dict(st["supernet"])
    cfg = ExperimentConfig.load(ROOT / "configs" / "hippocampus_baseline.yaml")
    prep = prepare_data(Path(args.data), cfg)
    split = make_splits([c.case_id for c in prep.dataset.cases], cfg.data.num_folds, cfg.data.split_seed)[0]
    sampled = [space.normalise(h["arch"]) for h in st["history"]]
    built_in = {"space_resunet": residual_unet_of_the_space(space), "first_child": sampled[0]}
    last_episode = [a for a, h in zip(sampled, st["history"]) if h["episode"] == st["history"][-1]["episode"]]
    rows = []
    for spec in args.arch:
        name, _, file = spec.partition("=")
        arch = space.normalise(json.loads(Path(file).read_text()) if file else built_in[name])
        per_case = child_case_dice(net, arch, prep.cache_dir, split["val"], prep.plan, cfg)  # the reward cases come first
        rows.append(
            {
                "name": name,
                "sampled": sum(a == arch for a in sampled),
                "nearest_sampled": min(decisions_apart(a, arch) for a in sampled),
                "apart_last_episode": float(np.mean([decisions_apart(a, arch) for a in last_episode])),
                "reward_dice": mean_dice(per_case[: args.val_cases]),
                "dice_all": mean_dice(per_case),
                "arch": arch_to_json(arch),
            }
        )
    out = {
        "benchmark": "architecture_shared_scores",
        "machine": machine_info(args.threads),
        "search": args.search,
        "search_meta": {k: v for k, v in st["meta"].items() if k != "space"},
        "children": len(st["history"]),
        "data": f"Task04_Hippocampus, fold 0 of a {cfg.data.num_folds}-fold split (split seed {cfg.data.split_seed}) held out",
        "val_cases": args.val_cases,
        "rows": rows,
    }
    write_results(RESULTS / f"{args.name}.json", out, render(out))
    print(render(out))


def decisions_apart(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(a[k] != b[k] for k in a)


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Children as a search's shared weights score them",
        "",
        f"Machine: {m['cpu']}, {m['threads']} threads; torch {m['torch']}; commit {m['leanseg_commit']}; {m['date']}.",
        f"Search: `{r['search']}` ({r['children']} children, seed {r['search_meta']['seed']}). Data: {r['data']}.",
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
