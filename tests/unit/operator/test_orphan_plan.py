"""The orphan sweeper's pure decision, table-tested (operator/orphan_plan.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from codehub.adapters.engine_objects import LabelledObject, is_ours
from codehub.operator.orphan_plan import decide, object_key

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DELAY = timedelta(minutes=10)

CONTAINER = LabelledObject("container", "gone", "c1", "ws-gone")
JOB = LabelledObject("job", "gone", "j1", "ws-gone-job")
VOLUME = LabelledObject("volume", "gone", "ws-gone-home", "ws-gone-home")
LIVE = LabelledObject("container", "alive", "c2", "ws-alive")


@pytest.mark.parametrize(
    ("objects", "live", "seen", "remove", "waiting"),
    [
        pytest.param([LIVE], {"alive"}, {}, [], [], id="live object untouched"),
        pytest.param([CONTAINER], set(), {}, [], [CONTAINER], id="first sight: only marked"),
        pytest.param(
            [CONTAINER],
            set(),
            {"container/c1": NOW - DELAY / 2},
            [],
            [CONTAINER],
            id="inside the delay: waits",
        ),
        pytest.param(
            [CONTAINER],
            set(),
            {"container/c1": NOW - DELAY},
            [CONTAINER],
            [],
            id="delay reached: removed",
        ),
        pytest.param(
            [VOLUME, CONTAINER, JOB],
            set(),
            {object_key(o): NOW - 2 * DELAY for o in (VOLUME, CONTAINER, JOB)},
            [JOB, CONTAINER, VOLUME],
            [],
            id="jobs and containers before the volume",
        ),
        pytest.param(
            [LIVE],
            {"alive"},
            {"container/c2": NOW - 5 * DELAY},
            [],
            [],
            id="workspace back: forgotten, never removed",
        ),
    ],
)
def test_decide(
    objects: list[LabelledObject],
    live: set[str],
    seen: dict[str, datetime],
    remove: list[LabelledObject],
    waiting: list[LabelledObject],
) -> None:
    decision = decide(objects, live, seen, NOW, DELAY)
    assert decision.to_remove == remove
    assert decision.waiting == waiting
    assert set(decision.first_seen) == {object_key(o) for o in [*remove, *waiting]}
    assert decision.live == sum(1 for o in objects if o.uid in live)


def test_first_seen_kept_and_new_marked_now() -> None:
    old = NOW - DELAY / 3
    decision = decide([CONTAINER, VOLUME], set(), {"container/c1": old}, NOW, DELAY)
    assert decision.first_seen == {"container/c1": old, "volume/ws-gone-home": NOW}


def test_zero_delay_still_needs_two_passes() -> None:
    first = decide([CONTAINER], set(), {}, NOW, timedelta(0))
    assert first.to_remove == []
    second = decide([CONTAINER], set(), first.first_seen, NOW, timedelta(0))
    assert second.to_remove == [CONTAINER]


@pytest.mark.parametrize(
    ("labels", "scope", "ours"),
    [
        ({"codehub.io/workspace-id": "u"}, {}, True),
        (
            {"codehub.io/workspace-id": "u", "codehub.io/test-run": "a"},
            {"codehub.io/test-run": "a"},
            True,
        ),
        (
            {"codehub.io/workspace-id": "u", "codehub.io/test-run": "b"},
            {"codehub.io/test-run": "a"},
            False,
        ),
        ({"codehub.io/workspace-id": "u", "codehub.io/test-run": "b"}, {}, False),
        ({"codehub.io/workspace-id": "u"}, {"codehub.io/test-run": "a"}, False),
        ({"org.opencontainers.image.title": "x", "codehub.io/workspace-id": "u"}, {}, True),
        ({"codehub.io/role": "workspace"}, {}, False),
        ({"codehub.io/input-hash": "h", "codehub.io/workspace-id": "u"}, {}, True),
        ({}, {}, False),
    ],
)
def test_is_ours(labels: dict[str, str], scope: dict[str, str], ours: bool) -> None:
    assert is_ours(labels, scope) is ours
