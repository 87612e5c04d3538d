"""``ppo``: Yang et al., "Searching Learning Strategy with Reinforcement Learning for 3D Medical Image
Segmentation" (MICCAI 2019): a recurrent cell whose input is the previous strategy and whose output is the
mean of a Gaussian over the next, trained with PPO's clipped objective (RMSprop, learning rate 0.1 as in the
paper) against a moving-average baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from leanseg.search.controllers.base import CONTROLLERS, Candidate, Controller, tensors_from_b64, tensors_to_b64
from leanseg.search.space import SearchSpace


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
        info = {
            "x": self.prev,
            "h": self.h,
            "c": self.c,
            "action": action.tolist(),
            "logp": logp,
            "mean": mean[0].tolist(),
            "std": std.tolist(),
        }
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
            "net": tensors_to_b64(self.net.state_dict()),
            "opt": tensors_to_b64(self.opt.state_dict()),
            "h": self.h,
            "c": self.c,
            "prev": self.prev,
            "baseline": self.baseline,
            "buffer": self.buffer,
            "updates": self.updates,
        }

    def _load(self, d: dict[str, Any]) -> None:
        self.net.load_state_dict(tensors_from_b64(d["net"]))
        self.opt.load_state_dict(tensors_from_b64(d["opt"]))
        self.h, self.c, self.prev, self.baseline = d["h"], d["c"], d["prev"], d["baseline"]
        self.buffer, self.updates = d["buffer"], d["updates"]
