"""A controller that first hands out ``n`` proposals of another (uniform draws, say) without telling the second.

The architecture search's ``warmup_children`` is this: the shared weights train on uniformly drawn children
before the policy learns, and the policy never hears of them. Candidate ids are this controller's own
(the journal's); each inner controller keeps its own numbering and start point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from leanseg.search.controllers.base import Candidate, Controller


class WarmupController(Controller):
    """``warm`` answers the first ``n`` asks and hears their rewards; ``inner`` answers the rest."""

    def __init__(self, inner: Controller, warm: Controller, n: int) -> None:
        super().__init__(inner.space, inner.seed, None)
        self.inner, self.warm, self.n = inner, warm, n
        self.name = f"warmup({warm.name},{inner.name})"

    def constrain(self, accept: Callable[[dict[str, Any]], bool] | None) -> Controller:
        self.inner.constrain(accept)
        self.warm.constrain(accept)
        return self

    def ask(self) -> Candidate:
        warming = self.next_id < self.n
        c = (self.warm if warming else self.inner).ask()
        out = Candidate(self.next_id, c.unit, c.values, {"warmup": warming, "inner": c.to_dict()})
        self.next_id += 1
        return out

    def tell(self, candidate: Candidate, reward: float | None) -> None:
        inner = Candidate.from_dict(candidate.info["inner"])
        (self.warm if candidate.info["warmup"] else self.inner).tell(inner, reward)
        r = None if reward is None or not np.isfinite(reward) else float(reward)
        self.history.append({"id": candidate.id, "unit": list(candidate.unit), "reward": r, "warmup": candidate.info["warmup"]})

    def best(self) -> dict[str, Any] | None:
        """The best of the inner controller's proposals (the warm-up's do not compete)."""
        return self.inner.best()

    def entropy(self) -> float:
        return self.inner.entropy()

    def derive(self, k: int, seed: int = 0) -> list[np.ndarray]:
        return self.inner.derive(k, seed)

    def _state(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "warm": self.warm.state_dict()}

    def _load(self, d: dict[str, Any]) -> None:
        self.inner.load_state_dict(d["inner"])
        self.warm.load_state_dict(d["warm"])
