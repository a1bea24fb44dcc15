"""The Archive GC against real SeaweedFS, PostgreSQL and the API server (docs/archive-gc.md).

The API server runs in-process over its memory store (the workspaces are all the GC
reads from it). Time is a FakeClock so the orphan delay passes without waiting; the
first-seen times are in the test's own PostgreSQL database and the objects in a bucket
of this test's own, so no other test's archives are ever in reach.
"""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from codehub.adapters.config import S3Config
from codehub.adapters.s3_object_store import S3Access, S3ObjectStore
from codehub.crd_like.client.api import ApiClient
from codehub.operator.archive_gc import ArchiveGC
from codehub.operator.clock import FakeClock
from codehub.operator.settings import Settings

DELAY = 3600.0
NS = "alice"


@pytest.fixture
def s3(settings: Settings, run_id: str) -> Iterator[S3Config]:
    """A fresh bucket for this test, emptied and removed afterwards."""
    config = dataclasses.replace(
        settings.s3_config(), bucket=f"test-{run_id}-gc-{uuid.uuid4().hex[:6]}"
    )
    access = S3Access(config)
    access.ensure_bucket()
    yield config
    leftover = [o.key for o in access.list("")]
    access.delete_many(leftover)
    access.client.remove_bucket(config.bucket)


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": "STANDBY"},
    }


async def workspace(api: Any, name: str, **status: Any) -> str:
    """Create a workspace and write ``status`` as the operator would; returns its uid."""
    created = await api.client("alice").create(NS, manifest(name))
    await api.client("operator").patch_merge(NS, name, {"status": status}, status=True)
    return str(created["metadata"]["uid"])


def gc_for(
    api_client: ApiClient, s3: S3Config, database_url: str, clock: FakeClock
) -> tuple[ArchiveGC, CollectorRegistry]:
    registry = CollectorRegistry()
    gc = ArchiveGC(
        api=api_client,
        objects=S3ObjectStore(s3),
        first_seen=database_url,
        interval=3600,
        orphan_delay=DELAY,
        registry=registry,
        clock=clock,
    )
    return gc, registry


def keys(s3: S3Config) -> set[str]:
    return {o.key for o in S3Access(s3).list("")}


def first_seen(database_url: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT key, first_seen FROM archive_gc_orphans").fetchall()
    return dict(rows)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_orphans_deleted_after_the_delay_live_and_error_archives_kept(
    make_api: Any, s3: S3Config, database_url: str
) -> None:
    api = await make_api()
    deleted_uid = uuid.uuid4().hex  # a workspace that no longer exists
    live = await workspace(api, "live", op_id="op2", archive_key="")
    live_key = f"archives/{live}/op1/home.tar.gz"
    await api.client("operator").patch_merge(
        NS, "live", {"status": {"archive_key": live_key}}, status=True
    )
    broken = await workspace(api, "broken", observed_status="ERROR", archive_key="", op_id="op7")
    broken_key = f"archives/{broken}/op6/home.tar.gz"
    await api.client("operator").patch_merge(
        NS, "broken", {"status": {"archive_key": broken_key}}, status=True
    )
    access = S3Access(s3)
    kept = {
        live_key,
        f"{live_key}.meta",
        f"archives/{live}/op2/home.tar.gz",  # the current op's upload in flight
        broken_key,
        f"{broken_key}.meta",
        "volumes/not-an-archive",  # outside archives/: never touched
    }
    orphans = {
        f"archives/{live}/op0/home.tar.gz",
        f"archives/{live}/op0/home.tar.gz.meta",
        f"archives/{deleted_uid}/op1/home.tar.gz",  # a deleted workspace's archive
    }
    for key in kept | orphans:
        access.put_bytes(key, b"x" * 10)

    clock = FakeClock()
    gc, registry = gc_for(api.client("operator"), s3, database_url, clock)
    first = await gc.pass_once()
    assert first.skipped is None
    assert first.marked == 3
    assert keys(s3) == kept | orphans
    clock.advance(DELAY - 1)
    assert (await gc.pass_once()).deleted == 0
    assert keys(s3) == kept | orphans
    clock.advance(1)
    last = await gc.pass_once()
    assert last.deleted == 3
    assert last.reclaimed_bytes == 30
    assert keys(s3) == kept
    assert first_seen(database_url) == {}
    assert registry.get_sample_value("codehub_gc_deleted_total") == 3


async def test_first_seen_survives_a_restart_and_is_forgotten_when_protected_again(
    make_api: Any, s3: S3Config, database_url: str
) -> None:
    api = await make_api()
    uid = await workspace(api, "w", op_id="op3")
    old = f"archives/{uid}/op1/home.tar.gz"
    other = f"archives/{uid}/op2/home.tar.gz"
    S3Access(s3).put_bytes(old, b"old")
    S3Access(s3).put_bytes(other, b"other")
    clock = FakeClock()
    gc, _ = gc_for(api.client("operator"), s3, database_url, clock)
    await gc.pass_once()
    marked = first_seen(database_url)
    assert set(marked) == {old, other}

    clock.advance(DELAY)
    restarted, _ = gc_for(api.client("operator"), s3, database_url, clock)  # new instance
    await api.client("operator").patch_merge(NS, "w", {"status": {"archive_key": old}}, status=True)
    report = await restarted.pass_once()
    assert report.deleted == 1  # `other`: its time from before the restart counted
    assert keys(s3) == {old}
    assert first_seen(database_url) == {}  # `old` protected again: its time dropped

    await api.client("operator").patch_merge(
        NS, "w", {"status": {"archive_key": None}}, status=True
    )
    await restarted.pass_once()
    assert first_seen(database_url)[old] == clock.now()  # a new timer, not the old one


@pytest.mark.parametrize("failure", ["credentials", "endpoint", "database"])
async def test_a_listing_or_database_failure_skips_the_pass(
    make_api: Any, s3: S3Config, database_url: str, failure: str
) -> None:
    api = await make_api()
    orphan = "archives/gone/op1/home.tar.gz"
    S3Access(s3).put_bytes(orphan, b"x")
    clock = FakeClock()
    gc, _ = gc_for(api.client("operator"), s3, database_url, clock)
    await gc.pass_once()
    clock.advance(DELAY)

    broken_s3, url = s3, database_url
    if failure == "credentials":
        broken_s3 = dataclasses.replace(s3, secret_key="wrong-" + uuid.uuid4().hex)
    elif failure == "endpoint":
        broken_s3 = dataclasses.replace(s3, endpoint=f"http://127.0.0.1:{closed_port()}")
    else:
        url = database_url.rpartition("/")[0] + "/no_such_database_" + uuid.uuid4().hex[:6]
    failing, registry = gc_for(api.client("operator"), broken_s3, url, clock)
    report = await failing.pass_once()
    reason = "database" if failure == "database" else "listing"
    assert report.skipped == reason
    assert report.deleted == 0
    assert keys(s3) == {orphan}
    assert registry.get_sample_value("codehub_gc_skipped_passes_total", {"reason": reason}) == 1
    assert registry.get_sample_value("codehub_gc_last_success_timestamp_seconds") == 0

    assert (await gc.pass_once()).deleted == 1  # the healthy GC still does its job


async def test_preview_lists_orphans_with_their_times_and_changes_nothing(
    make_api: Any, s3: S3Config, database_url: str
) -> None:
    api = await make_api()
    uid = await workspace(api, "w", op_id="op3")
    marked, unseen = f"archives/{uid}/op1/home.tar.gz", f"archives/{uid}/op2/home.tar.gz"
    S3Access(s3).put_bytes(marked, b"12345")
    clock = FakeClock()
    gc, _ = gc_for(api.client("operator"), s3, database_url, clock)
    await gc.pass_once()
    S3Access(s3).put_bytes(unseen, b"1")
    clock.advance(60)
    rows = {row.key: row async for row in gc.preview()}
    assert set(rows) == {marked, unseen}
    assert rows[marked].size == 5
    assert rows[marked].due == rows[marked].first_seen + timedelta(seconds=DELAY)  # type: ignore[operator]
    assert rows[unseen].first_seen is None
    assert set(first_seen(database_url)) == {marked}  # the preview stored nothing
    assert keys(s3) == {marked, unseen}
