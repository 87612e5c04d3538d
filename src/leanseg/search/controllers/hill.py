"""Hill climbing from the best point so far (Yang et al. 2019's baselines): discrete and continuous steps."""

from __future__ import annotations

from typing import Any

import numpy as np

from leanseg.search.controllers.base import CONTROLLERS, Candidate, Controller
from leanseg.search.space import SearchSpace


class _HillBase(Controller):
    """Keeps the best point so far (the centre) and proposes steps from it."""

    def __init__(self, space: SearchSpace, seed: int = 0, start: Any = None) -> None:
        super().__init__(space, seed, start)
        self.center: list[float] | None = None
        self.best_reward: float | None = None

    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        if self.center is None:
            return self.rng.random(self.space.dim), {}
        return np.asarray(self.center) + self._step(), {}

    def _step(self) -> np.ndarray:
        raise NotImplementedError

    def _observe(self, candidate: Candidate, reward: float | None) -> None:
        first = self.best_reward is None
        improved = reward is not None and (first or reward > self.best_reward)  # type: ignore[operator]
        if improved:
            self.center, self.best_reward = list(candidate.unit), reward
        if not first:
            self._adapt(improved)

    def _adapt(self, improved: bool) -> None:
        pass

    def _state(self) -> dict[str, Any]:
        return {"center": self.center, "best_reward": self.best_reward}

    def _load(self, d: dict[str, Any]) -> None:
        self.center, self.best_reward = d["center"], d["best_reward"]


@CONTROLLERS.register("hill")
class HillClimbing(_HillBase):
    """Discrete hill climbing: each coordinate moves by -step, 0 or +step (at least one moves)."""

    name = "hill"

    def __init__(self, space: SearchSpace, seed: int = 0, start: Any = None, step: float = 0.01) -> None:
        super().__init__(space, seed, start)
        self.step = step

    def _step(self) -> np.ndarray:
        d = self.rng.integers(-1, 2, self.space.dim)
        if not d.any():
            d[self.rng.integers(self.space.dim)] = self.rng.choice([-1, 1])
        return self.step * d


@CONTROLLERS.register("hill-continuous")
class ContinuousHillClimbing(_HillBase):
    """Continuous hill climbing: Gaussian steps of scale ``step``; x1.1 after an improvement, /1.1 otherwise."""

    name = "hill-continuous"

    def __init__(self, space: SearchSpace, seed: int = 0, start: Any = None, step: float = 0.05, factor: float = 1.1) -> None:
        super().__init__(space, seed, start)
        self.step, self.factor = step, factor

    def _step(self) -> np.ndarray:
        return self.step * self.rng.standard_normal(self.space.dim)

    def _adapt(self, improved: bool) -> None:
        self.step = self.step * self.factor if improved else self.step / self.factor

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "step": self.step}

    def _load(self, d: dict[str, Any]) -> None:
        super()._load(d)
        self.step = d["step"]
