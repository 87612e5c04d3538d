"""The controller contract: :class:`Candidate` and the :class:`Controller` base class, and the registry.

``ask() -> Candidate`` proposes a point of the unit cube (several may be pending at once, one per
parallel trial); ``tell(candidate, reward)`` reports its reward (``None``: the trial failed);
``state_dict()`` / ``load_state_dict()`` save and restore everything, random state included, as
JSON-able values, so a killed search resumes where it stopped. Each controller lives in its own
module of this package and registers itself in :data:`CONTROLLERS`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from leanseg.errors import LeansegError
from leanseg.registry import Registry
from leanseg.search.space import SearchSpace

CONTROLLERS: Registry[Any] = Registry("search controller")
MAX_REDRAWS = 1000


@dataclass(frozen=True)
class Candidate:
    """A proposed point: its id, unit-cube coordinates, config values, and what its controller needs back."""

    id: int
    unit: tuple[float, ...]
    values: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "unit": list(self.unit), "values": self.values, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(int(d["id"]), tuple(float(u) for u in d["unit"]), dict(d["values"]), dict(d.get("info", {})))


class Controller:
    """The contract every search controller keeps (as optuna's ``BaseSampler``), with numbering, the optional
    start point (asked first), history and random state.

    Subclasses implement :meth:`_propose` and, where they learn, :meth:`_observe`, :meth:`_state` and
    :meth:`_load`. The optional parts have defaults here, never ``hasattr`` checks at the caller:
    :meth:`constrain` (a predicate proposals must pass, e.g. a memory limit), :meth:`entropy` (nan where the
    controller has no policy), :meth:`best` and :meth:`derive` (a policy's own final proposals; none here).
    """

    name = "base"
    handles_start = False  # True where the controller itself schedules the start point

    def __init__(self, space: SearchSpace, seed: int = 0, start: Any = None) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.start = None if start is None else [float(v) for v in np.clip(np.asarray(start, dtype=float), 0, 1)]
        self.next_id = 0
        self.history: list[dict[str, Any]] = []
        self.accept: Callable[[dict[str, Any]], bool] | None = None  # see :meth:`constrain`

    def constrain(self, accept: Callable[[dict[str, Any]], bool] | None) -> Controller:
        """Proposals whose values ``accept`` refuses are drawn again, never asked (e.g. a memory limit). Returns self."""
        self.accept = accept
        return self

    def ask(self) -> Candidate:
        if self.next_id == 0 and self.start is not None and not self.handles_start:
            unit, info = np.asarray(self.start), {"start": True}
        else:
            unit, info = self._propose()
            tries = 1
            # ``accept`` (optional, e.g. a memory limit): proposals it refuses are drawn again, never asked
            while self.accept is not None and not self.accept(self.space.values(np.clip(np.asarray(unit, dtype=float), 0, 1))):
                if tries >= MAX_REDRAWS:
                    raise LeansegError(f"{MAX_REDRAWS} proposals in a row were refused (memory limit?); loosen the limit or the space.")
                unit, info = self._propose()
                tries += 1
        unit = np.clip(np.asarray(unit, dtype=float), 0.0, 1.0)
        c = Candidate(self.next_id, tuple(float(u) for u in unit), self.space.values(unit), info)
        self.next_id += 1
        return c

    def tell(self, candidate: Candidate, reward: float | None) -> None:
        r = None if reward is None or not np.isfinite(reward) else float(reward)
        self.history.append({"id": candidate.id, "unit": list(candidate.unit), "reward": r})
        self._observe(candidate, r)

    def best(self) -> dict[str, Any] | None:
        done = [h for h in self.history if h["reward"] is not None]
        return max(done, key=lambda h: h["reward"]) if done else None

    def entropy(self) -> float:
        """The entropy of the controller's policy in nats; nan for controllers without one."""
        return float("nan")

    def derive(self, k: int, seed: int = 0) -> list[np.ndarray]:
        """Unit-cube points the trained policy itself proposes as the final choice (ENAS: its most probable point and
        ``k`` samples); empty where the controller has no policy, and the caller keeps :meth:`best`."""
        return []

    # subclasses
    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def _observe(self, candidate: Candidate, reward: float | None) -> None:
        pass

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, d: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "next_id": self.next_id,
            "start": self.start,
            "history": self.history,
            "rng": self.rng.bit_generator.state,
            **self._state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("name") != self.name:
            raise ValueError(f"state of controller '{d.get('name')}' cannot be loaded into '{self.name}'")
        self.next_id = int(d["next_id"])
        self.start = d["start"]
        self.history = list(d["history"])
        self.rng.bit_generator.state = d["rng"]
        self._load(d)


def tensors_to_b64(obj: Any) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode()


def tensors_from_b64(s: str) -> Any:
    return torch.load(io.BytesIO(base64.b64decode(s)), weights_only=True)
