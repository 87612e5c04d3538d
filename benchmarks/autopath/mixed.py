"""AutoPath where images differ: the per-image oracle's headroom, and policies against the best fixed path (issue 26).

Per dataset (``--datasets``; ``hippocampus_mixed`` is written by ``leanseg data degrade`` when missing):

1. trains a 3D DeepLabV3+ (configs/autopath_hippocampus.yaml: ResNet-18, linear stochastic depth 0.3, bf16 where native,
   ``--minutes``, or ``--iterations`` for a run that load cannot change) on folds 1-4 of the seeded 5-fold split,
   fold 0 held out, 2 threads; the degraded copies are written as ``DEGRADED`` says;
2. evaluates **every** keep mask (2^8 = 256) on every held-out case, and on ``--train-cases`` training cases:
   the (masks x cases) Dice table. From it, per number of blocks used: the full network, DropFirstN, DropLastN,
   DropRandomN (its exact expectation: the mean over all masks of that level), the best fixed mask, and the
   per-image oracle (each image's best mask of that level), and the oracle cross-fitted between foreground classes
   (chosen on one, scored on another: what of the headroom is the image's, not noise). The best fixed mask is chosen twice: on the
   held-out cases themselves (the hardest bar) and on the training cases (what a user could deploy);
3. trains one policy per ``--policies`` entry (``variant:tau``, variants below) on the training folds and scores
   its greedy paths on the held-out fold against, at the same mean blocks used: the best fixed paths (two
   fixed masks in set shares where the mean falls between levels), DropLastN and DropRandomN on each image's
   own count, and the oracle;
4. times whole cases with the bf16 back-end (float32 where the CPU has no native bf16) (full network and each policy, interleaved, median of 3).

Dice: pseudo-Dice on the preprocessed grid, mean of the foreground classes per case, as benchmarks/autopath/run.py.

    python benchmarks/autopath/mixed.py [--datasets hippocampus_mixed hippocampus] [--policies dice_stem:20 ...] [--reuse]

Writes benchmarks/results/autopath_mixed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.bench import benchmark_arguments, header_markdown
from leanseg.utils import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "autopath_hippocampus.yaml"
SHARED = ROOT.parent / "shared" / "data"
BRATS_FLAIR = SHARED / "BraTS2013_subset" / "imagesTr" / "brats2013_pat0001_0000.nii.gz"
# bf16 autocast where the CPU has it natively; float32 where it would be emulated (20x slower on an AVX2-only CPU)
BACKEND = "bf16" if cpu_has_fast_bf16() else "eager"
BF16 = BACKEND == "bf16"
# None: a copy of hippocampus degraded by leanseg data degrade (seed 0) as DEGRADED says
DATASETS = {"hippocampus_mixed": None, "hippocampus_nospike": None, "hippocampus": SHARED / "Task04_Hippocampus"}
DEGRADED = {  # severity 1 with spikes cost the full network 30 points (first run); 0.4 still has a spike on 30 % of cases
    "hippocampus_mixed": {"max_severity": 0.4, "spikes": True},
    "hippocampus_nospike": {"max_severity": 1.0, "spikes": False},  # the same draws, the spikes left out
    "smoke": {"max_severity": 1.0, "spikes": True},
}
DATA_TEXT = {
    "hippocampus_mixed": "a mixed-quality copy (severity 0-0.4, k-space spikes)",
    "hippocampus_nospike": "a mixed-quality copy (severity 0-1, no k-space spikes)",
    "hippocampus": "the original",
    "smoke": "phantoms degraded at severity 0-1 (smoke)",
}
VARIANTS = {  # policy variants: autopath overrides on top of the config's (tau comes with each --policies entry)
    "voxel": {},  # the paper's voxel reward on the 32^3 image, the curriculum from the last block
    "dice": {"autopath.reward": "dice"},
    "dice_stem": {"autopath.reward": "dice", "autopath.policy_input": "stem"},
    "dice_stem_norm": {"autopath.reward": "dice", "autopath.policy_input": "stem", "autopath.normalise": True},
    "dice_stem_norm_flat": {
        "autopath.reward": "dice",
        "autopath.policy_input": "stem",
        "autopath.normalise": True,
        "autopath.stage_steps": 0,  # no curriculum: every block decided from the first update
    },
}


def main() -> None:
    args = arguments().parse_args()
    from leanseg.bench import Results, results_folder
    from leanseg.utils import set_threads

    set_threads(args.threads)
    results = Results(
        results_folder(args, RESULTS),
        args.name,
        "autopath_mixed",
        render,
        plot,
        threads=args.threads,
        seed=0,
        split="fold 0 of a 5-fold split (split seed 0) held out; policies and the deployable fixed path chosen on folds 1-4",
        data="",
        smoke=args.smoke,
        precision=f"{BACKEND} (mask table, policies and timing; training: bf16 autocast where the CPU has it natively)",
    )
    results["datasets"] = {}
    runs = [(key, b) for key in (["smoke"] if args.smoke else args.datasets) for b in args.backbones]
    names = [key if b == "r18" else f"{key}_{b}" for key, b in runs]  # ResNet-18 keeps the plain key
    for other in (k for k in results.earlier.get("datasets", {}) if args.keep_others and k not in names):
        results.keep("datasets", other)
    results["data"] = data_line([*results["datasets"], *names])
    for (key, backbone), name in zip(runs, names):
        print(f"== {name}", flush=True)
        results["datasets"][name] = run_dataset(key, backbone, args)
        results.write()
    results.write(with_plot=True)
    print(results.markdown())


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--minutes", type=float, default=15.0, help="segmentation model's training budget")
    ap.add_argument("--iterations", type=int, default=None, help="train this many iterations instead of --minutes (load-independent)")
    ap.add_argument(
        "--policies",
        nargs="+",
        default=["voxel:500", "dice:20", "dice_stem:20", "dice_stem_norm:20", "dice_stem_norm_flat:20"],
        help="variant:tau entries; variants: " + ", ".join(VARIANTS),
    )
    ap.add_argument("--policy-minutes", type=float, default=4.0)
    ap.add_argument("--train-cases", type=int, default=42, help="training cases in the table that picks the deployable fixed path")
    ap.add_argument("--backbones", nargs="+", default=["r18"], choices=["r18", "r50"], help="DeepLabV3+ backbones (8 or 16 gated blocks)")
    ap.add_argument("--per-level", type=int, default=24, help="above 12 blocks: sampled masks per blocks-used level in the table")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep the models, tables and policies found in --work")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--volume-repeats", type=int, default=2, help="timed runs per path on the BraTS-sized volume")
    ap.add_argument(
        "--keep-others", action="store_true", help="keep the results file's datasets this call does not run (stamped with their commit)"
    )
    benchmark_arguments(ap, "autopath_mixed", "/tmp/leanseg_bench/autopath_mixed")
    return ap


def dataset_folder(key: str, args: argparse.Namespace) -> Path:
    from leanseg.bench import smoke_phantoms
    from leanseg.data.degrade import degrade_dataset

    work = Path(args.work)
    if DATASETS.get(key) is not None:
        return Path(DATASETS[key])
    out = work / "data" / folder_name(key)
    if not (out / "dataset.json").is_file():  # the smoke run degrades phantoms
        source = smoke_phantoms(work) if key == "smoke" else DATASETS["hippocampus"]
        degrade_dataset(source, out, seed=0, progress=key != "smoke", **DEGRADED[key])
    return out


def data_line(names: list[str]) -> str:
    return "MSD hippocampus, 208 cases: " + ", ".join(dict.fromkeys(DATA_TEXT[base_key(k)] for k in names))


def base_key(name: str) -> str:
    """The dataset key of a results section ("hippocampus_mixed_r50" -> "hippocampus_mixed")."""
    return name.removesuffix("_r50")


def folder_name(key: str) -> str:
    """A degraded dataset's folder (and its run's) names its maximum severity, so runs at two severities never mix."""
    return key if DATASETS.get(key) is not None else f"{key}_s{DEGRADED[key]['max_severity']:g}"


def run_dataset(key: str, backbone: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) the model, build the mask tables, and score the policies on one dataset."""
    from leanseg.config import ExperimentConfig
    from leanseg.runfolder import RunFolder
    from leanseg.training import train

    data = dataset_folder(key, args)
    run = Path(args.work) / folder_name(key) / f"deeplab_{backbone}"
    budget: dict[str, Any] = {"train.budget_minutes": args.minutes}
    if args.smoke or args.iterations:
        budget = {"train.iterations": 5 if args.smoke else args.iterations, "train.budget_minutes": None}
    cfg = ExperimentConfig.load(CONFIG).with_overrides({"model.name": f"deeplab3d_{backbone}", "train.num_threads": args.threads, **budget})
    if not (args.reuse and (run / "checkpoint_final.pt").is_file()):
        train(str(data), run, cfg, fold=0, show_progress=not args.smoke, resume=False)
    out: dict[str, Any] = {"data": str(data), "backbone": backbone, "model": RunFolder(run).summary()}
    if DATASETS.get(key) is None:
        out["degradation"] = DEGRADED[key]
    tables = mask_tables(run, data, args)
    out["severity"] = severities(data, tables["val_cases"])
    out["levels"] = level_rows(tables)
    if out["severity"]:
        by_severity(out["levels"], tables, severities(data, tables["train_cases"]), out["severity"])
        out["spike_split"] = spike_split(out["levels"], tables, data)
    out["policies"] = [score_policy(spec, run, data, tables, args) for spec in (args.policies[-1:] if args.smoke else args.policies)]
    if not (args.skip_timing or args.smoke):
        sys.path.insert(0, str(ROOT))
        from benchmarks.autopath.run import time_cases

        out["timing"] = time_cases(run, data, [p["path"] for p in out["policies"]], args.threads, backends=(BACKEND,))
        out["volume_timing"] = time_paths_on_volume(run, out["policies"], args.threads, args.volume_repeats)
    return out


def time_paths_on_volume(run: Path, policies: list[dict[str, Any]], threads: int, repeats: int) -> dict[str, Any]:
    """bf16 network time (sliding windows over a BraTS FLAIR volume, preprocessed by the run's plan) of every path the
    policies chose, median of ``repeats``; per policy, the mean over held-out images of its images' path times.
    Where the network dominates a case's time: what dropping blocks saves on large inputs."""
    import statistics
    import time

    import torch

    from leanseg.data.io import read_image
    from leanseg.inference import Predictor

    pred = Predictor.from_run(run, backend=BACKEND, num_threads=threads)
    x = pred.preprocessor(read_image([BRATS_FLAIR]))["image"].as_tensor()
    n = pred.model.num_gated_blocks
    paths = sorted({"1" * n, *(k for p in policies for k in p["paths"])}, reverse=True)
    seconds = {}
    for path in paths:
        keep = torch.tensor([c == "1" for c in path])
        runs = []
        for _ in range(repeats + 1):  # the first run warms up
            t0 = time.perf_counter()
            pred.predict_preprocessed(x, keep)
            runs.append(time.perf_counter() - t0)
        seconds[path] = statistics.median(runs[1:])
        print(f"{path}: {seconds[path]:.2f} s", flush=True)
    per_policy = {p["spec"]: sum(c * seconds[k] for k, c in p["paths"].items()) / sum(p["paths"].values()) for p in policies}
    return {
        "volume": BRATS_FLAIR.name,
        "shape": list(x.shape[1:]),
        "repeats": repeats,
        "path_seconds": seconds,
        "policy_seconds": per_policy,
        "backend": BACKEND,
    }


def mask_tables(run: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every keep mask's Dice on every held-out case and on ``--train-cases`` training cases (kept with ``--reuse``).
    Above 12 blocks the masks are :func:`level_masks`'s sample and the backward-elimination path chosen on the
    training cases (the best fixed path a search finds)."""
    import torch

    from leanseg.dynamic.evaluate import backward_elimination, load_split_cases, mask_table
    from leanseg.dynamic.strategies import level_masks

    path = run / "mask_tables.npz"
    out: dict[str, Any] = {}
    if args.reuse and path.is_file():
        z = np.load(path)
        out = {k: z[k].tolist() if k.endswith("_cases") else z[k] for k in z.files}
    if "val_by_class" in out:
        return out
    model, plan, _, cases = load_split_cases(run, data, "train", "val")
    classes = [k for k in plan.labels if k != 0]
    train_cases = cases["train"][: 4 if args.smoke else args.train_cases]
    n = model.num_gated_blocks
    if "keeps" in out:
        keeps = torch.from_numpy(out["keeps"]).bool()
    else:
        keeps = level_masks(n, args.per_level)
        if len(keeps) < 2**n:
            keeps = torch.unique(torch.cat([keeps, backward_elimination(model, train_cases, classes, BF16)]), dim=0)
    if "val" not in out:
        out = {
            "keeps": keeps.int().numpy(),
            "train": mask_table(model, train_cases, keeps, classes, BF16),
            "val_cases": [c[0] for c in cases["val"]],
            "train_cases": [c[0] for c in train_cases],
        }
    # per class (the cross-fitted oracle); its mean over classes is the case Dice table (tables from before it: kept)
    out["val_by_class"] = mask_table(model, cases["val"], keeps, classes, BF16, per_class=True)
    out.setdefault("val", np.nanmean(out["val_by_class"], axis=2))
    np.savez(path, **out)
    return out


def severities(data: Path, case_ids: list[str]) -> dict[str, float] | None:
    """Each held-out case's degradation severity, where the dataset records them (``degradation.json``)."""
    f = data / "degradation.json"
    if not f.is_file():
        return None
    rec = json.loads(f.read_text())
    return {c: rec[c]["severity"] for c in case_ids if c in rec}


def level_rows(tables: dict[str, Any]) -> list[dict[str, Any]]:
    """Per number of blocks used: the heuristics, the best fixed mask (chosen on held-out and on training cases), the oracle."""
    from leanseg.dynamic.headroom import crossfit_by_level, oracle_by_level
    from leanseg.dynamic.strategies import path_string

    keeps, val = tables["keeps"], tables["val"]
    used = keeps.sum(1)
    n = keeps.shape[1]
    oracle = oracle_by_level(val, used)
    crossfit = crossfit_by_level(tables["val_by_class"], used)
    picked = chosen_on_train(tables)
    rows = []
    for k in range(n + 1):
        at = np.flatnonzero(used == k)
        first, last = mask_row(keeps, [0] * (n - k) + [1] * k), mask_row(keeps, [1] * k + [0] * (n - k))
        rows.append(
            {
                "blocks_used": k,
                "masks": len(at),
                "DropFirstN": float(val[first].mean()),
                "DropLastN": float(val[last].mean()),
                "DropRandomN": float(val[at].mean()),
                "fixed": oracle[float(k)]["fixed"],
                "fixed_mask": path_string(keeps[at[int(np.argmax(val[at].mean(1)))]]),
                "fixed_train": float(val[picked[k]].mean()),
                "fixed_train_mask": path_string(keeps[picked[k]]),
                "oracle": oracle[float(k)]["oracle"],
                "headroom": oracle[float(k)]["headroom"],
                "crossfit_gain": crossfit[float(k)]["gain"] if crossfit else float("nan"),
            }
        )
    return rows


def chosen_on_train(tables: dict[str, Any]) -> np.ndarray:
    """Per number of blocks used (0..N), the row of the mask with the best mean Dice on the training cases."""
    used, tr = tables["keeps"].sum(1), tables["train"]
    return np.array([np.flatnonzero(used == k)[int(np.argmax(tr[used == k].mean(1)))] for k in range(tables["keeps"].shape[1] + 1)])


def by_severity(levels: list[dict[str, Any]], tables: dict[str, Any], train_sev: dict[str, float], val_sev: dict[str, float]) -> None:
    """A per-image choice that needs no learning, where the degradation is known: at each level, the best mask for each
    third of the training cases' severities (chosen on training cases), applied to the held-out cases by their
    severity. What of the oracle's headroom image quality alone explains; added to ``levels`` as ``by_severity``."""
    edges = np.quantile([train_sev[c] for c in tables["train_cases"]], [1 / 3, 2 / 3])
    tbin = np.digitize([train_sev[c] for c in tables["train_cases"]], edges)
    vbin = np.digitize([val_sev[c] for c in tables["val_cases"]], edges)
    by_group(levels, tables, tbin, vbin, "by_severity")


def by_group(levels: list[dict[str, Any]], tables: dict[str, Any], tgroup: np.ndarray, vgroup: np.ndarray, name: str) -> None:
    """At each level, the best mask of each group of training cases, applied to the held-out cases of that group;
    added to ``levels`` as ``name``. A group with no training case falls back to all of them."""
    keeps, val, tr = tables["keeps"], tables["val"], tables["train"]
    used = keeps.sum(1)
    for row in levels:
        at = np.flatnonzero(used == row["blocks_used"])
        best = {
            g: at[int(np.argmax(tr[np.ix_(at, tgroup == g if (tgroup == g).any() else tgroup == tgroup)].mean(1)))] for g in set(vgroup)
        }
        row[name] = float(np.mean([val[best[g], j] for j, g in enumerate(vgroup)]))


def spikes(data: Path, case_ids: list[str]) -> np.ndarray | None:
    """Whether each case got a k-space spike (``degradation.json``); None where no case did."""
    f = data / "degradation.json"
    rec = json.loads(f.read_text()) if f.is_file() else {}
    out = np.array(["spike_at" in rec.get(c, {}) for c in case_ids])
    return out if out.any() else None


def spike_split(levels: list[dict[str, Any]], tables: dict[str, Any], data: Path) -> dict[str, Any] | None:
    """Where some cases got a k-space spike: the full network, the best fixed mask and the oracle on the spiked and
    the other held-out cases apart (per level), and the rule that knows the spike (``by_spike`` in ``levels``)."""
    vs, ts = spikes(data, tables["val_cases"]), spikes(data, tables["train_cases"])
    if vs is None or ts is None:
        return None
    from leanseg.dynamic.headroom import oracle_by_level

    used = tables["keeps"].sum(1)
    by_group(levels, tables, ts.astype(int), vs.astype(int), "by_spike")
    out = {}
    for name, cases in (("spiked", vs), ("not spiked", ~vs)):
        o = oracle_by_level(tables["val"][:, cases], used)
        out[name] = {"cases": int(cases.sum()), "levels": {int(k): {"fixed": v["fixed"], "oracle": v["oracle"]} for k, v in o.items()}}
    return out


def mask_row(keeps: np.ndarray, keep: list[int]) -> int:
    return int(np.flatnonzero((keeps == np.asarray(keep)).all(1))[0])


def score_policy(spec: str, run: Path, data: Path, tables: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train (or read) one policy and set its held-out paths beside every baseline at its own blocks."""
    from leanseg.dynamic.evaluate import blocks_used_histogram
    from leanseg.dynamic.headroom import mixed_fixed, oracle_at
    from leanseg.dynamic.run import train_policy_for_run

    variant, tau = spec.split(":")
    pfile = run / "policies" / f"{variant}_tau{float(tau):g}.json"
    if args.reuse and pfile.is_file():
        s = json.loads(pfile.read_text())
    else:
        smoke = {"autopath.steps": 3, "autopath.stage_steps": 1, "autopath.budget_minutes": None} if args.smoke else {}
        ov = {**VARIANTS[variant], "autopath.tau": float(tau), "autopath.budget_minutes": args.policy_minutes, **smoke}
        s = train_policy_for_run(run, data, ov, out=pfile.with_suffix(".pt"), backend=BACKEND)
    keeps, val = tables["keeps"], tables["val"]
    used = keeps.sum(1)
    n = keeps.shape[1]
    picked = chosen_on_train(tables)
    cases = tables["val_cases"]
    by_case = {r["case"]: r for r in s["per_case"]}
    counts = np.array([by_case[c]["blocks_used"] for c in cases])
    last = [mask_row(keeps, [1] * k + [0] * (n - k)) for k in counts]
    mean_used = float(counts.mean())
    dice = float(np.mean([by_case[c]["dice"] for c in cases]))  # its paths need not be in a sampled table
    fixed = mixed_fixed(val, used, mean_used)
    oracle = oracle_at(val, used, mean_used)
    return {
        "spec": spec,
        "variant": variant,
        "tau": float(tau),
        "steps": s["steps"],
        "train_seconds": s["train_seconds"],
        "path": str(pfile.with_suffix(".pt")),
        "dice": dice,
        "mean_blocks_used": mean_used,
        "fixed": fixed,
        "fixed_train": mixed_fixed(val[picked], used[picked], mean_used),
        "DropLastN": float(val[last, np.arange(len(cases))].mean()),
        "DropRandomN": float(np.mean([val[used == k, j].mean() for j, k in enumerate(counts)])),
        "oracle": oracle,
        "headroom_reached": (dice - fixed) / (oracle - fixed) if oracle - fixed > 1e-9 else float("nan"),
        "blocks_used_histogram": blocks_used_histogram(s["per_case"], n),
        "paths": dict(Counter(by_case[c]["path"] for c in cases).most_common()),
        "blocks_used": {c: int(k) for c, k in zip(cases, counts)},
    }


def render(r: dict) -> str:
    lines = [
        "# AutoPath where images differ: per-image oracle, best fixed path, policies (DeepLabV3+)",
        "",
        *header_markdown(r),
        f"Precision: {r['precision']}.",
        "Dice: mean over held-out cases of the mean over foreground classes, preprocessed grid. 'fixed (held-out)': the best "
        "single mask chosen on the held-out cases themselves (the hardest bar); 'fixed (train)': chosen on training cases.",
        "",
    ]
    for key, d in r["datasets"].items():
        lines += dataset_markdown(key, d)
    lines += [f"![headroom, policies against the fixed paths, blocks used per image]({r.get('name', 'autopath_mixed')}.png)", ""]
    return "\n".join(lines)


def dataset_markdown(key: str, d: dict) -> list[str]:
    m = d["model"]
    full = d["levels"][-1]["fixed"]
    n = len(d["levels"]) - 1
    masks = sum(v["masks"] for v in d["levels"])
    sampled = (
        []
        if masks == 2**n
        else [
            f"{masks} of the {2**n} masks are scored (per level DropFirstN's, DropLastN's, {masks // (n + 1)} or so drawn at random, and "
            "the backward-elimination path chosen on training cases): the fixed masks, DropRandomN and the oracle are estimates "
            "from that sample, the fixed and the oracle lower bounds.",
            "",
        ]
    )
    lines = [
        f"## {key}",
        "",
        f"Model: DeepLabV3+ ResNet-{d.get('backbone', 'r18')[1:]} ({n} gated blocks), {m['iterations']} iterations in "
        f"{m['train_seconds'] / 60:.1f} min on {m['train_cases']} cases; full network {full:.4f} on {m['val_cases']} held-out cases."
        + (
            f" Degradation: severities 0 to {d['degradation']['max_severity']:g}, k-space spikes {'on' if d['degradation']['spikes'] else 'off'}."
            if "degradation" in d
            else ""
        ),
        "",
        *sampled,
        "### Headroom: every mask on every held-out image, by blocks used",
        "",
        "| blocks used | masks | DropFirstN | DropLastN | DropRandomN (expected) | fixed (train) | fixed (held-out) | by severity | by spike | oracle | headroom | cross-fitted gain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in d["levels"]:
        sev, spk = (f"{v[k]:.4f}" if k in v else "-" for k in ("by_severity", "by_spike"))
        lines.append(
            f"| {v['blocks_used']} | {v['masks']} | {v['DropFirstN']:.4f} | {v['DropLastN']:.4f} | {v['DropRandomN']:.4f} | "
            f"{v['fixed_train']:.4f} `{v['fixed_train_mask']}` | {v['fixed']:.4f} `{v['fixed_mask']}` | {sev} | {spk} | {v['oracle']:.4f} | "
            f"{100 * v['headroom']:+.2f} pt | {100 * v['crossfit_gain']:+.2f} pt |"
        )
    lines += [
        "",
        "'cross-fitted gain': each image's mask chosen on one foreground class's Dice and scored on another's, against "
        "the fixed mask chosen and scored the same way (leanseg.dynamic.headroom.crossfit_by_level): the part of the "
        "headroom that is a property of the image; near zero, the headroom is selection noise no policy can learn.",
    ]
    if "by_severity" in d["levels"][0]:
        lines += [
            "",
            "'by severity': the best mask of the level for each third of the training cases' degradation severity, chosen on "
            "training cases and applied to each held-out case by its (known) severity: a per-image rule needing no learning.",
        ]
    lines += spike_markdown(d)
    lines += [
        "",
        "### Policies at their own mean blocks used",
        "",
        "| policy (variant:tau) | blocks used (mean) | distinct lengths | AutoPath | fixed (train) | fixed (held-out) | DropLastN | "
        "DropRandomN | oracle | vs fixed (held-out) | share of headroom | vs full |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in d["policies"]:
        lengths = sum(1 for c in p["blocks_used_histogram"] if c)
        lines.append(
            f"| {p['spec']} | {p['mean_blocks_used']:.2f} | {lengths} | **{p['dice']:.4f}** | {p['fixed_train']:.4f} | {p['fixed']:.4f} | "
            f"{p['DropLastN']:.4f} | {p['DropRandomN']:.4f} | {p['oracle']:.4f} | {100 * (p['dice'] - p['fixed']):+.2f} pt | "
            f"{p['headroom_reached']:.0%} | {100 * (p['dice'] - full):+.2f} pt |"
        )
    lines += ["", "Paths (1 = kept, block 1 first: images) and training:", ""]
    for p in d["policies"]:
        lines.append(
            f"- {p['spec']}: {', '.join(f'`{k}`: {v}' for k, v in p['paths'].items())}; {p['steps']} updates in {p['train_seconds'] / 60:.1f} min."
        )
    if d.get("severity"):
        lines += ["", severity_line(d)]
    if d.get("timing"):
        backend, t = next((k, v) for k, v in d["timing"].items() if k != "cases")
        lines += ["", f"Wall time per case, {backend}, {d['timing']['cases']} cases (median of 3): full {t['full']['mean_s']:.4f} s"]
        lines[-1] += (
            "".join(f"; {k} {v['mean_s']:.4f} s ({v['mean_s'] / t['full']['mean_s']:.2f}x)" for k, v in t.items() if k != "full") + "."
        )
    return lines + volume_markdown(d) + [""]


def volume_markdown(d: dict) -> list[str]:
    """bf16 network time of the policies' paths on the BraTS-sized volume, against the full network."""
    v = d.get("volume_timing")
    if not v:
        return []
    full = v["path_seconds"]["1" * (len(d["levels"]) - 1)]
    cells = "".join(f"; {k} {s:.2f} s ({s / full:.2f}x)" for k, s in v["policy_seconds"].items())
    return [
        "",
        f"{v.get('backend', 'bf16')} network time on a BraTS FLAIR volume ({v['volume']}, {'x'.join(map(str, v['shape']))} after the run's plan; "
        f"median of {v['repeats']} after a warm-up): full {full:.2f} s{cells}.",
    ]


def spike_markdown(d: dict) -> list[str]:
    """The spiked and the other held-out cases apart: full network, best fixed mask and oracle per level."""
    split = d.get("spike_split")
    if not split:
        return []
    lines = [
        "",
        "'by spike': the best mask of the level for the training cases with and without a k-space spike, applied to each held-out "
        "case by whether it has one. The two groups apart (mean Dice; fixed and oracle chosen on the group's held-out cases):",
        "",
        "| blocks used | " + " | ".join(f"{g} ({v['cases']}): fixed | oracle" for g, v in split.items()) + " |",
        "|---|" + "---|---|" * len(split),
    ]
    for k in sorted(next(iter(split.values()))["levels"], key=int):
        cells = " | ".join(f"{v['levels'][k]['fixed']:.4f} | {v['levels'][k]['oracle']:.4f}" for v in split.values())
        lines.append(f"| {k} | {cells} |")
    return lines


def severity_line(d: dict) -> str:
    """How each policy's blocks used follow the images' degradation severity (Spearman's rho)."""
    from scipy.stats import spearmanr

    sev = d["severity"]
    parts = []
    for p in d["policies"]:
        cases = [c for c in p["blocks_used"] if c in sev]
        x, y = [sev[c] for c in cases], [p["blocks_used"][c] for c in cases]
        parts.append(f"{p['spec']} rho {spearmanr(x, y).statistic:+.2f}" if len(set(y)) > 1 else f"{p['spec']}: one length for every image")
    return "Blocks used against the held-out images' severity (Spearman): " + "; ".join(parts) + "."


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(r["datasets"].items())
    fig, axes = plt.subplots(len(sets), 3, figsize=(17, 4 * len(sets)), squeeze=False)
    specs = dict.fromkeys(p["spec"] for _, d in sets for p in d["policies"])
    colour = {s: f"C{i}" for i, s in enumerate(specs)}  # one colour per policy in every panel and dataset
    for (key, d), (a, b, c) in zip(sets, axes):
        ks = [v["blocks_used"] for v in d["levels"]]
        for name, style in (("oracle", "k-"), ("fixed", "b-"), ("fixed_train", "b:"), ("DropLastN", "g^-"), ("DropRandomN", "mo--")):
            a.plot(ks, [v[name] for v in d["levels"]], style, label=name)
        for p in d["policies"]:
            a.plot(p["mean_blocks_used"], p["dice"], "*", color=colour[p["spec"]], ms=12, label=p["spec"])
        a.set(xlabel="blocks used (mean)", ylabel="mean Dice", title=f"{key}: oracle, fixed paths, policies")
        a.set_ylim(max(0.0, min(v["DropLastN"] for v in d["levels"][2:]) - 0.05), None)
        a.legend(fontsize=7)
        w = 0.8 / max(len(d["policies"]), 1)
        for i, p in enumerate(d["policies"]):
            hist = p["blocks_used_histogram"]
            b.bar(np.arange(len(hist)) + i * w, hist, width=w, color=colour[p["spec"]], label=p["spec"])
        b.set(xlabel="blocks used", ylabel="held-out images", title=f"{key}: blocks used per image")
        b.legend(fontsize=7)
        volume_plot(c, key, d, colour)
        for ax in (a, b, c):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def volume_plot(ax: Any, key: str, d: dict, colour: dict[str, str]) -> None:
    """Dice against bf16 network time on the BraTS-sized volume: the full network and each policy."""
    v = d.get("volume_timing")
    if not v:
        ax.set_axis_off()
        return
    ax.plot(v["path_seconds"]["1" * (len(d["levels"]) - 1)], d["levels"][-1]["fixed"], "ks", ms=9, label="full network")
    for p in d["policies"]:
        ax.plot(v["policy_seconds"][p["spec"]], p["dice"], "*", color=colour[p["spec"]], ms=12, label=p["spec"])
    ax.set(xlabel=f"{v.get('backend', 'bf16')} seconds per BraTS-sized volume", ylabel="mean Dice", title=f"{key}: Dice against wall time")
    ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
