"""The per-image oracle against the best fixed path, on tables worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanseg.dynamic.headroom import (
    best_fixed,
    crossfit_by_level,
    mixed_fixed,
    oracle_at,
    oracle_by_level,
    oracle_frontier,
    sweep_table,
    upper_hull,
)

# masks x cases: two half-cost masks that suit different cases, and the full network
DICE = np.array([[0.9, 0.5], [0.5, 0.9], [0.95, 0.95]])
COST = np.array([1.0, 1.0, 2.0])


def test_oracle_picks_each_cases_best_mask_at_one_level() -> None:
    level = oracle_by_level(DICE, COST)
    assert level[1.0] == {"masks": 2, "fixed": pytest.approx(0.7), "oracle": pytest.approx(0.9), "headroom": pytest.approx(0.2)}
    assert level[2.0]["headroom"] == pytest.approx(0.0)  # one mask: nothing to choose


def test_alike_cases_leave_no_headroom() -> None:
    alike = np.array([[0.8, 0.8], [0.6, 0.6]])  # one mask best on every case
    assert oracle_by_level(alike, np.array([1.0, 1.0]))[1.0]["headroom"] == pytest.approx(0.0)


def test_best_fixed_respects_the_budget() -> None:
    assert best_fixed(DICE, COST, 1.5) == (0, pytest.approx(0.7))
    assert best_fixed(DICE, COST, 2.0) == (2, pytest.approx(0.95))
    row, value = best_fixed(DICE, COST, 0.5)
    assert row == -1 and math.isnan(value)


def test_frontier_compares_at_equal_mean_cost() -> None:
    # a price of 0 takes the full network everywhere; a high price the cheap mask that suits each case
    points = {p["price"]: p for p in oracle_frontier(DICE, COST, prices=[0.0, 1.0])}
    assert points[0.0]["mean_cost"] == 2.0 and points[0.0]["headroom"] == pytest.approx(0.0)
    cheap = points[1.0]
    assert cheap["mean_cost"] == 1.0 and cheap["oracle"] == pytest.approx(0.9) and cheap["fixed"] == pytest.approx(0.7)
    assert cheap["distinct_costs"] == 1 and cheap["fixed_mask"] == 0
    mixed = oracle_frontier(np.array([[0.9, 0.5], [0.95, 0.95]]), np.array([1.0, 2.0]), prices=[0.1])[0]
    assert mixed["mean_cost"] == 1.5 and mixed["distinct_costs"] == 2
    assert mixed["oracle"] == pytest.approx((0.9 + 0.95) / 2) and mixed["fixed"] == pytest.approx(0.7)


def test_sweep_table_reads_the_sweeps_rows() -> None:
    rows = [{"per_case": {"a": 0.9, "b": 0.5}}, {"per_case": {"b": 0.9, "a": 0.5}}]
    table, cases = sweep_table(rows)
    assert cases == ["a", "b"] and table.tolist() == [[0.9, 0.5], [0.5, 0.9]]


def test_upper_hull_keeps_only_the_concave_envelope() -> None:
    xs, ys = upper_hull([0, 1, 1, 2, 3], [0.0, 0.2, 0.6, 0.7, 1.2])
    assert xs.tolist() == [0, 1, 3] and ys.tolist() == pytest.approx([0.0, 0.6, 1.2])  # (2, 0.7) lies under the chord


def test_mixed_fixed_paths_interpolate_between_levels_and_never_fall_with_cost() -> None:
    # at a mean cost of 1.5, half the images on the best cost-1 mask and half on the full network
    assert mixed_fixed(DICE, COST, 1.5) == pytest.approx((0.7 + 0.95) / 2)
    assert mixed_fixed(DICE, COST, 1.0) == pytest.approx(0.7) and math.isnan(mixed_fixed(DICE, COST, 0.5))
    worse_full = np.array([[0.9, 0.9], [0.5, 0.5]])
    assert mixed_fixed(worse_full, COST[1:], 2.0) == pytest.approx(0.9)  # a costlier, worse mask is not forced on anyone


def test_oracle_at_a_mean_cost_bounds_every_choice_of_that_cost() -> None:
    assert oracle_at(DICE, COST, 1.0) == pytest.approx(0.9)
    assert oracle_at(DICE, COST, 2.0) == pytest.approx(0.95)
    rng = np.random.default_rng(0)
    dice, cost = rng.random((6, 5)), np.array([0.0, 1, 1, 2, 2, 3])
    for _ in range(20):  # any per-case choice of mean cost c scores at most the oracle at c
        pick = rng.integers(0, 6, size=5)
        assert dice[pick, np.arange(5)].mean() <= oracle_at(dice, cost, cost[pick].mean()) + 1e-9
        assert mixed_fixed(dice, cost, cost[pick].mean()) <= oracle_at(dice, cost, cost[pick].mean()) + 1e-9


def test_crossfit_keeps_an_image_property_and_drops_selection_noise() -> None:
    # masks x cases x classes at one level. Case 0 wants mask 0 and case 1 mask 1 in both classes: an image property.
    real = np.array([[[0.9, 0.9], [0.5, 0.5]], [[0.5, 0.5], [0.9, 0.9]]])
    level = crossfit_by_level(real, np.array([1.0, 1.0]))[1.0]
    assert level["gain"] == pytest.approx(0.2) and level["fixed"] == pytest.approx(0.7)
    # The best mask of one class is the worst of the other: the in-sample oracle gains, the cross-fitted one loses.
    noise = np.array([[[0.9, 0.5], [0.5, 0.9]], [[0.5, 0.9], [0.9, 0.5]]])
    assert oracle_by_level(noise[..., 0], np.array([1.0, 1.0]))[1.0]["headroom"] == pytest.approx(0.2)
    assert crossfit_by_level(noise, np.array([1.0, 1.0]))[1.0]["gain"] == pytest.approx(-0.2)


def test_crossfit_skips_a_class_empty_in_both_and_needs_two_classes() -> None:
    d = np.array([[[0.9, np.nan], [0.5, 0.6]], [[0.5, np.nan], [0.9, 0.8]]])  # class 1 empty on case 0
    level = crossfit_by_level(d, np.array([1.0, 1.0]))[1.0]
    assert np.isfinite([level["fixed"], level["crossfit"]]).all()
    assert crossfit_by_level(d[..., :1], np.array([1.0, 1.0])) == {}
