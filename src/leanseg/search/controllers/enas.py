"""The ENAS-style architecture controller (Pham et al. 2018; Bae et al., MICCAI 2019) behind the
strategy search's ask/tell contract.

An LSTM emits the decisions one after another: at step t its input is the embedding of the choice
made at step t-1 (each decision *type*, e.g. every ``dilation_*``, has its own embedding table),
and a softmax head per decision gives the probabilities of that decision's choices. It is trained
with REINFORCE on each child's reward against a moving-average baseline, with an entropy bonus
(the paper: Adam, learning rate 0.001, weight decay 1e-6, entropy weight 1e-4).

``start_prob`` (optional, with a start point) centres the initial policy on the start: each head
starts with zero weights and biases that give the start's choice probability ``start_prob`` and the
other choices equal shares, so the search explores around the paper's first child (the largest
patch with every operation and skip) instead of uniformly. Without it the heads start as
PyTorch initialises them: close to uniform.

It works on an :class:`~leanseg.models.nas_space.ArchitectureSpace` (categorical decisions) and,
for the shared contract test, on any unit-cube space, each coordinate cut into ``bins`` choices.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from leanseg.models.nas_space import ArchitectureSpace
from leanseg.search.controllers.base import CONTROLLERS, Candidate, Controller, tensors_from_b64, tensors_to_b64


def decision_type(name: str) -> str:
    """``dilation_2_1`` -> ``dilation``: decisions of one type share an embedding table."""
    return re.sub(r"(_\d+)+$", "", name)


class DecisionLSTM(nn.Module):
    """Shapes: a sequence of choice indices (T,) -> logits per step (list of (n_t,))."""

    def __init__(self, sizes: list[int], types: list[str], hidden: int = 64) -> None:
        super().__init__()
        self.sizes, self.types = sizes, types
        width = {t: max(n for n, tt in zip(sizes, types) if tt == t) for t in types}
        self.embed = nn.ModuleDict({t: nn.Embedding(n, hidden) for t, n in width.items()})
        self.start = nn.Parameter(torch.zeros(hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList([nn.Linear(hidden, n) for n in sizes])
        self.hidden = hidden

    def step_logits(self, choices: list[int] | None, rng: np.random.Generator | None = None) -> tuple[list[torch.Tensor], list[int]]:
        """Run the sequence; with ``choices`` None, sample each step from its softmax with ``rng``."""
        h = c = torch.zeros(1, self.hidden)
        x = self.start[None]
        logits, out = [], []
        for t, head in enumerate(self.heads):
            h, c = self.cell(x, (h, c))
            lg = head(h)[0]
            if choices is None:
                p = torch.softmax(lg.detach(), 0).double().numpy()
                k = int(rng.choice(len(p), p=p / p.sum()))  # type: ignore[union-attr]
            else:
                k = int(choices[t])
            logits.append(lg)
            out.append(k)
            x = self.embed[self.types[t]](torch.tensor([k]))
        return logits, out

    def log_prob_and_entropy(self, choices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = self.step_logits(choices)
        logp = torch.stack([torch.log_softmax(lg, 0)[k] for lg, k in zip(logits, choices)]).sum()
        ent = torch.stack([-(torch.softmax(lg, 0) * torch.log_softmax(lg, 0)).sum() for lg in logits]).sum()
        return logp, ent


@CONTROLLERS.register("enas")
class EnasController(Controller):
    name = "enas"

    def __init__(
        self,
        space: Any,
        seed: int = 0,
        start: Any = None,
        hidden: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        entropy_weight: float = 1e-4,
        baseline_decay: float = 0.95,
        bins: int = 10,
        start_prob: float | None = None,
    ) -> None:
        super().__init__(space, seed, start)
        if isinstance(space, ArchitectureSpace):
            sizes = [len(d.choices) for d in space.decisions]
            types = [decision_type(d.name) for d in space.decisions]
        else:
            sizes, types = [bins] * space.dim, [f"x{i}" for i in range(space.dim)]
        torch.manual_seed(seed)
        self.net = DecisionLSTM(sizes, types, hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.entropy_weight, self.decay = entropy_weight, baseline_decay
        self.baseline: float | None = None
        self.last: dict[str, float] = {}
        if start_prob is not None:
            if self.start is None:
                raise ValueError("start_prob needs a start point to centre the policy on")
            self.centre_on(self.choices_of(self.start), start_prob)

    def choices_of(self, unit: Any) -> list[int]:
        """The choice index each unit-cube coordinate falls in (equal-width bins, as ``Decision.index``)."""
        return [min(int(u * n), n - 1) for u, n in zip(unit, self.net.sizes)]

    def centre_on(self, choices: list[int], p: float) -> None:
        """Set every head so that, whatever the LSTM's state, ``choices[t]`` has probability ``p`` at step t."""
        if not all(1 / n < p < 1 for n in self.net.sizes if n > 1):
            raise ValueError(
                f"start_prob must lie above 1/choices and below 1 for every decision (choices: {sorted(set(self.net.sizes))}); got {p}"
            )
        with torch.no_grad():
            for head, k, n in zip(self.net.heads, choices, self.net.sizes):
                head.weight.zero_()
                if n == 1:  # a decision with one choice (e.g. a patch axis group too short to shrink)
                    head.bias.zero_()
                    continue
                bias = torch.full((n,), math.log((1 - p) / (n - 1)))
                bias[k] = math.log(p)
                head.bias.copy_(bias)

    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        with torch.no_grad():
            _, choices = self.net.step_logits(None, self.rng)
        return self.unit_of(choices), {"choices": choices}

    def _observe(self, candidate: Candidate, reward: float | None) -> None:
        if reward is None:
            return
        choices = candidate.info.get("choices") or self.choices_of(candidate.unit)
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline = self.decay * self.baseline + (1 - self.decay) * reward
        self.update(choices, advantage)

    def update(self, choices: list[int], advantage: float) -> dict[str, float]:
        """One REINFORCE step: loss = -advantage * log p(choices) - entropy_weight * entropy."""
        logp, ent = self.net.log_prob_and_entropy(choices)
        loss = -advantage * logp - self.entropy_weight * ent
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.last = {"loss": float(loss.detach()), "entropy": float(ent.detach()), "log_prob": float(logp.detach()), "advantage": advantage}
        return self.last

    def entropy(self) -> float:
        """Entropy of the current policy along its greedy sequence (what the paper's Figure 3 plots per episode)."""
        with torch.no_grad():
            logits, _ = self.net.step_logits(self.greedy())
            return float(sum(-(torch.softmax(lg, 0) * torch.log_softmax(lg, 0)).sum() for lg in logits))

    def derive(self, k: int, seed: int = 0) -> list[np.ndarray]:
        """ENAS's derivation candidates: the most probable architecture, then ``k`` drawn from the policy."""
        return [self.unit_of(c) for c in [self.greedy(), *self.sample(k, seed)]]

    def unit_of(self, choices: list[int]) -> np.ndarray:
        """The centre of each choice's bin in the unit cube (the inverse of :meth:`choices_of`)."""
        return np.array([(k + 0.5) / n for k, n in zip(choices, self.net.sizes)])

    def sample(self, k: int, seed: int = 0) -> list[list[int]]:
        """``k`` sequences drawn from the current policy with their own generator (the controller's state is untouched)."""
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            return [self.net.step_logits(None, rng)[1] for _ in range(k)]

    def greedy(self) -> list[int]:
        """The most probable sequence, decided step by step."""
        out: list[int] = []
        with torch.no_grad():
            h = c = torch.zeros(1, self.net.hidden)
            x = self.net.start[None]
            for t, head in enumerate(self.net.heads):
                h, c = self.net.cell(x, (h, c))
                k = int(torch.argmax(head(h)[0]))
                out.append(k)
                x = self.net.embed[self.net.types[t]](torch.tensor([k]))
        return out

    def _state(self) -> dict[str, Any]:
        return {"net": tensors_to_b64(self.net.state_dict()), "opt": tensors_to_b64(self.opt.state_dict()), "baseline": self.baseline}

    def _load(self, d: dict[str, Any]) -> None:
        self.net.load_state_dict(tensors_from_b64(d["net"]))
        self.opt.load_state_dict(tensors_from_b64(d["opt"]))
        self.baseline = d["baseline"]
