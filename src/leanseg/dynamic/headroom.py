"""What any per-image policy could gain over the best fixed path: the per-image oracle (issue 26's headroom).

Pure functions of a table ``dice`` (masks x cases: each keep mask's Dice on each case) and ``cost`` (one per
mask: blocks used, or the share of multiply-accumulates run). A policy chooses one mask per case; the oracle
chooses each case's best. Compared at the same mean cost, the oracle's gain over the best single fixed mask
bounds what a policy can gain on that data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def best_fixed(dice: np.ndarray, cost: np.ndarray, budget: float) -> tuple[int, float]:
    """The single mask of highest mean Dice whose cost is at most ``budget``: (its row, its mean Dice);
    (-1, nan) where none fits."""
    means = np.where(np.asarray(cost) <= budget + 1e-9, np.asarray(dice).mean(1), -np.inf)
    row = int(np.argmax(means))
    return (row, float(means[row])) if np.isfinite(means[row]) else (-1, float("nan"))


def oracle_by_level(dice: np.ndarray, cost: np.ndarray) -> dict[float, dict[str, float]]:
    """At each cost level (masks of equal cost): the best fixed mask's mean Dice, the oracle's (each case's best
    mask of that level), and the headroom between them."""
    dice, cost = np.asarray(dice, dtype=float), np.asarray(cost, dtype=float)
    out = {}
    for level in np.unique(cost):
        rows = dice[cost == level]
        fixed, oracle = float(rows.mean(1).max()), float(rows.max(0).mean())
        out[float(level)] = {"masks": int(len(rows)), "fixed": fixed, "oracle": oracle, "headroom": oracle - fixed}
    return out


def oracle_frontier(dice: np.ndarray, cost: np.ndarray, prices: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The oracle when cases may differ in cost: at each ``price`` every case takes the mask maximising
    Dice - price x cost. Each point (mean cost, mean Dice) is set beside the best fixed mask of at most that mean
    cost, and the headroom between them. Prices default to a sweep from 0 to the largest Dice spread per unit cost."""
    dice, cost = np.asarray(dice, dtype=float), np.asarray(cost, dtype=float)
    if prices is None:
        span = max(float(np.ptp(cost)), 1e-9)
        prices = np.linspace(0.0, 2 * float(np.ptp(dice)) / span, 41)
    points = []
    for price in prices:
        pick = np.argmax(dice - price * cost[:, None], axis=0)  # per case
        mean_cost = float(cost[pick].mean())
        oracle = float(dice[pick, np.arange(dice.shape[1])].mean())
        row, fixed = best_fixed(dice, cost, mean_cost)
        points.append(
            {
                "price": float(price),
                "mean_cost": mean_cost,
                "oracle": oracle,
                "fixed": fixed,
                "fixed_mask": row,
                "headroom": oracle - fixed,
                "distinct_costs": int(len(np.unique(cost[pick]))),
            }
        )
    return points


def sweep_table(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """The (masks x cases) Dice table of :func:`leanseg.dynamic.evaluate.sweep_strategies` rows, and the case ids."""
    cases = list(rows[0]["per_case"])
    return np.asarray([[r["per_case"][c] for c in cases] for r in rows], dtype=float), cases
