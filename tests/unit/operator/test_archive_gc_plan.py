"""The Archive GC's pure decisions (docs/archive-gc.md), table-tested."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codehub.adapters.interfaces import ObjectInfo
from codehub.operator.archive_gc_plan import Protection, decide

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
DELAY = timedelta(hours=2)


def ws(uid: str, op_id: str | None = None, archive_key: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if op_id:
        status["op_id"] = op_id
    if archive_key:
        status["archive_key"] = archive_key
    return {"metadata": {"uid": uid, "name": uid, "namespace": "n"}, "status": status}


def protection(*objs: dict[str, Any]) -> Protection:
    p = Protection()
    for obj in objs:
        p.add_workspace(obj)
    return p


LIVE = protection(
    ws("u1", op_id="op3", archive_key="archives/u1/op2/home.tar.gz"),
    # ERROR is just another live workspace: the protected set ignores observed_status.
    {
        **ws("u2", archive_key="archives/u2/op1/home.tar.gz"),
        "status": {"archive_key": "archives/u2/op1/home.tar.gz", "observed_status": "ERROR"},
    },
)


@pytest.mark.parametrize(
    ("key", "protected"),
    [
        ("archives/u1/op2/home.tar.gz", True),  # the archive_key
        ("archives/u1/op2/home.tar.gz.meta", True),  # and its checksum
        ("archives/u1/op2/other", False),  # not the key, and op2 is not the current op
        ("archives/u1/op3/home.tar.gz", True),  # the current op's folder (upload in flight)
        ("archives/u1/op3/part/deeper", False),  # only the folder itself, not sub-folders
        ("archives/u1/op1/home.tar.gz", False),  # an older archive
        ("archives/u1/op1/home.tar.gz.meta", False),
        ("archives/u2/op1/home.tar.gz", True),  # an ERROR workspace's archive
        ("archives/u3/op1/home.tar.gz", False),  # a deleted workspace's archive
        ("archives/u1/op3", False),  # no folder separator after the op id
    ],
)
def test_protection(key: str, protected: bool) -> None:
    assert LIVE.covers(key) is protected


def test_workspace_without_status_protects_nothing() -> None:
    p = protection({"metadata": {"uid": "u9"}})
    assert p.workspaces == 1
    assert not p.keys
    assert not p.folders


def obj(key: str, size: int = 10) -> ObjectInfo:
    return ObjectInfo(key=key, size=size)


@pytest.mark.parametrize(
    ("key", "first_seen", "outcome"),
    [
        # orphan, never seen: mark now
        ("archives/u3/op1/home.tar.gz", None, "mark"),
        # orphan inside its delay: wait
        ("archives/u3/op1/home.tar.gz", NOW - DELAY + timedelta(seconds=1), "wait"),
        # orphan exactly at its delay: delete
        ("archives/u3/op1/home.tar.gz", NOW - DELAY, "delete"),
        ("archives/u3/op1/home.tar.gz", NOW - 3 * DELAY, "delete"),
        # protected and never seen: nothing at all
        ("archives/u1/op2/home.tar.gz", None, "keep"),
        # protected again after having been an orphan: forget its time, even if overdue
        ("archives/u1/op2/home.tar.gz", NOW - 3 * DELAY, "forget"),
        # outside archives/: never decided on, even with a stored time
        ("volumes/u3/data", None, "ignore"),
        ("archivesX/u3/op1/home.tar.gz", None, "ignore"),
    ],
)
def test_decide_one_object(key: str, first_seen: datetime | None, outcome: str) -> None:
    times = {key: first_seen} if first_seen else {}
    d = decide(LIVE, [obj(key)], times, NOW, DELAY)
    got = {
        "mark": d.to_mark == [key],
        "wait": [w.obj.key for w in d.waiting] == [key],
        "delete": [o.key for o in d.to_delete] == [key],
        "forget": d.to_forget == [key],
        "keep": d.protected == 1,
        "ignore": d.ignored == 1,
    }
    expected = {"keep", "forget"} if outcome == "forget" else {outcome}
    assert {name for name, hit in got.items() if hit} == expected


def test_waiting_orphan_is_due_at_first_seen_plus_delay() -> None:
    seen = NOW - timedelta(minutes=30)
    d = decide(LIVE, [obj("archives/u3/op1/x")], {"archives/u3/op1/x": seen}, NOW, DELAY)
    assert d.waiting[0].due == seen + DELAY
    assert d.orphans == 1


def test_stored_time_of_a_key_missing_from_the_page_is_forgotten() -> None:
    times = {"archives/u3/op1/a": NOW, "archives/u3/op1/gone": NOW}
    d = decide(LIVE, [obj("archives/u3/op1/a")], times, NOW, DELAY)
    assert d.to_forget == ["archives/u3/op1/gone"]
    assert [w.obj.key for w in d.waiting] == ["archives/u3/op1/a"]


def test_a_mixed_page() -> None:
    page = [
        obj("archives/u1/op1/home.tar.gz", 100),
        obj("archives/u1/op2/home.tar.gz", 200),
        obj("archives/u1/op2/home.tar.gz.meta", 5),
        obj("archives/u3/op1/home.tar.gz", 300),
        obj("archives/u3/op1/home.tar.gz.meta", 5),
    ]
    times = {
        "archives/u1/op1/home.tar.gz": NOW - DELAY,
        "archives/u3/op1/home.tar.gz": NOW - timedelta(minutes=1),
    }
    d = decide(LIVE, page, times, NOW, DELAY)
    assert [o.key for o in d.to_delete] == ["archives/u1/op1/home.tar.gz"]
    assert d.to_mark == ["archives/u3/op1/home.tar.gz.meta"]
    assert [w.obj.key for w in d.waiting] == ["archives/u3/op1/home.tar.gz"]
    assert d.protected == 2
    assert d.orphans == 3
    assert d.to_forget == []
