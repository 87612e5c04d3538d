"""Training the AutoPath policy with REINFORCE while the segmentation model stays frozen.

Sun et al. 2020 (AutoPath), after BlockDrop (Wu et al. 2018):

* voxel-level reward: a correctly predicted voxel earns ``1 - (blocks used / N)^2``, a wrong one
  ``-tau``; an image's reward is the mean over its voxels. ``tau`` trades accuracy for compute.
  Background counts as correct there, so on small targets tau must be large; with
  ``autopath.reward = "dice"`` (ours, after the paper's VDC-based accuracy) the accuracy term is the
  image's mean foreground Dice instead, so tau need not grow with the background's share;
  With ``autopath.cost = "macs"`` (ours, not the paper's) "blocks used / N" becomes the share of the
  blocks' multiply-accumulates the path runs, so the policy learns what dropping each block saves
  (in the 3D ResNet-18 the last two blocks hold about 70% of them);
* self-critical baseline: the advantage of a sampled path is its reward minus the reward of the
  greedy path (drop where the probability exceeds 0.5) on the same image; with
  ``autopath.normalise`` it is divided by the spread of that image's rewards, so that images whose
  paths differ little still steer the policy;
* entropy bonus, drop probabilities bounded away from 0 and 1 (see :class:`PolicyNet`);
* curriculum: at stage c only the last c blocks are decided by the policy, the others are kept,
  until every block is decided.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from leanseg.config import AutoPathConfig
from leanseg.dynamic.policy import PolicyNet, build_policy
from leanseg.errors import LeansegError
from leanseg.metrics import dice_per_class


def voxel_reward(pred: torch.Tensor, target: torch.Tensor, used: torch.Tensor, total: float, tau: float) -> torch.Tensor:
    """Mean voxel reward per sample.

    Args:
        pred: (B, D, H, W) predicted labels.
        target: (D, H, W) or (B, D, H, W) true labels.
        used: (B,) cost of the path each sample ran: blocks run (the paper), or their multiply-accumulates.
        total: the cost of every block: N blocks, or all blocks' multiply-accumulates.
        tau: penalty of a wrong voxel.
    Returns:
        (B,) rewards: correct share * (1 - (used/total)^2) - tau * wrong share.
    """
    correct = (pred == target).flatten(1).float().mean(1)
    gain = 1.0 - (used.float() / total) ** 2
    return correct * gain - tau * (1.0 - correct)


def dice_reward(
    pred: torch.Tensor, target: torch.Tensor, used: torch.Tensor, total: float, tau: float, classes: Sequence[int]
) -> torch.Tensor:
    """(B,) rewards as :func:`voxel_reward`, with the image's mean foreground Dice over ``classes`` (a class empty in
    both counts as 1) as the accuracy: Dice * (1 - (used/total)^2) - tau * (1 - Dice)."""
    target = target.expand_as(pred).numpy()
    acc = torch.tensor(
        [float(np.mean([1.0 if np.isnan(d) else d for d in dice_per_class(p, target[i], classes)])) for i, p in enumerate(pred.numpy())]
    )
    gain = 1.0 - (used.float() / total) ** 2
    return acc * gain - tau * (1.0 - acc)


def path_reward(
    cfg: AutoPathConfig, pred: torch.Tensor, target: torch.Tensor, used: torch.Tensor, total: float, classes: Sequence[int]
) -> torch.Tensor:
    """(B,) rewards of ``autopath.reward``'s kind ("voxel" or "dice") at ``autopath.tau``."""
    if cfg.reward == "voxel":
        return voxel_reward(pred, target, used, total, cfg.tau)
    if cfg.reward == "dice":
        return dice_reward(pred, target, used, total, cfg.tau, classes)
    raise LeansegError(f"autopath.reward must be 'voxel' or 'dice', got {cfg.reward!r}; set autopath.reward=voxel or autopath.reward=dice.")


def advantages(rewards: torch.Tensor, k: int, normalise: bool) -> torch.Tensor:
    """(k,) advantages of one image's ``k`` sampled paths: reward minus the greedy path's (row ``k``); with
    ``normalise``, divided by the standard deviation of all k + 1 rewards."""
    adv = rewards[:k] - rewards[k]
    return adv / rewards.std(unbiased=False).clamp(min=1e-6) if normalise else adv


def block_costs(model: Any, cost: str, shape: tuple[int, ...]) -> torch.Tensor:
    """(N,) what running each gated block costs in the reward: 1 each (``"blocks"``, the paper), or its
    multiply-accumulates on an input of spatial ``shape`` (``"macs"``), scaled to sum to N."""
    n = model.num_gated_blocks
    if cost == "blocks":
        return torch.ones(n)
    if cost == "macs":
        macs = model.block_macs(shape).float()
        return macs * n / macs.sum()
    raise LeansegError(f"autopath.cost must be 'blocks' or 'macs', got {cost!r}; set autopath.cost=blocks or autopath.cost=macs.")


def curriculum_decided(step: int, stage_steps: int, num_blocks: int) -> torch.Tensor:
    """(N,) bool: the blocks the policy decides at ``step``; stage c = step // stage_steps + 1 decides the last c."""
    stage = min(num_blocks, step // max(stage_steps, 1) + 1)
    decided = torch.zeros(num_blocks, dtype=torch.bool)
    decided[num_blocks - stage :] = True
    return decided


def sample_actions(probs: torch.Tensor, decided: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Drop actions (B, N) in {0, 1} from Bernoulli(probs); undecided blocks are never dropped."""
    a = torch.bernoulli(probs.detach(), generator=generator)
    return a * decided.to(a.dtype)


def greedy_actions(probs: torch.Tensor, decided: torch.Tensor) -> torch.Tensor:
    return (probs.detach() > 0.5).to(probs.dtype) * decided.to(probs.dtype)


def policy_loss(
    probs: torch.Tensor, actions: torch.Tensor, decided: torch.Tensor, advantage: torch.Tensor, entropy_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE loss ``-mean(A * log pi(a)) - beta * mean entropy``, over the decided blocks only.

    Args:
        probs: (B, N) drop probabilities (with grad).
        actions: (B, N) sampled drop actions.
        decided: (N,) bool.
        advantage: (B,) reward minus baseline (no grad).
    Returns:
        (loss, mean entropy of the decided blocks).
    """
    d = decided.to(probs.dtype)
    logp = (actions * torch.log(probs) + (1 - actions) * torch.log1p(-probs)) * d
    ent = -(probs * torch.log(probs) + (1 - probs) * torch.log1p(-probs)) * d
    entropy = ent.sum(1) / d.sum().clamp(min=1)
    loss = -(advantage.detach() * logp.sum(1)).mean() - entropy_weight * entropy.mean()
    return loss, entropy.mean().detach()


def segment(model: Any, image: torch.Tensor, keep: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Labels (B, D, H, W) for one preprocessed image (C, D, H, W) run once per keep mask (B, N)."""
    from leanseg.nn.padding import pad_to_multiple

    xp, crop = pad_to_multiple(image[None].float(), model.divisor)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(xp.expand(keep.shape[0], -1, -1, -1, -1), keep)
    return logits[crop].argmax(1)


@dataclass
class PolicyTraining:
    policy: PolicyNet
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    restart_rewards: list[float] = field(default_factory=list)  # mean greedy reward on the training cases, per restart
    chosen_restart: int = 0
    block_costs: list[float] = field(default_factory=list)  # each block's cost in the reward (sums to N)


def greedy_reward(
    model: Any,
    policy: PolicyNet,
    cases: list[tuple[str, torch.Tensor, torch.Tensor]],
    cfg: AutoPathConfig,
    bf16: bool,
    costs: torch.Tensor | None = None,
) -> float:
    """Mean reward (``cfg``'s kind and tau) of the policy's greedy paths over ``cases`` (every block decided);
    ``costs`` per block as :func:`block_costs` (default 1 each)."""
    costs = torch.ones(model.num_gated_blocks) if costs is None else costs
    classes = foreground_classes(cases)
    rewards = []
    with torch.no_grad():
        for _, image, label in cases:
            keep = policy.choose(model, image[None])
            used = keep.float() @ costs
            rewards.append(float(path_reward(cfg, segment(model, image, keep, bf16), label, used, float(costs.sum()), classes)[0]))
    return float(np.mean(rewards))


def foreground_classes(cases: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[int]:
    """The labels other than 0 present in the cases' label maps."""
    return sorted({int(v) for _, _, label in cases for v in torch.unique(label).tolist()} - {0})


def train_policy(
    model: Any,
    cases: list[tuple[str, torch.Tensor, torch.Tensor]],
    cfg: AutoPathConfig,
    bf16: bool = False,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> PolicyTraining:
    """Train a policy for the frozen ``model`` on (case_id, image (C,D,H,W), label (D,H,W)) cases.

    Each update draws ``images_per_step`` images and ``samples_per_image`` paths per image, run in
    one batch with the greedy path (the baseline). With ``restarts`` > 1 the whole training (curriculum
    included) runs again from new seeds, the wall-clock budget shared equally, and the policy whose
    greedy paths earn the highest mean reward on the training cases is kept: the curriculum settles
    in local optima that one seed does not leave.
    """
    from leanseg.utils import set_threads

    set_threads(cfg.num_threads)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    restarts = max(1, cfg.restarts)
    budget_s = cfg.budget_minutes * 60 / restarts if cfg.budget_minutes else None
    costs = block_costs(model, cfg.cost, tuple(cases[0][1].shape[1:]))
    t0 = time.perf_counter()
    policies, history, rewards = [], [], []
    for r in range(restarts):
        policy, rows = _train_once(model, cases, cfg, costs, cfg.seed + r, budget_s, bf16, r, len(history), progress)
        policies.append(policy)
        history += rows
        rewards.append(greedy_reward(model, policy, cases, cfg, bf16, costs))
    best = int(np.argmax(rewards))
    return PolicyTraining(policies[best], history, time.perf_counter() - t0, rewards, best, costs.tolist())


def _train_once(
    model: Any,
    cases: list[tuple[str, torch.Tensor, torch.Tensor]],
    cfg: AutoPathConfig,
    costs: torch.Tensor,
    seed: int,
    budget_s: float | None,
    bf16: bool,
    restart: int,
    steps_before: int,
    progress: Callable[[int, dict[str, float]], None] | None,
) -> tuple[PolicyNet, list[dict[str, float]]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    n_blocks = model.num_gated_blocks
    k = max(1, cfg.samples_per_image)
    image0 = cases[0][1]
    seen = model.stem(image0[None].float()).shape[1] if cfg.policy_input == "stem" else image0.shape[0]
    policy = build_policy(seen, n_blocks, cfg)
    classes = foreground_classes(cases)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        if budget_s and time.perf_counter() - t0 > budget_s:
            break
        decided = curriculum_decided(step, cfg.stage_steps, n_blocks)
        losses, rewards, greedy_rewards, used, ents = [], [], [], [], []
        for i in rng.choice(len(cases), size=cfg.images_per_step, replace=len(cases) < cfg.images_per_step):
            _, image, label = cases[int(i)]
            probs = policy(policy.observe(model, image[None])).expand(k, -1)
            a, g = sample_actions(probs, decided, gen), greedy_actions(probs[:1], decided)
            keep = torch.cat([a, g]) < 0.5  # rows 0..k-1: sampled paths, row k: the greedy path
            r = path_reward(cfg, segment(model, image, keep, bf16), label, keep.float() @ costs, float(costs.sum()), classes)
            loss, ent = policy_loss(probs, a, decided, advantages(r, k, cfg.normalise), cfg.entropy_weight)
            losses.append(loss)
            rewards.append(float(r[:k].mean()))
            greedy_rewards.append(float(r[k]))
            used.append(float(keep[k].sum()))
            ents.append(float(ent))
        opt.zero_grad()
        torch.stack(losses).mean().backward()
        opt.step()
        row = {
            "step": step + 1,
            "restart": restart,
            "stage": int(decided.sum()),
            "reward": float(np.mean(rewards)),
            "greedy_reward": float(np.mean(greedy_rewards)),
            "greedy_blocks_used": float(np.mean(used)),
            "entropy": float(np.mean(ents)),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        if progress:
            progress(steps_before + step + 1, row)
    policy.eval()
    return policy, history
