"""The search loop: ask the controller, run trials on an executor, tell rewards, journal every event.

The journal is one JSON file (``state.json``) rewritten atomically after every ask and every result:
the controller's state and every trial (candidate, status, reward, error). A search killed at any
point restarts from it: finished trials are kept, trials that were running are run again with the
same candidate, and the controller continues from its saved state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leanseg.errors import LeansegError
from leanseg.search.controllers import Candidate, Controller
from leanseg.utils import atomic_write_text

TrialFactory = Callable[[Candidate], tuple[Callable[..., dict[str, Any]], dict[str, Any]]]


class Journal:
    def __init__(self, out_dir: Path, meta: dict[str, Any]) -> None:
        self.path = Path(out_dir) / "state.json"
        self.meta = meta
        self.trials: dict[int, dict[str, Any]] = {}

    def load(self, controller: Controller) -> bool:
        """Restore trials and the controller from an earlier run of the same search; False if there is none."""
        if not self.path.is_file():
            return False
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise LeansegError(f"Search journal {self.path} is unreadable ({e}); delete it to start afresh or pass another --out.") from e
        if d.get("meta") != self.meta:
            raise LeansegError(
                f"{self.path} belongs to another search ({d.get('meta')}); pass a new --out or the same settings to resume it."
            )
        controller.load_state_dict(d["controller"])
        self.trials = {int(k): v for k, v in d["trials"].items()}
        return True

    def save(self, controller: Controller) -> None:
        atomic_write_text(self.path, json.dumps({"meta": self.meta, "controller": controller.state_dict(), "trials": self.trials}))

    def finished(self) -> list[dict[str, Any]]:
        return [t for _, t in sorted(self.trials.items()) if t["status"] != "pending"]


def run_search(
    controller: Controller,
    make_trial: TrialFactory,
    trials: int,
    executor: Any,
    out_dir: Path,
    meta: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run until ``trials`` trials have ended (succeeded or failed); returns them in id order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(out_dir, {"controller": controller.name, **(meta or {})})
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
                reward = float(o.result["reward"]) if o.ok and o.result and "reward" in o.result else None
                controller.tell(c, reward)
                journal.trials[c.id] = {
                    "candidate": c.to_dict(),
                    "status": "done" if reward is not None else "failed",
                    "reward": reward,
                    "result": o.result,
                    "error": o.error if reward is None else None,
                    "seconds": o.seconds,
                }
                journal.save(controller)
                if progress:
                    progress(journal.trials[c.id], len(journal.finished()), trials)
    finally:
        executor.shutdown()
    return journal.finished()
