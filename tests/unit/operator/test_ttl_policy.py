"""The TTL's pure decision, table-tested (docs/activity-and-ttl.md)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from codehub.crd_like.models import IdleAction
from codehub.operator.ttl_policy import (
    CHANGED_AT_ANNOTATION,
    NOTHING,
    SOURCE_ANNOTATION,
    Decision,
    SkipReason,
    TtlView,
    decide,
    idle_start,
    step_of,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def view(**kw: object) -> TtlView:
    base = TtlView(
        desired="RUNNING",
        observed="RUNNING",
        operation="NONE",
        has_error=False,
        deleting=False,
        open_connections=0,
        last_access_at=None,
        desired_changed_at=None,
        desired_source=None,
        standby_ttl=300,
        archive_ttl=86400,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def since(action: str, start: float, ttl: int) -> dict[str, object]:
    """An announcement stored by an earlier pass: the step applies since ``start``."""
    return {"idle_action": action, "idle_action_at": at(start + ttl)}


RUNNING_SINCE = since("standby", -1000, 300)  # RUNNING, announced, since at(-1000)

STATES = ("PENDING", "STANDBY", "RUNNING")
OBSERVED = (*STATES, "ERROR", "DELETED", None)


@pytest.mark.parametrize(("desired", "observed"), list(itertools.product(STATES, OBSERVED)))
def test_only_a_settled_running_or_standby_workspace_has_a_step(
    desired: str, observed: str | None
) -> None:
    v = view(desired=desired, observed=observed, **RUNNING_SINCE)
    settled: dict[tuple[str, str | None], tuple[IdleAction, int]] = {
        ("RUNNING", "RUNNING"): (IdleAction.STANDBY, 300),
        ("STANDBY", "STANDBY"): (IdleAction.ARCHIVE, 86400),
    }
    expected = settled.get((desired, observed))
    assert step_of(v) == expected
    if expected is None:
        assert decide(v, at(10**7)) == NOTHING


def test_a_workspace_being_deleted_has_no_step() -> None:
    assert step_of(view(deleting=True)) is None
    assert decide(view(deleting=True), at(10**7)) == NOTHING


def standby(at_: float) -> Decision:
    return Decision(next_action=IdleAction.STANDBY, next_at=at(at_))


def act_standby(at_: float) -> Decision:
    return Decision(act=IdleAction.STANDBY, next_action=IdleAction.STANDBY, next_at=at(at_))


# (name, view changes, now, expected decision)
STANDBY_TABLE: list[tuple[str, dict[str, object], float, Decision]] = [
    ("first seen settled: announced from now", {}, 0, standby(300)),
    (
        "first seen settled long after the last access (a slow start): from now",
        {"last_access_at": at(-5000), "desired_changed_at": at(-4000)},
        0,
        standby(300),
    ),
    ("announced earlier, not yet due", RUNNING_SINCE, -701, standby(-700)),
    ("announced earlier, due exactly at the TTL", RUNNING_SINCE, -700, act_standby(-700)),
    (
        "an announced time is never brought forward",
        {**since("standby", 0, 300), "last_access_at": at(-100)},
        299,
        standby(300),
    ),
    (
        "a later access moves it later",
        {**RUNNING_SINCE, "last_access_at": at(0)},
        299,
        standby(300),
    ),
    ("last access, due", {**RUNNING_SINCE, "last_access_at": at(0)}, 300, act_standby(300)),
    (
        "an open connection keeps it up",
        {**RUNNING_SINCE, "open_connections": 1, "last_access_at": at(0)},
        10**6,
        NOTHING,
    ),
    ("a standby TTL of 0 disables the step", {**RUNNING_SINCE, "standby_ttl": 0}, 10**6, NOTHING),
    (
        "due but an operation is in progress",
        {**RUNNING_SINCE, "operation": "STOPPING"},
        0,
        Decision(skipped=SkipReason.BUSY, next_action=IdleAction.STANDBY, next_at=at(-700)),
    ),
    (
        "due but an error is recorded",
        {**RUNNING_SINCE, "has_error": True},
        0,
        Decision(skipped=SkipReason.BUSY, next_action=IdleAction.STANDBY, next_at=at(-700)),
    ),
    (
        "a user's change after the idle period began wins",
        {
            **RUNNING_SINCE,
            "last_access_at": at(0),
            "desired_changed_at": at(100),
            "desired_source": "api",
        },
        350,
        Decision(skipped=SkipReason.USER_CHANGED, next_action=IdleAction.STANDBY, next_at=at(400)),
    ),
    (
        "an unlabelled change (absent source counts as api) moves the deadline too",
        {**RUNNING_SINCE, "last_access_at": at(0), "desired_changed_at": at(100)},
        400,
        act_standby(400),
    ),
    (
        "a user's change before the last access changes nothing",
        {
            **RUNNING_SINCE,
            "last_access_at": at(0),
            "desired_changed_at": at(-50),
            "desired_source": "user",
        },
        300,
        act_standby(300),
    ),
    (
        "the TTL's own change does not reset the idle period",
        {
            **RUNNING_SINCE,
            "last_access_at": at(0),
            "desired_changed_at": at(100),
            "desired_source": "ttl",
        },
        300,
        act_standby(300),
    ),
    (
        "a user's change and busy: the user wins first",
        {**RUNNING_SINCE, "desired_changed_at": at(0), "operation": "STARTING"},
        100,
        Decision(skipped=SkipReason.USER_CHANGED, next_action=IdleAction.STANDBY, next_at=at(300)),
    ),
    (
        "another step's announcement is no floor",
        {**since("archive", -1000, 300), "last_access_at": at(-5000)},
        0,
        standby(300),
    ),
]


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [row[1:] for row in STANDBY_TABLE],
    ids=[row[0] for row in STANDBY_TABLE],
)
def test_standby_step(changes: dict[str, object], now: float, expected: Decision) -> None:
    assert decide(view(**changes), at(now)) == expected


DAY = 86400
STANDBY_SINCE = since("archive", 0, DAY)


def archive(at_: float) -> Decision:
    return Decision(next_action=IdleAction.ARCHIVE, next_at=at(at_))


def act_archive(at_: float) -> Decision:
    return Decision(act=IdleAction.ARCHIVE, next_action=IdleAction.ARCHIVE, next_at=at(at_))


ARCHIVE_TABLE: list[tuple[str, dict[str, object], float, Decision]] = [
    (
        "since last access, not since it became STANDBY (first seen later)",
        {"last_access_at": at(0)},
        DAY,
        act_archive(DAY),
    ),
    ("since last access, not yet", {"last_access_at": at(0)}, DAY - 1, archive(DAY)),
    ("never accessed: since it became STANDBY", STANDBY_SINCE, DAY, act_archive(DAY)),
    ("never accessed, first seen STANDBY now", {}, 0, archive(DAY)),
    (
        "the TTL's own standby does not restart the archive clock",
        {"last_access_at": at(0), "desired_changed_at": at(300), "desired_source": "ttl"},
        DAY,
        act_archive(DAY),
    ),
    (
        "a user's stop restarts it",
        {"last_access_at": at(0), "desired_changed_at": at(300), "desired_source": "user"},
        DAY,
        Decision(
            skipped=SkipReason.USER_CHANGED, next_action=IdleAction.ARCHIVE, next_at=at(DAY + 300)
        ),
    ),
    (
        "open connections do not matter to the archive step",
        {"last_access_at": at(0), "open_connections": 2},
        DAY,
        act_archive(DAY),
    ),
    (
        "an archive TTL of 0 disables the step",
        {**STANDBY_SINCE, "archive_ttl": 0},
        10**8,
        NOTHING,
    ),
    (
        "due but busy",
        {**STANDBY_SINCE, "operation": "ARCHIVING"},
        DAY,
        Decision(skipped=SkipReason.BUSY, next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
    ),
]


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [row[1:] for row in ARCHIVE_TABLE],
    ids=[row[0] for row in ARCHIVE_TABLE],
)
def test_archive_step(changes: dict[str, object], now: float, expected: Decision) -> None:
    v = view(desired="STANDBY", observed="STANDBY", **changes)
    assert decide(v, at(now)) == expected


def test_the_start_is_the_latest_mark() -> None:
    v = view(**since("standby", -5000, 300), last_access_at=at(-10), desired_changed_at=at(-20))
    assert idle_start(v, IdleAction.STANDBY, 300, at(0)) == at(-10)
    assert idle_start(v, IdleAction.STANDBY, 300, at(0), with_user=False) == at(-10)
    assert idle_start(view(), IdleAction.STANDBY, 300, at(0)) == at(0)  # first seen


def test_view_of_reads_the_resource() -> None:
    obj = {
        "metadata": {
            "name": "w",
            "creationTimestamp": "2026-03-01T08:00:00Z",
            "annotations": {
                SOURCE_ANNOTATION: "ttl",
                CHANGED_AT_ANNOTATION: "2026-03-01T09:01:00Z",
            },
        },
        "spec": {"desired_state": "STANDBY", "standby_ttl_seconds": 5, "archive_ttl_seconds": 7},
        "status": {
            "observed_status": "STANDBY",
            "operation": "NONE",
            "open_connections": 3,
            "last_access_at": "2026-03-01T09:00:00Z",
            "observed_at": "2026-03-01T09:02:00Z",
            "error_info": None,
            "idle_action": "archive",
            "idle_action_at": "2026-03-02T09:00:00Z",
        },
    }
    v = TtlView.of(obj)
    assert v == TtlView(
        desired="STANDBY",
        observed="STANDBY",
        operation="NONE",
        has_error=False,
        deleting=False,
        open_connections=3,
        last_access_at=T0,
        desired_changed_at=at(60),
        desired_source="ttl",
        standby_ttl=5,
        archive_ttl=7,
        idle_action="archive",
        idle_action_at=at(86400),
    )
    assert not v.busy
    assert v.user_changed_at is None
    assert TtlView.of({"metadata": {"name": "x", "deletionTimestamp": "x"}}).busy
