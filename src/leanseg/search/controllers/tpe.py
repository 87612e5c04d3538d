"""``tpe``: Optuna's Tree-structured Parzen Estimator through its ask-and-tell interface, the reference most users would try."""

from __future__ import annotations

import base64
import pickle
from typing import Any

import numpy as np

from leanseg.search.controllers.base import CONTROLLERS, Candidate, Controller
from leanseg.search.space import SearchSpace


@CONTROLLERS.register("tpe")
class TPEController(Controller):
    """Optuna's TPE sampler over the unit cube through its ask-and-tell interface."""

    name = "tpe"
    handles_start = True

    def __init__(self, space: SearchSpace, seed: int = 0, start: Any = None, n_startup_trials: int = 5) -> None:
        import optuna

        super().__init__(space, seed, start)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dists = {f"u{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(space.dim)}
        self.study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        )
        if self.start is not None:
            self.study.enqueue_trial({f"u{i}": v for i, v in enumerate(self.start)})

    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        t = self.study.ask(self.dists)
        return np.array([t.params[f"u{i}"] for i in range(self.space.dim)]), {"number": t.number}

    def _observe(self, candidate: Candidate, reward: float | None) -> None:
        import optuna

        n = candidate.info["number"]
        if reward is None:
            self.study.tell(n, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(n, reward)

    def _state(self) -> dict[str, Any]:
        # optuna studies in memory pickle whole (storage and sampler random state); only this process reads it back
        return {"study": base64.b64encode(pickle.dumps(self.study)).decode()}

    def _load(self, d: dict[str, Any]) -> None:
        self.study = pickle.loads(base64.b64decode(d["study"]))
