"""The one search loop of every search, strategy or architecture: ask the controller, run trials on an
executor, tell rewards, journal every event (as optuna's ``Study`` over every sampler).

The journal is rewritten atomically after every ask and every result: the controller's state and every
trial (candidate, status, reward, result, error, the controller's entropy after it). A search killed at
any point restarts from it: finished trials are kept, trials that were running are run again with the
same candidate, and the controller continues from its saved state. A trial whose result says
``"reward": None`` succeeded with nothing to judge (the architecture search's children that only train
the shared weights): it is journaled as done, with no reward, and not told to the controller. It is one
JSON file, ``state.json``;
a search whose trials share state in this process (the architecture search's supernet) passes
``attach``/``restore``, and the journal is then written together with that state in one file,
``search.pt`` (tensors only, loaded with ``weights_only=True``), with ``state.json`` as a copy for people.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leanseg.errors import LeansegError
from leanseg.search.controllers.base import Candidate, Controller
from leanseg.utils import atomic_path, atomic_write_text, folder_lock, sweep_temporaries

TrialFactory = Callable[[Candidate], tuple[Callable[..., dict[str, Any]], dict[str, Any]]]


class Journal:
    """Trials and controller state of one search; ``attach()`` (optional) adds tensors saved with every entry."""

    def __init__(
        self,
        out_dir: Path,
        meta: dict[str, Any],
        attach: Callable[[], dict[str, Any]] | None = None,
        restore: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = Path(out_dir) / "state.json"
        self.state_path = Path(out_dir) / ("search.pt" if attach else "state.json")
        self.meta = json.loads(json.dumps(meta))  # as it reads back: lists, not tuples
        self.attach, self.restore = attach, restore
        self.trials: dict[int, dict[str, Any]] = {}

    def load(self, controller: Controller) -> bool:
        """Restore trials and the controller from an earlier run of the same search; False if there is none."""
        if not self.state_path.is_file():
            return False
        d, attached = read_journal(self.state_path)
        if d.get("meta") != self.meta:
            raise LeansegError(
                f"{self.state_path} belongs to another search ({d.get('meta')}); pass a new --out or the same settings to resume it."
            )
        try:
            controller.load_state_dict(d["controller"])
            self.trials = {int(k): v for k, v in d["trials"].items()}
            if self.restore is not None:
                self.restore(attached)
        except Exception as e:  # a damaged or foreign state raises anything from KeyError to torch's unpickler errors
            raise LeansegError(
                f"The search state in {self.state_path} is damaged or from another version ({type(e).__name__}: {e}); "
                "delete it to start the search afresh or pass another --out."
            ) from e
        return True

    def save(self, controller: Controller) -> None:
        text = json.dumps({"meta": self.meta, "controller": controller.state_dict(), "trials": self.trials})
        if self.attach is not None:
            import torch

            with atomic_path(self.state_path) as tmp:
                torch.save({"journal": text, **self.attach()}, tmp)
        atomic_write_text(self.path, text)

    def finished(self) -> list[dict[str, Any]]:
        return finished_trials(self.trials)


def finished_trials(trials: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials that ended (succeeded or failed), in id order."""
    return [t for _, t in sorted((int(k), v) for k, v in trials.items()) if t["status"] != "pending"]


def read_journal(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved journal (``state.json``, or ``search.pt`` with attached tensors): (journal, attached state)."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text()), {}
        import torch

        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or "journal" not in d:
            raise ValueError("no search journal inside")
        return json.loads(d.pop("journal")), d
    except Exception as e:  # json, torch and the unpickler raise many types for a damaged file
        raise LeansegError(
            f"Search journal {path} is unreadable ({type(e).__name__}: {e}); delete it to start afresh or pass another --out."
        ) from e


def run_search(
    controller: Controller,
    make_trial: TrialFactory,
    trials: int,
    executor: Any,
    out_dir: Path,
    meta: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
    attach: Callable[[], dict[str, Any]] | None = None,
    restore: Callable[[dict[str, Any]], None] | None = None,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run until ``trials`` trials have ended (succeeded or failed); returns them in id order.

    ``on_result(finished)`` is called after each result is journaled with every finished trial (for reports),
    then ``progress(trial, ended, trials)``.

    ``attach``/``restore``: state the trials share in this process, saved with every journal entry and given
    back on resume (see the module docstring).
    """
    out_dir = Path(out_dir)
    with folder_lock(out_dir, "search"):  # one writer per search folder
        journal = Journal(out_dir, {"controller": controller.name, **(meta or {})}, attach, restore)
        sweep_temporaries(out_dir)  # the journal accepted the folder: what a killed write left can go
        return _run_search(controller, make_trial, trials, executor, journal, progress, on_result)


def _run_search(
    controller: Controller,
    make_trial: TrialFactory,
    trials: int,
    executor: Any,
    journal: Journal,
    progress: Callable[[dict[str, Any], int, int], None] | None,
    on_result: Callable[[list[dict[str, Any]]], None] | None,
) -> list[dict[str, Any]]:
    journal.load(controller)
    rerun = [Candidate.from_dict(t["candidate"]) for _, t in sorted(journal.trials.items()) if t["status"] == "pending"]
    candidates: dict[int, Candidate] = {}
    try:
        while True:
            n_ended = len(journal.finished())
            while executor.running() < executor.parallel and n_ended + executor.running() < trials:
                if rerun:
                    c = rerun.pop(0)
                else:
                    c = controller.ask()
                    journal.trials[c.id] = {"candidate": c.to_dict(), "status": "pending"}
                    journal.save(controller)
                candidates[c.id] = c
                fn, kwargs = make_trial(c)
                executor.submit(c.id, fn, kwargs)
            if executor.running() == 0:
                break
            for o in executor.wait_any():
                c = candidates.pop(o.trial_id)
                journal.trials[c.id] = _record(controller, c, o)
                journal.save(controller)
                if on_result:
                    on_result(journal.finished())
                if progress:
                    progress(journal.trials[c.id], len(journal.finished()), trials)
    finally:
        executor.shutdown()
    return journal.finished()


def _record(controller: Controller, c: Candidate, o: Any) -> dict[str, Any]:
    """Tell the controller a trial's outcome ``o`` and return its journal entry; a result with ``"reward": None``
    is done and not told (see the module docstring)."""
    result = o.result if o.ok else None
    unjudged = bool(result) and "reward" in result and result["reward"] is None
    reward = float(result["reward"]) if result and "reward" in result and not unjudged else None
    if not unjudged:
        controller.tell(c, reward)
    ok = reward is not None or unjudged
    return {
        "candidate": c.to_dict(),
        "status": "done" if ok else "failed",
        "reward": reward,
        "result": o.result,
        "error": None if ok else o.error,
        "seconds": o.seconds,
        "entropy": controller.entropy(),
    }
