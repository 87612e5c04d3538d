"""No file a user may have received from someone else runs code when leanseg loads it.

Every loader of a user-supplied file gets a crafted file whose unpickling (or YAML tag) would create a marker
folder; loading it must end in a LeansegError sentence with no marker. ``test_every_deserialising_call_is_covered``
walks ``src/`` so that a new ``torch.load`` (or an unsafe YAML or pickle call) cannot skip this file.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from leanseg.errors import LeansegError

SRC = Path(__file__).resolve().parents[1] / "src" / "leanseg"


class Boom:
    """Unpickling it creates the folder ``marker``: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def _checkpoint(tmp: Path, marker: Path) -> None:
    from leanseg.checkpoint import load_checkpoint

    torch.save({"model": Boom(marker), "format": "leanseg"}, tmp / "checkpoint_final.pt")
    load_checkpoint(tmp / "checkpoint_final.pt")


def _policy(tmp: Path, marker: Path) -> None:
    from leanseg.dynamic.policy import load_policy

    torch.save({"state": Boom(marker)}, tmp / "policy.pt")
    load_policy(tmp / "policy.pt", torch.nn.Linear(1, 1))


def _nas_search(tmp: Path, marker: Path) -> None:
    from leanseg.search.nas import read_search_state

    torch.save({"journal": "{}", "supernet": Boom(marker)}, tmp / "search.pt")
    read_search_state(tmp / "search.pt")


def _resume(tmp: Path, controller: str, state: dict) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    from leanseg.search.controllers import make_controller
    from leanseg.search.executors import InProcessExecutor
    from leanseg.search.runner import run_search
    from tests.search.test_search import SPACE

    journal = {"meta": {"controller": controller}, "controller": {"name": controller, **state}, "trials": {}}
    (tmp / "state.json").write_text(json.dumps(journal))
    run_search(make_controller(controller, SPACE, seed=0), lambda c: (None, {}), 1, InProcessExecutor(), tmp)


def _tpe_journal(tmp: Path, marker: Path) -> None:  # the format leanseg wrote before: a pickled optuna study
    study = base64.b64encode(pickle.dumps(Boom(marker))).decode()
    _resume(tmp, "tpe", {"seed": 0, "next_id": 1, "start": None, "history": [], "rng": {}, "study": study})


def _ppo_journal(tmp: Path, marker: Path) -> None:  # PPO keeps its networks as torch-saved tensors in the JSON
    buf = io.BytesIO()
    torch.save({"net": Boom(marker)}, buf)
    from leanseg.search.controllers import make_controller
    from tests.search.test_search import SPACE

    state = make_controller("ppo", SPACE, seed=0).state_dict()
    state.update({k: base64.b64encode(buf.getvalue()).decode() for k, v in state.items() if isinstance(v, str) and len(v) > 200})
    _resume(tmp, "ppo", {k: v for k, v in state.items() if k != "name"})


def _config(tmp: Path, marker: Path) -> None:
    from leanseg.config import ExperimentConfig

    (tmp / "c.yaml").write_text(f"train: !!python/object/apply:os.makedirs [{str(marker)!r}]\n")
    ExperimentConfig.load(tmp / "c.yaml")


def _override(tmp: Path, marker: Path) -> None:
    from leanseg.config import ExperimentConfig

    ExperimentConfig().with_overrides([f"train.lr=!!python/object/apply:os.makedirs [{str(marker)!r}]"])


def _space(tmp: Path, marker: Path) -> None:
    from leanseg.search.space import SearchSpace

    (tmp / "s.yaml").write_text(f"- !!python/object/apply:os.makedirs [{str(marker)!r}]\n")
    SearchSpace.load(tmp / "s.yaml")


LOADERS = {
    "checkpoint": _checkpoint,
    "policy": _policy,
    "NAS search.pt": _nas_search,
    "TPE search journal": _tpe_journal,
    "PPO search journal": _ppo_journal,
    "config YAML": _config,
    "--set value": _override,
    "search space YAML": _space,
}
# the functions in src/ that deserialise a user's file with torch.load or YAML, and the loader above that attacks each
COVERED = {
    ("checkpoint.py", "load_checkpoint"): "checkpoint",
    ("dynamic/policy.py", "load_policy"): "policy",
    ("search/runner.py", "read_journal"): "NAS search.pt",
    ("search/controllers/base.py", "tensors_from_b64"): "PPO search journal",
    ("config.py", "load"): "config YAML",
    ("config.py", "_split_override"): "--set value",
    ("search/space.py", "load"): "search space YAML",
}


@pytest.mark.parametrize("name", LOADERS)
def test_a_crafted_file_runs_no_code_and_is_refused_with_a_sentence(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(LeansegError) as e:
        LOADERS[name](tmp_path, marker)
    assert not marker.exists(), f"loading a crafted {name} ran code"
    assert str(e.value).strip() and "Traceback" not in str(e.value)


def _calls(tree: ast.AST):
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    yield fn.name, node


def test_every_deserialising_call_is_covered() -> None:
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text()
        assert "import pickle" not in text and "yaml.load(" not in text and "unsafe_load" not in text, rel
        assert "allow_pickle=True" not in text, rel
        for fn, call in _calls(ast.parse(text)):
            name = ast.unparse(call.func)
            if name == "torch.load":
                assert any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in call.keywords), f"{rel}:{fn}"
                found.add((rel, fn))
            elif name == "yaml.safe_load":
                found.add((rel, fn))
    assert found == set(COVERED), f"new or moved loaders: {found ^ set(COVERED)}; add a crafted case to LOADERS"
    assert set(COVERED.values()) <= set(LOADERS)


def test_damaged_search_states_are_refused_with_a_sentence_on_resume(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from leanseg.search.nas import search_architecture

    kw = dict(base=tiny_cfg, controller="enas", episodes=1, children=2, child_iterations=1, val_cases=1, num_stages=3, seed=0)
    search_architecture(phantoms, tmp_path / "nas", **kw)
    state = tmp_path / "nas" / "search.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a copy cut off half-way
    with pytest.raises(LeansegError, match=r"search.pt is unreadable .*delete it to start afresh"):
        search_architecture(phantoms, tmp_path / "nas", **kw)
    with pytest.raises(LeansegError, match=r"state.json is damaged or from another version"):
        _resume(tmp_path / "ppo", "ppo", {"seed": 0, "next_id": 1, "start": None, "history": [], "rng": {}, "net": "not base64"})
