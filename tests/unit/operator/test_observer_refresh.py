"""The observed_at refresh decisions (docs/observation.md#what-observed_at-means), pure."""

from __future__ import annotations

import pytest

from codehub.operator.observer import MIN_REFRESHES_PER_PASS, due_refreshes, refresh_budget


@pytest.mark.parametrize(
    ("workspaces", "interval", "period", "budget"),
    [
        (0, 30, 3600, MIN_REFRESHES_PER_PASS),
        (100, 30, 3600, MIN_REFRESHES_PER_PASS),  # 2 * 0.83 per pass: the floor
        (10_000, 30, 3600, 167),  # steady 83.3 per pass, twice that to drain a backlog
        (10_000, 5, 3600, 28),
        (1_000_000, 30, 3600, 16_667),
        (10_000, 0, 3600, MIN_REFRESHES_PER_PASS),
    ],
)
def test_refresh_budget(workspaces: int, interval: float, period: float, budget: int) -> None:
    assert refresh_budget(workspaces, interval, period) == budget


@pytest.mark.parametrize(
    ("ages", "period", "budget", "due"),
    [
        ({}, 60, 10, set()),
        ({"a": 59.9, "b": 60, "c": 61}, 60, 10, {"b", "c"}),  # at the period is due
        ({"a": 100, "b": 300, "c": 200, "d": 10}, 60, 2, {"b", "c"}),  # oldest first
        ({"a": 100, "b": 300}, 60, 0, set()),
        ({"a": 100, "b": 300}, 60, -1, set()),
    ],
)
def test_due_refreshes(ages: dict[str, float], period: float, budget: int, due: set[str]) -> None:
    assert due_refreshes(ages, period, budget) == due
