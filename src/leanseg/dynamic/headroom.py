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


def upper_hull(cost: Sequence[float], value: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The upper concave envelope of the points (cost, value), as its vertices (costs increasing, values)."""
    cost, value = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    hull: list[tuple[float, float]] = []
    for i in np.lexsort((-value, cost)):  # by cost; at equal cost the best value first
        x, y = cost[i], value[i]
        if hull and x == hull[-1][0]:
            continue
        # drop the last vertex while it lies on or under the chord from the one before it to (x, y)
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (x - hull[-2][0]) <= (y - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append((x, y))
    return np.array([h[0] for h in hull]), np.array([h[1] for h in hull])


def mixed_fixed(dice: np.ndarray, cost: np.ndarray, mean_cost: float) -> float:
    """The best mean Dice that fixed paths reach at a mean cost of at most ``mean_cost``: images given one of two
    fixed masks in set shares, without looking at them (the concave envelope of the masks' (cost, mean Dice),
    never decreasing in cost). The fair match for a policy whose mean cost falls between two levels."""
    xs, ys = upper_hull(np.asarray(cost, dtype=float), np.asarray(dice, dtype=float).mean(1))
    ys = np.maximum.accumulate(ys)
    return float(np.interp(mean_cost, xs, ys)) if mean_cost >= xs[0] else float("nan")


def oracle_at(dice: np.ndarray, cost: np.ndarray, mean_cost: float) -> float:
    """The per-image oracle's mean Dice at a mean cost of at most ``mean_cost``, read off the envelope of
    :func:`oracle_frontier`'s points (a dense price sweep)."""
    dice, cost = np.asarray(dice, dtype=float), np.asarray(cost, dtype=float)
    span = max(float(np.ptp(cost)), 1e-9)
    pts = oracle_frontier(dice, cost, np.linspace(0.0, 4 * float(np.ptp(dice)) / span, 401))
    xs, ys = upper_hull([p["mean_cost"] for p in pts], [p["oracle"] for p in pts])
    return float(np.interp(mean_cost, xs, np.maximum.accumulate(ys))) if mean_cost >= xs[0] else float("nan")


def crossfit_by_level(by_class: np.ndarray, cost: np.ndarray) -> dict[float, dict[str, float]]:
    """How much of the oracle's headroom is a property of the image rather than noise: at each cost level, each
    image's mask is chosen on one foreground class's Dice and scored on another's, against the fixed mask chosen
    and scored the same way. ``by_class`` is (masks x cases x classes; nan where a class is empty in both).

    What makes an image need more blocks (its quality, its contrast) reaches every structure in it; the chance
    that one mask happens to outline one structure best does not. A cross-fitted gain near zero while the in-sample
    headroom is large says the headroom is selection noise that no policy can learn. Mean over ordered class pairs;
    empty (``{}``) with fewer than two classes."""
    d, cost = np.asarray(by_class, dtype=float), np.asarray(cost, dtype=float)
    pairs = [(a, b) for a in range(d.shape[2]) for b in range(d.shape[2]) if a != b]
    if not pairs:
        return {}
    out = {}
    for level in np.unique(cost):
        rows = d[cost == level]
        fixed, crossfit = [], []
        for a, b in pairs:
            choose, score = np.nan_to_num(rows[..., a], nan=-np.inf), rows[..., b]
            per_image = np.argmax(choose, axis=0)
            crossfit.append(np.nanmean(score[per_image, np.arange(score.shape[1])]))
            fixed.append(np.nanmean(score[int(np.argmax(np.nanmean(rows[..., a], axis=1)))]))
        out[float(level)] = {
            "fixed": float(np.mean(fixed)),
            "crossfit": float(np.mean(crossfit)),
            "gain": float(np.mean(crossfit) - np.mean(fixed)),
        }
    return out
