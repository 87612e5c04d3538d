"""Strategy search: spaces as data, the ask/tell contract on every controller, PPO and hill-climbing rules,
the journal (resume after a kill), failed trials, the Ray executor and the command end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.errors import LeansegError
from leanseg.search.controllers import CONTROLLERS, ContinuousHillClimbing, HillClimbing, PPOController, make_controller, ppo_clip_loss
from leanseg.search.executors import LocalExecutor
from leanseg.search.runner import run_search
from leanseg.search.space import Param, SearchSpace, strategy_space
from tests.search.objectives import quadratic

SPACE = SearchSpace((Param("augment.noise", 0.0, 1.0), Param("augment.flip", 0.0, 1.0), Param("train.lr", 1e-4, 1e-2, log=True)))


def reward(c) -> float:
    return quadratic(list(c.unit))["reward"]


def test_space_maps_the_unit_cube_to_config_values(tmp_path: Path) -> None:
    from leanseg.config import ExperimentConfig

    v = SPACE.values([0.25, 1.0, 0.5])
    assert v["augment.noise"] == 0.25 and v["augment.flip"] == 1.0
    assert v["train.lr"] == pytest.approx(1e-3)
    assert np.allclose(SPACE.unit(v), [0.25, 1.0, 0.5])
    (tmp_path / "s.yaml").write_text("- {key: train.momentum, low: 0.9, high: 0.99}\n- {key: augment.noise, low: 0, high: 1}\n")
    s = SearchSpace.load(tmp_path / "s.yaml")
    cfg = ExperimentConfig().with_overrides(s.values([1.0, 0.0]))
    assert cfg.train.momentum == pytest.approx(0.99) and cfg.augment.noise == 0.0
    assert np.allclose(s.routine(ExperimentConfig()), [(0.99 - 0.9) / 0.09, 0.5])
    with pytest.raises(LeansegError, match="Unknown config key"):
        SearchSpace((Param("train.nonsense", 0, 1),)).check(ExperimentConfig())
    with pytest.raises(LeansegError, match="empty"):
        Param("augment.noise", 1.0, 0.0)
    full = strategy_space()
    assert full.dim == 8 and np.allclose(full.routine(ExperimentConfig())[:7], 0.5)
    augment_only = strategy_space(with_lr=False)
    assert augment_only.keys == full.keys[:7] and "train.lr" not in augment_only.keys


@pytest.mark.parametrize("name", CONTROLLERS.names())
def test_controller_contract(name: str) -> None:
    start = [0.5, 0.5, 0.5]
    ctrl = make_controller(name, SPACE, seed=0, start=start)
    first = ctrl.ask()
    assert first.id == 0 and np.allclose(first.unit, start)
    pending = [ctrl.ask() for _ in range(3)]  # parallel trials: several asks before any tell
    assert [c.id for c in pending] == [1, 2, 3]
    ctrl.tell(first, reward(first))
    ctrl.tell(pending[2], None)  # a failed trial
    for c in reversed(pending[:2]):
        ctrl.tell(c, reward(c))
    for _ in range(24):
        c = ctrl.ask()
        assert all(0.0 <= u <= 1.0 for u in c.unit)
        assert 1e-4 <= c.values["train.lr"] <= 1e-2
        ctrl.tell(c, reward(c))
    assert ctrl.best()["reward"] > reward(first)  # found something better than the start
    assert sum(h["reward"] is None for h in ctrl.history) == 1
    # state round trip through JSON: the restored controller continues exactly like the original
    state = json.loads(json.dumps(ctrl.state_dict()))
    twin = make_controller(name, SPACE, seed=123, start=start)
    twin.load_state_dict(state)
    for _ in range(3):
        a, b = ctrl.ask(), twin.ask()
        assert a.id == b.id and np.allclose(a.unit, b.unit)
        ctrl.tell(a, reward(a))
        twin.tell(b, reward(b))
    with pytest.raises(ValueError):
        make_controller("random" if name != "random" else "hill", SPACE).load_state_dict(state)


def test_ppo_clipped_loss_worked_by_hand() -> None:
    old = torch.tensor([0.0, 0.0])
    new = torch.tensor([math.log(1.5), math.log(0.5)])
    adv = torch.tensor([2.0, -1.0])
    # sample 1: min(1.5 * 2, 1.2 * 2) = 2.4 ; sample 2: min(0.5 * -1, 0.8 * -1) = -0.8
    assert ppo_clip_loss(new, old, adv, 0.2).item() == pytest.approx(-(2.4 - 0.8) / 2)
    assert ppo_clip_loss(old, old, adv).item() == pytest.approx(-0.5)


def test_ppo_update_makes_the_rewarded_strategy_more_likely() -> None:
    ctrl = PPOController(SPACE, seed=0, lr=0.01, update_every=4, epochs=4)
    cands = [ctrl.ask() for _ in range(4)]

    def logp(c) -> float:
        i = c.info
        with torch.no_grad():
            mean, _, _ = ctrl.net(torch.tensor([i["x"]]), torch.tensor([i["h"]]), torch.tensor([i["c"]]))
            return float(ctrl.net.log_prob(mean[0], torch.tensor(i["action"])))

    before = [logp(c) for c in cands]
    assert before == pytest.approx([c.info["logp"] for c in cands], abs=1e-5)
    for c in cands:  # each proposal records the policy it was drawn from
        i = c.info
        with torch.no_grad():
            mean = ctrl.net(torch.tensor([i["x"]]), torch.tensor([i["h"]]), torch.tensor([i["c"]]))[0][0]
        assert i["mean"] == pytest.approx(mean.tolist(), abs=1e-6) and i["std"] == pytest.approx(ctrl.net.log_std.exp().tolist())
    for c, r in zip(cands, [0.5, 0.0, 0.0, 1.0]):  # the first sets the baseline; the last is the best
        ctrl.tell(c, r)
    assert ctrl.updates == 1 and ctrl.buffer == []
    after = [logp(c) for c in cands]
    assert after[3] > before[3]
    assert after[1] - before[1] < after[3] - before[3]


def test_discrete_hill_climbing_moves_by_the_step_and_follows_improvements() -> None:
    ctrl = HillClimbing(SPACE, seed=0, start=[0.5, 0.5, 0.5], step=0.01)
    s = ctrl.ask()
    ctrl.tell(s, -1.0)
    for _ in range(10):
        c = ctrl.ask()
        d = np.asarray(c.unit) - np.asarray(ctrl.center)
        assert np.allclose(np.abs(d)[np.abs(d) > 1e-12], 0.01) and np.abs(d).max() > 0
        ctrl.tell(c, -2.0)  # worse: the centre stays
        assert np.allclose(ctrl.center, s.unit)
    c = ctrl.ask()
    ctrl.tell(c, 0.0)  # better: the centre moves there
    assert np.allclose(ctrl.center, c.unit) and ctrl.best_reward == 0.0


def test_continuous_hill_climbing_adapts_its_step() -> None:
    ctrl = ContinuousHillClimbing(SPACE, seed=0, start=[0.5, 0.5, 0.5], step=0.05)
    ctrl.tell(ctrl.ask(), -1.0)
    assert ctrl.step == pytest.approx(0.05)  # the first result only sets the centre
    ctrl.tell(ctrl.ask(), -0.5)
    assert ctrl.step == pytest.approx(0.055)
    ctrl.tell(ctrl.ask(), -0.9)
    assert ctrl.step == pytest.approx(0.05)
    ctrl.tell(ctrl.ask(), None)  # a failed trial counts as no improvement
    assert ctrl.step == pytest.approx(0.05 / 1.1)


def _factory(marker_dir: Path, **kw):
    def make(c):
        return quadratic, {"x": list(c.unit), "marker_dir": str(marker_dir), "trial": c.id, **kw}

    return make


def test_a_crashing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    ctrl = make_controller("random", SPACE, seed=3, start=[0.9, 0.5, 0.5])
    done = run_search(ctrl, _factory(tmp_path / "m", crash_above=0.8), 6, LocalExecutor(2, tmp_path / "r"), tmp_path / "s")
    assert len(done) == 6
    failed = [t for t in done if t["status"] == "failed"]
    assert failed and all("exit code 3" in t["error"] for t in failed)
    assert done[0]["status"] == "failed"  # the start has x[0] = 0.9
    assert all(t["status"] == "done" for t in done if t["candidate"]["unit"][0] <= 0.8)
    assert ctrl.history[0]["reward"] is None or any(h["reward"] is None for h in ctrl.history)


def test_search_resumes_after_a_kill_without_repeating_finished_trials(tmp_path: Path) -> None:
    out, markers = tmp_path / "search", tmp_path / "markers"
    code = f"""
import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.search.test_search import SPACE, _factory
from leanseg.search.controllers import make_controller
from leanseg.search.executors import LocalExecutor
from leanseg.search.runner import run_search
from pathlib import Path
run_search(make_controller("ppo", SPACE, seed=0, start=[0.5] * 3, update_every=2), _factory(Path({str(markers)!r}), sleep=1.0),
           8, LocalExecutor(1, Path({str(tmp_path / "r")!r})), Path({str(out)!r}))
"""
    p = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 600
    while time.time() < deadline:
        state = out / "state.json"
        if state.is_file() and sum(t["status"] == "done" for t in json.loads(state.read_text())["trials"].values()) >= 3:
            break
        time.sleep(0.2)
    p.kill()
    p.wait()
    before = json.loads((out / "state.json").read_text())
    finished_before = {int(k) for k, t in before["trials"].items() if t["status"] == "done"}
    assert 3 <= len(finished_before) < 8
    ctrl = make_controller("ppo", SPACE, seed=0, start=[0.5] * 3, update_every=2)
    done = run_search(ctrl, _factory(markers, sleep=0.0), 8, LocalExecutor(1, tmp_path / "r"), out)
    assert [t["candidate"]["id"] for t in done] == list(range(8))
    for tid in finished_before:
        assert (markers / f"trial_{tid}").read_text().count("run") == 1  # not run again
        assert done[tid]["reward"] == before["trials"][str(tid)]["reward"]
    assert len(ctrl.history) == 8
    with pytest.raises(LeansegError, match="another search"):
        run_search(make_controller("random", SPACE), _factory(markers), 8, LocalExecutor(1), out, meta={"other": 1})


def test_ray_executor_on_a_local_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import ray

    from leanseg.search.executors import RayExecutor
    from tests.search.objectives import raising

    ex = RayExecutor("local", parallel=2, num_cpus=2)
    try:
        ctrl = make_controller("tpe", SPACE, seed=0, start=[0.5] * 3)

        def make(c):
            return (raising, {"x": list(c.unit)}) if c.id == 1 else (quadratic, {"x": list(c.unit)})

        done = run_search(ctrl, make, 4, ex, tmp_path / "s")
        assert [t["status"] for t in done] == ["done", "failed", "done", "done"]
        assert "this trial breaks" in done[1]["error"]
        assert done[0]["reward"] == pytest.approx(-3 * 0.2**2)
    finally:
        ray.shutdown()


def test_strategy_search_command_end_to_end(phantoms: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.config import ExperimentConfig

    out = tmp_path / "search"
    args = [
        "search",
        "strategy",
        "-d",
        str(phantoms),
        "-o",
        str(out),
        "--controller",
        "hill-continuous",
        "--trials",
        "3",
        "--parallel",
        "2",
    ]
    small = ["model.features=[4,8]", "model.strides=[[1,1,1],[2,2,2]]", "data.patch_size=[16,16,16]", "data.num_folds=3"]
    small += ["train.iterations=3", "train.num_workers=0", "train.val_every=100"]
    r = CliRunner().invoke(app, args + [x for s in small for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("trial,status,reward,augment.sharpen")
    state = json.loads((out / "state.json").read_text())
    assert np.allclose(state["trials"]["0"]["candidate"]["unit"][:7], 0.5)  # the routine start
    best = max((t for t in state["trials"].values() if t["status"] == "done"), key=lambda t: t["reward"])
    cfg = ExperimentConfig.load(out / "best_config.yaml")
    assert cfg.augment.noise == pytest.approx(best["candidate"]["values"]["augment.noise"])
    assert cfg.train.lr == pytest.approx(best["candidate"]["values"]["train.lr"])
    assert (out / "rewards.png").is_file() and "best strategies" in r.output


def test_in_process_trials_reward_as_spawned_ones_and_run_one_at_a_time(phantoms: Path, tmp_path: Path) -> None:
    from leanseg.config import ExperimentConfig
    from leanseg.search.strategy import search_strategy

    base = ExperimentConfig().with_overrides(
        {
            "model.features": [4, 8],
            "model.strides": [[1, 1, 1], [2, 2, 2]],
            "data.patch_size": [16, 16, 16],
            "data.num_folds": 3,
            "train.iterations": 2,
            "train.num_workers": 0,
            "train.val_every": 100,
        }
    )
    runs = {
        mode: search_strategy(
            phantoms, tmp_path / mode, "random", 2, base=base.with_overrides({"search.strategy.in_process": mode == "inline"})
        )
        for mode in ("inline", "spawned")
    }
    rewards = {mode: [t["reward"] for t in r.trials] for mode, r in runs.items()}
    assert all(t["status"] == "done" for r in runs.values() for t in r.trials)
    assert rewards["inline"] == pytest.approx(rewards["spawned"], abs=1e-6)
    with pytest.raises(LeansegError, match="in_process runs one trial at a time"):
        search_strategy(phantoms, tmp_path / "x", "random", 2, parallel=2, base=base.with_overrides({"search.strategy.in_process": True}))


def test_tpe_state_is_plain_data_and_resumes_as_if_never_stopped() -> None:
    """The study is kept as its trials and random states (no pickle); a resumed TPE proposes what it would have."""

    def run(n: int, stop_at: int | None = None) -> list[tuple[float, ...]]:
        ctrl, units, pending = make_controller("tpe", SPACE, seed=0, start=[0.5] * 3, n_startup_trials=2), [], None
        for i in range(n):
            c = ctrl.ask()
            if stop_at is not None and i == stop_at:  # stopped with this trial still running
                state = json.loads(json.dumps(ctrl.state_dict()))
                assert "study" not in state and all(isinstance(t["params"], dict) for t in state["trials"])
                ctrl = make_controller("tpe", SPACE, seed=0, start=[0.5] * 3, n_startup_trials=2)
                ctrl.load_state_dict(state)
                pending = c
            units.append(c.unit)
            ctrl.tell(c, -sum((u - 0.3) ** 2 for u in c.unit))
        assert pending is None or ctrl.study.trials[pending.id].value is not None
        return units

    assert run(8) == run(8, stop_at=4)


def test_strategy_search_refuses_a_bad_start_checkpoint_before_any_trial_and_fails_when_every_trial_fails(
    phantoms: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    junk = tmp_path / "not_a_checkpoint.pt"
    junk.write_text("hello")
    base = ["search", "strategy", "-d", str(phantoms), "--trials", "2", "--controller", "random"]
    small = ["model.features=[4,8]", "model.strides=[[1,1,1],[2,2,2]]", "data.patch_size=[16,16,16]", "data.num_folds=3"]
    small += ["train.iterations=2", "train.num_workers=0", "train.val_every=100"]
    sets = [x for s in small for x in ("--set", s)]
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "a"), "--init-checkpoint", str(junk), *sets])
    assert r.exit_code == 2 and "not_a_checkpoint.pt" in r.output
    assert not (tmp_path / "a" / "trials").exists()  # refused before the first trial
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "b"), *sets, "--set", "data.fold=9"])
    assert r.exit_code == 2 and "Every one of the 2 trials failed" in r.output, r.output
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "d"), "--in-process", "--parallel", "2", *sets])
    assert r.exit_code == 2 and "in_process runs one trial at a time" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "c"), "--set", "train.lr=[1,2"])
    assert r.exit_code == 2 and "not valid YAML" in r.output and "Traceback" not in r.output


def test_a_second_search_on_one_folder_is_refused(tmp_path: Path) -> None:
    from leanseg.search.executors import InProcessExecutor
    from tests.test_utils import _hold

    p = _hold(tmp_path / "s")
    try:
        with pytest.raises(LeansegError, match="search folder .* is in use"):
            run_search(make_controller("random", SPACE), _factory(tmp_path / "m"), 1, InProcessExecutor(), tmp_path / "s")
    finally:
        p.kill()
        p.wait()
    assert not (tmp_path / "s" / "state.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_trial_dies_with_its_search(tmp_path: Path) -> None:
    import os
    import signal

    pid_file = tmp_path / "trial.pid"
    code = f"""
import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.search.objectives import sleeper
from tests.search.test_search import SPACE
from leanseg.search.controllers import make_controller
from leanseg.search.executors import LocalExecutor
from leanseg.search.runner import run_search
from pathlib import Path
run_search(make_controller("random", SPACE), lambda c: (sleeper, {{"pid_file": {str(pid_file)!r}}}), 1,
           LocalExecutor(1, Path({str(tmp_path / "r")!r})), Path({str(tmp_path / "s")!r}))
"""
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    trial = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)  # only the search's parent, as a user's kill -9 or a closed terminal
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper has ended too
            return f.read().split()[2] != "Z"

    gone_by = time.time() + 10  # the trial sleeps 60 s: only its own death ends it this soon
    while alive(trial) and time.time() < gone_by:
        time.sleep(0.1)
    assert not alive(trial), "the trial outlived its search"
