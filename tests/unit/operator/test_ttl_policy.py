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
        observed_at=at(-1000),
        created_at=at(-2000),
        desired_changed_at=None,
        desired_source=None,
        standby_ttl=300,
        archive_ttl=86400,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


STATES = ("PENDING", "STANDBY", "RUNNING")
OBSERVED = (*STATES, "ERROR", "DELETED", None)


@pytest.mark.parametrize(("desired", "observed"), list(itertools.product(STATES, OBSERVED)))
def test_only_a_settled_running_or_standby_workspace_has_a_step(
    desired: str, observed: str | None
) -> None:
    v = view(desired=desired, observed=observed)
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


# (name, view changes, now, expected decision)
STANDBY_TABLE: list[tuple[str, dict[str, object], float, Decision]] = [
    (
        "idle since it became RUNNING, not yet due",
        {},
        -701,
        Decision(next_action=IdleAction.STANDBY, next_at=at(-700)),
    ),
    (
        "idle since it became RUNNING, due exactly at the TTL",
        {},
        -700,
        Decision(act=IdleAction.STANDBY, next_action=IdleAction.STANDBY, next_at=at(-700)),
    ),
    (
        "last access later than RUNNING counts",
        {"last_access_at": at(0)},
        299,
        Decision(next_action=IdleAction.STANDBY, next_at=at(300)),
    ),
    (
        "last access, due",
        {"last_access_at": at(0)},
        300,
        Decision(act=IdleAction.STANDBY, next_action=IdleAction.STANDBY, next_at=at(300)),
    ),
    (
        "an open connection keeps it up",
        {"open_connections": 1, "last_access_at": at(0)},
        10**6,
        NOTHING,
    ),
    ("a standby TTL of 0 disables the step", {"standby_ttl": 0}, 10**6, NOTHING),
    (
        "due but an operation is in progress",
        {"operation": "STOPPING"},
        0,
        Decision(skipped=SkipReason.BUSY, next_action=IdleAction.STANDBY, next_at=at(-700)),
    ),
    (
        "due but an error is recorded",
        {"has_error": True},
        0,
        Decision(skipped=SkipReason.BUSY, next_action=IdleAction.STANDBY, next_at=at(-700)),
    ),
    (
        "a user's change after the idle period began wins",
        {"last_access_at": at(0), "desired_changed_at": at(100), "desired_source": "api"},
        350,
        Decision(skipped=SkipReason.USER_CHANGED, next_action=IdleAction.STANDBY, next_at=at(400)),
    ),
    (
        "an unlabelled change (absent source counts as api) moves the deadline too",
        {"last_access_at": at(0), "desired_changed_at": at(100)},
        400,
        Decision(act=IdleAction.STANDBY, next_action=IdleAction.STANDBY, next_at=at(400)),
    ),
    (
        "a user's change before the last access changes nothing",
        {"last_access_at": at(0), "desired_changed_at": at(-50), "desired_source": "user"},
        300,
        Decision(act=IdleAction.STANDBY, next_action=IdleAction.STANDBY, next_at=at(300)),
    ),
    (
        "the TTL's own change does not reset the idle period",
        {"last_access_at": at(0), "desired_changed_at": at(100), "desired_source": "ttl"},
        300,
        Decision(act=IdleAction.STANDBY, next_action=IdleAction.STANDBY, next_at=at(300)),
    ),
    (
        "a user's change and busy: the user wins first",
        {"desired_changed_at": at(0), "operation": "STARTING"},
        100,
        Decision(skipped=SkipReason.USER_CHANGED, next_action=IdleAction.STANDBY, next_at=at(300)),
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
ARCHIVE_TABLE: list[tuple[str, dict[str, object], float, Decision]] = [
    (
        "since last access (not since it became STANDBY)",
        {"last_access_at": at(0), "observed_at": at(300)},
        DAY,
        Decision(act=IdleAction.ARCHIVE, next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
    ),
    (
        "since last access, not yet",
        {"last_access_at": at(0), "observed_at": at(300)},
        DAY - 1,
        Decision(next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
    ),
    (
        "never accessed: since it became STANDBY",
        {"observed_at": at(0)},
        DAY,
        Decision(act=IdleAction.ARCHIVE, next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
    ),
    (
        "never accessed, never observed: since creation",
        {"observed_at": None, "created_at": at(0)},
        DAY,
        Decision(act=IdleAction.ARCHIVE, next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
    ),
    (
        "the TTL's own standby does not restart the archive clock",
        {"last_access_at": at(0), "desired_changed_at": at(300), "desired_source": "ttl"},
        DAY,
        Decision(act=IdleAction.ARCHIVE, next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
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
        Decision(act=IdleAction.ARCHIVE, next_action=IdleAction.ARCHIVE, next_at=at(DAY)),
    ),
    (
        "an archive TTL of 0 disables the step",
        {"archive_ttl": 0, "observed_at": at(0)},
        10**8,
        NOTHING,
    ),
    (
        "due but busy",
        {"observed_at": at(0), "operation": "ARCHIVING"},
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


def test_nothing_known_about_time_means_no_action() -> None:
    v = view(observed_at=None, created_at=None)
    assert idle_start(v, IdleAction.STANDBY) is None
    assert decide(v, at(10**8)) == NOTHING


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
        observed_at=at(120),
        created_at=at(-3600),
        desired_changed_at=at(60),
        desired_source="ttl",
        standby_ttl=5,
        archive_ttl=7,
    )
    assert not v.busy
    assert v.user_changed_at is None
    assert TtlView.of({"metadata": {"name": "x", "deletionTimestamp": "x"}}).busy
