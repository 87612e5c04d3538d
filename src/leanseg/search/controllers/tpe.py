"""``tpe``: Optuna's Tree-structured Parzen Estimator through its ask-and-tell interface, the reference most users would try."""

from __future__ import annotations

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
        """The study as data (never a pickle: a journal may come from someone else): its trials and the sampler's
        random states. ``_load`` rebuilds the study from them with optuna's ``add_trial``."""
        trials = [
            {"number": t.number, "params": t.params, "state": t.state.name, "value": t.value} for t in self.study.get_trials(deepcopy=False)
        ]
        return {"trials": trials, "sampler_rng": [_rng_state(r) for r in _sampler_rngs(self.study.sampler)]}

    def _load(self, d: dict[str, Any]) -> None:
        import optuna

        if "trials" not in d:
            raise ValueError("no TPE trials in it (a state from before leanseg kept TPE studies as data)")
        self.study = optuna.create_study(direction="maximize", sampler=self.study.sampler)
        for t in sorted(d["trials"], key=lambda t: int(t["number"])):
            state = optuna.trial.TrialState[t["state"]]
            params = {k: float(v) for k, v in t["params"].items() if k in self.dists}
            if state == optuna.trial.TrialState.WAITING:
                self.study.enqueue_trial(params)
                continue
            value = float(t["value"]) if state == optuna.trial.TrialState.COMPLETE else None
            self.study.add_trial(optuna.trial.create_trial(params=params, distributions=self.dists, state=state, value=value))
        for rng, saved in zip(_sampler_rngs(self.study.sampler), d["sampler_rng"]):
            rng.set_state((str(saved[0]), np.asarray(saved[1], dtype=np.uint32), int(saved[2]), int(saved[3]), float(saved[4])))


def _sampler_rngs(sampler: Any) -> list[np.random.RandomState]:
    """The random states a TPE sampler draws from (its own and its start-up random sampler's)."""
    return [sampler._rng.rng, sampler._random_sampler._rng.rng]


def _rng_state(rng: np.random.RandomState) -> list[Any]:
    name, keys, pos, has_gauss, gauss = rng.get_state()
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)]
