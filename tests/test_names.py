"""Case ids name files, so a hostile one (``..``, an absolute path, a separator) must never write outside the folders
a user named. ``test_every_file_name_built_from_a_case_id_is_probed`` walks ``src/`` so that a new place that names a
file after a case id cannot skip these probes."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leanseg.data.datasets import Case, load_dataset
from leanseg.errors import LeansegError

SRC = Path(__file__).resolve().parents[1] / "src" / "leanseg"
ABSOLUTE = "{tmp}/outside/escape_probe_evil"  # an absolute id; under the test's own folder, so a failing probe writes nothing elsewhere
HOSTILE = ["../../../escape_probe_evil", ABSOLUTE, "sub/escape_probe_evil", "..", "-rf", ".hidden", "a\\b", "", "x" * 201]


@pytest.mark.parametrize("case_id", ["hippocampus_001", "BraTS2021_00000", "case 1", "a.b-c+d", "_x", "0"])
def test_ordinary_case_ids_are_safe(case_id: str) -> None:
    from leanseg.names import check_case_id, is_safe_case_id

    assert is_safe_case_id(case_id) and check_case_id(case_id, "dataset.json") == case_id


@pytest.mark.parametrize("case_id", [*HOSTILE, "trailing ", "nul\0", "tab\t", 7, None])
def test_hostile_case_ids_are_refused_naming_the_id_and_the_file(case_id: object) -> None:
    from leanseg.names import check_case_id

    with pytest.raises(LeansegError, match=r"Case id .* in /data/dataset.json cannot name a file: .*rename the case there"):
        check_case_id(case_id.format(tmp="/data") if isinstance(case_id, str) else case_id, "/data/dataset.json")


def test_ids_equal_but_for_letter_case_are_duplicates() -> None:
    from leanseg.names import check_unique

    check_unique([("a", "x/a.nii.gz"), ("b", "x/b.nii.gz")], "d")
    with pytest.raises(LeansegError, match=r"x/Case1.nii.gz and y/case1.nii.gz in d both give the case name 'Case1' / 'case1'"):
        check_unique([("Case1", "x/Case1.nii.gz"), ("case1", "y/case1.nii.gz")], "d")


def _listed(phantoms: Path, root: Path, case_id: str) -> Path:
    """An nnU-Net v2 folder whose explicit ``dataset`` list names the first phantom ``case_id``."""
    ds = load_dataset(phantoms)
    root.mkdir(parents=True, exist_ok=True)
    listing = {c.case_id: {"images": [str(c.images[0])], "label": str(c.label)} for c in ds.cases}
    first = ds.cases[0]
    listing[case_id] = listing.pop(first.case_id)
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "structure": 1, "lesion": 2}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps({**meta, "dataset": listing}))
    return root


def _escaped(tmp_path: Path) -> list[Path]:
    """Files named after the probe anywhere under the test's folder (the absolute probe path is in it)."""
    return [p for p in tmp_path.rglob("*escape_probe_evil*") if p.exists()]


@pytest.mark.parametrize("case_id", HOSTILE[:4])
def test_train_and_degrade_refuse_a_hostile_listed_id_and_write_nothing(phantoms: Path, tiny_cfg, tmp_path: Path, case_id: str) -> None:
    from leanseg.cli import app

    data = _listed(phantoms, tmp_path / "deep" / "er" / "data", case_id.format(tmp=tmp_path))
    with pytest.raises(LeansegError, match=r"Case id .* in .*dataset.json cannot name a file"):
        load_dataset(data)
    tiny_cfg.save(tmp_path / "tiny.yaml")
    for args in (
        ["train", "-d", str(data), "-o", str(tmp_path / "run"), "--config", str(tmp_path / "tiny.yaml")],
        ["data", "degrade", "-d", str(data), "-o", str(tmp_path / "deg")],
    ):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and "cannot name a file" in r.output, r.output
    assert _escaped(tmp_path) == [] and not (tmp_path / "deg").exists()


def test_an_image_file_named_dotdot_is_refused(phantoms: Path, tmp_path: Path) -> None:
    root = tmp_path / "nn"
    (root / "imagesTr").mkdir(parents=True)
    src = load_dataset(phantoms).cases[0]
    shutil.copy(src.images[0], root / "imagesTr" / ".._0000.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}))
    with pytest.raises(LeansegError, match=r"Case id '\.\.' in .*dataset.json cannot name a file"):
        load_dataset(root, require_labels=False)


# --- every place that names a file after a case id, with its probe ----------------------------------------------------


def _probe_datasets(phantoms: Path, tmp: Path, case_id: str) -> None:
    load_dataset(_listed(phantoms, tmp / "data", case_id))


def _preprocessing(phantoms: Path, case_id: str):
    """The phantoms' plan and dataset, and a hand-made Case (not read through load_dataset) named ``case_id``."""
    from leanseg.config import ExperimentConfig
    from leanseg.data.prepare import fingerprint_dataset
    from leanseg.plan import plan_from_fingerprint

    ds, fp = fingerprint_dataset(phantoms)
    return (
        ds,
        plan_from_fingerprint(fp, ExperimentConfig().data, ExperimentConfig().model),
        Case(case_id, ds.cases[0].images, ds.cases[0].label),
    )


def _probe_preprocess_case(phantoms: Path, tmp: Path, case_id: str) -> None:
    from leanseg.data.preprocess import Preprocessor, preprocess_case

    _, plan, bad = _preprocessing(phantoms, case_id)
    (tmp / "cache").mkdir(parents=True)
    preprocess_case(Preprocessor(plan), bad, tmp / "cache")


def _probe_preprocess_dataset(phantoms: Path, tmp: Path, case_id: str) -> None:
    from leanseg.data.preprocess import preprocess_dataset

    ds, plan, bad = _preprocessing(phantoms, case_id)
    preprocess_dataset(type(ds)(ds.root, ds.name, ds.layout, ds.channel_names, ds.labels, [bad]), plan, tmp / "cache")


def _probe_cached_case(phantoms: Path, tmp: Path, case_id: str) -> None:
    from leanseg.data.preprocess import CachedCase

    CachedCase(tmp, case_id)


def _probe_degrade(phantoms: Path, tmp: Path, case_id: str) -> None:
    from leanseg.data.degrade import degrade_dataset

    degrade_dataset(_listed(phantoms, tmp / "data", case_id), tmp / "deg")


def _probe_predict(phantoms: Path, tmp: Path, case_id: str) -> None:
    from leanseg.inference import Predictor

    image = load_dataset(phantoms).cases[0].images[0]
    Predictor.__new__(Predictor)._target(tmp / "out", case_id, [image], "auto")


SINKS = {
    ("data/datasets.py", "_load_nnunet"): _probe_datasets,
    ("data/datasets.py", "_channel_files"): _probe_datasets,
    ("data/preprocess.py", "preprocess_case"): _probe_preprocess_case,
    ("data/preprocess.py", "preprocess_dataset"): _probe_preprocess_dataset,
    ("data/preprocess.py", "__init__"): _probe_cached_case,
    ("data/degrade.py", "degrade_dataset"): _probe_degrade,
    ("inference.py", "_target"): _probe_predict,
}


def _file_name_fstrings() -> set[tuple[str, str]]:
    """(module, function) of every f-string in src/ that formats a case id into a file name (no spaces: not a message)."""

    def mentions_id(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Name) and n.id in ("case_id", "cid") or isinstance(n, ast.Attribute) and n.attr == "case_id"
            for n in ast.walk(node)
        )

    found = set()
    for f in SRC.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for s in (n for n in ast.walk(fn) if isinstance(n, ast.JoinedStr)):
                text = "".join(v.value for v in s.values if isinstance(v, ast.Constant))
                if (
                    " " not in text
                    and "'" not in text
                    and any(isinstance(v, ast.FormattedValue) and mentions_id(v.value) for v in s.values)
                ):
                    found.add((str(f.relative_to(SRC)), fn.name))
    return found


def test_every_file_name_built_from_a_case_id_is_probed() -> None:
    assert _file_name_fstrings() == set(SINKS), "a new place names a file after a case id: add it to SINKS with a probe"


@pytest.mark.parametrize("sink", sorted(set(SINKS.values()), key=lambda f: f.__name__), ids=lambda f: f.__name__)
@pytest.mark.parametrize("case_id", ["..", ABSOLUTE, "../escape_probe_evil", "sub/escape_probe_evil"])
def test_each_sink_refuses_dotdot_absolute_and_separator_ids(sink, case_id: str, phantoms: Path, tmp_path: Path) -> None:
    case_id = case_id.format(tmp=tmp_path)
    with pytest.raises(LeansegError, match="cannot name a file"):
        sink(phantoms, tmp_path / "w" / "x", case_id)
    assert _escaped(tmp_path) == []


def test_msd_cases_are_named_as_listed_and_duplicates_are_refused_with_both_paths(phantoms: Path, tmp_path: Path) -> None:
    root = tmp_path / "msd"
    shutil.copytree(phantoms, root)
    meta = json.loads((root / "dataset.json").read_text())
    first = meta["training"][0]
    (root / "imagesTr" / "alias.nii.gz").symlink_to(root / first["image"])  # a symlink keeps its own name
    meta["training"].append({"image": "./imagesTr/alias.nii.gz", "label": first["label"]})
    (root / "dataset.json").write_text(json.dumps(meta))
    ids = [c.case_id for c in load_dataset(root).cases]
    assert "alias" in ids and len(set(ids)) == len(ids)
    (root / "other").mkdir()
    shutil.copy(root / first["image"], root / "other" / Path(first["image"]).name)
    meta["training"].append({"image": f"./other/{Path(first['image']).name}", "label": first["label"]})
    (root / "dataset.json").write_text(json.dumps(meta))
    name = Path(first["image"]).name
    with pytest.raises(LeansegError, match=rf"imagesTr/{name} and .*other/{name} in .*dataset.json both give the case name"):
        load_dataset(root)
