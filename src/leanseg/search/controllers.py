"""Search controllers behind one ask/tell contract, as in optuna's ask-and-tell interface.

``ask() -> Candidate`` proposes a point of the unit cube (several may be pending at once, one per
parallel trial); ``tell(candidate, reward)`` reports its reward (``None``: the trial failed);
``state_dict()`` / ``load_state_dict()`` save and restore everything, random state included, as
JSON-able values, so a killed search resumes where it stopped.

Controllers (Yang et al., "Searching Learning Strategy with Reinforcement Learning for 3D Medical
Image Segmentation", MICCAI 2019, and its baselines):

* ``ppo``: a recurrent cell whose input is the previous strategy and whose output is the mean of a
  Gaussian over the next, trained with PPO's clipped objective (RMSprop, learning rate 0.1 as in
  the paper) against a moving-average baseline;
* ``hill``: discrete hill climbing, every coordinate moved by -0.01, 0 or +0.01 from the best point;
* ``hill-continuous``: Gaussian steps from the best point, the step times 1.1 after an improvement
  and divided by 1.1 otherwise;
* ``random``: uniform over the cube;
* ``tpe``: Optuna's Tree-structured Parzen Estimator, the reference most users would try.
"""

from __future__ import annotations

import base64
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

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
    """Base: numbering, the optional start point (asked first), history and random state."""

    name = "base"
    handles_start = False  # True where the controller itself schedules the start point

    def __init__(self, space: SearchSpace, seed: int = 0, start: Any = None) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.start = None if start is None else [float(v) for v in np.clip(np.asarray(start, dtype=float), 0, 1)]
        self.next_id = 0
        self.history: list[dict[str, Any]] = []
        self.accept: Any = None  # optional predicate on a proposal's values; refused ones are drawn again

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


@CONTROLLERS.register("random")
class RandomSearch(Controller):
    name = "random"

    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        return self.rng.random(self.space.dim), {}


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


def ppo_clip_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantage: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate, negated for minimisation: ``-mean(min(r A, clip(r, 1-e, 1+e) A))``, r = exp(new - old)."""
    ratio = torch.exp(logp_new - logp_old)
    return -torch.min(ratio * advantage, torch.clamp(ratio, 1 - clip, 1 + clip) * advantage).mean()


class StrategyRNN(nn.Module):
    """LSTM cell: previous strategy (D) -> mean of the next (D, sigmoid), with a learned log std."""

    def __init__(self, dim: int, hidden: int = 32, init_std: float = 0.1) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(dim, hidden)
        self.head = nn.Linear(hidden, dim)
        self.log_std = nn.Parameter(torch.full((dim,), float(np.log(init_std))))
        self.hidden = hidden

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, c = self.cell(x, (h, c))
        return torch.sigmoid(self.head(h)), h, c

    def log_prob(self, mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(mean, self.log_std.exp()).log_prob(action).sum(-1)


def _to_b64(obj: Any) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode()


def _from_b64(s: str) -> Any:
    return torch.load(io.BytesIO(base64.b64decode(s)), weights_only=True)


@CONTROLLERS.register("ppo")
class PPOController(Controller):
    """Yang et al. 2019's controller: an RNN over strategies trained with PPO.

    The cell's input at ask t is the strategy asked at t-1 and its state is carried from ask to ask;
    a proposal is the Gaussian sample around the cell's output (clipped to the cube). After every
    ``update_every`` rewarded proposals, ``epochs`` PPO steps on the clipped objective update the
    cell, with advantages against an exponential moving-average baseline. The update recomputes each
    proposal's log-probability from the input and cell state it was made with (one-step truncated
    back-propagation through time).
    """

    name = "ppo"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        start: Any = None,
        lr: float = 0.1,
        hidden: int = 32,
        init_std: float = 0.1,
        clip: float = 0.2,
        epochs: int = 4,
        update_every: int = 4,
        baseline_decay: float = 0.9,
    ) -> None:
        super().__init__(space, seed, start)
        torch.manual_seed(seed)
        self.net = StrategyRNN(space.dim, hidden, init_std)
        self.opt = torch.optim.RMSprop(self.net.parameters(), lr=lr)
        self.clip, self.epochs, self.update_every, self.decay = clip, epochs, update_every, baseline_decay
        self.h = [0.0] * hidden
        self.c = [0.0] * hidden
        self.prev = list(self.start) if self.start is not None else [0.5] * space.dim
        self.baseline: float | None = None
        self.buffer: list[dict[str, Any]] = []
        self.updates = 0

    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        x, h, c = (torch.tensor([v], dtype=torch.float32) for v in (self.prev, self.h, self.c))
        with torch.no_grad():
            mean, h2, c2 = self.net(x, h, c)
            std = self.net.log_std.exp()
            action = mean[0] + std * torch.from_numpy(self.rng.standard_normal(self.space.dim)).float()
            logp = float(self.net.log_prob(mean[0], action))
        info = {"x": self.prev, "h": self.h, "c": self.c, "action": action.tolist(), "logp": logp}
        self.h, self.c = h2[0].tolist(), c2[0].tolist()
        self.prev = [float(v) for v in np.clip(action.numpy(), 0, 1)]
        return action.numpy(), info

    def _observe(self, candidate: Candidate, reward: float | None) -> None:
        if reward is None:
            return
        if self.baseline is None:
            self.baseline = reward
            advantage = 0.0
        else:
            advantage = reward - self.baseline
            self.baseline = self.decay * self.baseline + (1 - self.decay) * reward
        if "logp" in candidate.info:
            self.buffer.append({**candidate.info, "advantage": advantage})
        if len(self.buffer) >= self.update_every:
            self.update()

    def update(self) -> float:
        """PPO epochs on the buffered proposals; returns the last loss."""
        b = self.buffer
        x = torch.tensor([e["x"] for e in b], dtype=torch.float32)
        h = torch.tensor([e["h"] for e in b], dtype=torch.float32)
        c = torch.tensor([e["c"] for e in b], dtype=torch.float32)
        action = torch.tensor([e["action"] for e in b], dtype=torch.float32)
        old = torch.tensor([e["logp"] for e in b], dtype=torch.float32)
        adv = torch.tensor([e["advantage"] for e in b], dtype=torch.float32)
        if len(b) > 1 and adv.std() > 0:
            adv = (adv - adv.mean()) / adv.std()
        loss = torch.zeros(())
        for _ in range(self.epochs):
            mean, _, _ = self.net(x, h, c)
            loss = ppo_clip_loss(self.net.log_prob(mean, action), old, adv, self.clip)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self.buffer = []
        self.updates += 1
        return float(loss.detach())

    def _state(self) -> dict[str, Any]:
        return {
            "net": _to_b64(self.net.state_dict()),
            "opt": _to_b64(self.opt.state_dict()),
            "h": self.h,
            "c": self.c,
            "prev": self.prev,
            "baseline": self.baseline,
            "buffer": self.buffer,
            "updates": self.updates,
        }

    def _load(self, d: dict[str, Any]) -> None:
        self.net.load_state_dict(_from_b64(d["net"]))
        self.opt.load_state_dict(_from_b64(d["opt"]))
        self.h, self.c, self.prev, self.baseline = d["h"], d["c"], d["prev"], d["baseline"]
        self.buffer, self.updates = d["buffer"], d["updates"]


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


def make_controller(name: str, space: SearchSpace, seed: int = 0, start: Any = None, **options: Any) -> Controller:
    return CONTROLLERS.create(name, space, seed=seed, start=start, **options)


from leanseg.search import enas as _enas  # noqa: E402,F401  (registers "enas"; it builds on the classes above)
