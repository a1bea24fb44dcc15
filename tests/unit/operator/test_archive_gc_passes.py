"""Archive GC passes over the in-memory bucket and first-seen store (docs/archive-gc.md)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from codehub.adapters.errors import UnreachableError
from codehub.adapters.fake_object_store import MemoryObjectStore
from codehub.operator.archive_gc import ArchiveGC, load_protection
from codehub.operator.archive_gc_store import MemoryFirstSeen
from codehub.operator.clock import FakeClock

DELAY = 7200.0
OLD = "archives/u1/op1/home.tar.gz"
CURRENT = "archives/u1/op2/home.tar.gz"
GONE_WS = "archives/u9/op1/home.tar.gz"
OUTSIDE = "volumes/u9/backup.tar"


class PagedApi:
    """Workspaces served in pages with continue tokens, like the API server."""

    def __init__(self, items: list[dict[str, Any]], page: int = 2) -> None:
        self.items = items
        self.page = page
        self.requests = 0
        self.fail = False

    async def request(self, method: str, path: str, *, params: dict[str, Any]) -> Any:
        self.requests += 1
        if self.fail:
            raise UnreachableError("API down")
        start = int(params.get("continue") or 0)
        end = start + min(int(params["limit"]), self.page)
        meta = {"continue": str(end)} if end < len(self.items) else {}
        return {"items": self.items[start:end], "metadata": meta}


def ws(uid: str, archive_key: str = "", op_id: str = "") -> dict[str, Any]:
    return {"metadata": {"uid": uid}, "status": {"archive_key": archive_key, "op_id": op_id}}


@pytest.fixture
def bucket() -> MemoryObjectStore:
    store = MemoryObjectStore()
    for key in (OLD, f"{OLD}.meta", CURRENT, f"{CURRENT}.meta", GONE_WS, OUTSIDE):
        store.put(key, 100)
    return store


def make_gc(
    bucket: MemoryObjectStore, api: PagedApi, times: MemoryFirstSeen, clock: FakeClock
) -> tuple[ArchiveGC, CollectorRegistry]:
    registry = CollectorRegistry()
    gc = ArchiveGC(
        api=api,
        objects=bucket,
        first_seen=lambda: times,
        interval=3600,
        orphan_delay=DELAY,
        registry=registry,
        clock=clock,
        page_size=2,
    )
    return gc, registry


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_orphans_go_only_after_the_delay_and_protected_objects_stay(
    bucket: MemoryObjectStore,
) -> None:
    api = PagedApi([ws("u1", CURRENT), ws("u2", op_id="op5")], page=1)
    times, clock = MemoryFirstSeen(), FakeClock()
    gc, registry = make_gc(bucket, api, times, clock)

    first = await gc.pass_once()
    assert first.skipped is None
    assert first.orphans == 3  # OLD, its .meta, the deleted workspace's archive
    assert first.marked == 3
    assert first.deleted == 0
    assert set(times.times) == {OLD, f"{OLD}.meta", GONE_WS}
    assert api.requests == 2  # one page per workspace

    clock.advance(DELAY - 1)
    assert (await gc.pass_once()).deleted == 0
    clock.advance(1)
    third = await gc.pass_once()
    assert third.deleted == 3
    assert third.reclaimed_bytes == 300
    assert set(bucket.sizes) == {CURRENT, f"{CURRENT}.meta", OUTSIDE}
    assert times.times == {}
    assert metric(registry, "codehub_gc_deleted_total") == 3
    assert metric(registry, "codehub_gc_reclaimed_bytes_total") == 300
    assert metric(registry, "codehub_gc_objects_seen") == 5  # keys outside archives/ not counted
    assert metric(registry, "codehub_gc_orphans") == 3
    assert metric(registry, "codehub_gc_last_success_timestamp_seconds") > 0


async def test_an_object_protected_again_loses_its_first_seen_time(
    bucket: MemoryObjectStore,
) -> None:
    api = PagedApi([ws("u1", CURRENT)])
    times, clock = MemoryFirstSeen(), FakeClock()
    gc, _ = make_gc(bucket, api, times, clock)
    await gc.pass_once()
    assert OLD in times.times
    api.items = [ws("u1", OLD)]  # an administrator points archive_key back at it
    clock.advance(DELAY * 2)
    report = await gc.pass_once()
    assert OLD not in times.times
    assert OLD in bucket.sizes
    assert times.times[CURRENT] == clock.now()  # an orphan from now on: marked, not deleted
    assert report.marked == 2
    assert CURRENT in bucket.sizes


async def test_times_of_objects_that_left_the_bucket_are_dropped(
    bucket: MemoryObjectStore,
) -> None:
    times, clock = MemoryFirstSeen(), FakeClock()
    gc, _ = make_gc(bucket, PagedApi([ws("u1", CURRENT)]), times, clock)
    await gc.pass_once()
    await bucket.delete(GONE_WS)  # removed by someone else; last key of the listing
    await bucket.delete(OLD)
    await gc.pass_once()
    assert set(times.times) == {f"{OLD}.meta"}


@pytest.mark.parametrize("failure", ["api", "bucket", "database", "database-mid-pass"])
async def test_a_failure_skips_the_pass_and_deletes_nothing(
    bucket: MemoryObjectStore, failure: str
) -> None:
    api = PagedApi([ws("u1", CURRENT)])
    times, clock = MemoryFirstSeen(), FakeClock()
    gc, registry = make_gc(bucket, api, times, clock)
    await gc.pass_once()
    clock.advance(DELAY)
    before = dict(bucket.sizes)
    if failure == "api":
        api.fail = True
    elif failure == "bucket":
        bucket.fail_next("list", UnreachableError("S3 down"))
    elif failure == "database":
        times.fail_next()  # the connection itself
    else:
        times.fail_next(after=1)  # connected, then the first read fails
    report = await gc.pass_once()
    reason = "database" if failure.startswith("database") else "listing"
    assert report.skipped == reason
    assert bucket.sizes == before
    assert metric(registry, "codehub_gc_skipped_passes_total", reason=reason) == 1
    assert metric(registry, "codehub_gc_deleted_total") == 0


async def test_the_workspace_list_failing_on_a_later_page_skips_the_pass(
    bucket: MemoryObjectStore,
) -> None:
    class FailsOnPageTwo(PagedApi):
        async def request(self, method: str, path: str, *, params: dict[str, Any]) -> Any:
            if params.get("continue"):
                raise UnreachableError("API down")
            return await super().request(method, path, params=params)

    times, clock = MemoryFirstSeen(), FakeClock()
    # u1's protection is on the second page: a pass over a partial list would delete it
    api = FailsOnPageTwo([ws("u0"), ws("u1", CURRENT)], page=1)
    gc, _ = make_gc(bucket, api, times, clock)
    report = await gc.pass_once()
    assert report.skipped == "listing"
    assert times.times == {}


async def test_preview_shows_what_would_go_and_when_without_writing(
    bucket: MemoryObjectStore,
) -> None:
    times, clock = MemoryFirstSeen(), FakeClock()
    gc, _ = make_gc(bucket, PagedApi([ws("u1", CURRENT)]), times, clock)
    await gc.pass_once()
    marked_at = clock.now()
    clock.advance(DELAY)
    bucket.put("archives/u8/op1/home.tar.gz", 7)
    rows = {row.key: row async for row in gc.preview()}
    assert set(rows) == {OLD, f"{OLD}.meta", GONE_WS, "archives/u8/op1/home.tar.gz"}
    assert rows[OLD].first_seen == marked_at
    assert rows[OLD].due == clock.now()
    assert rows["archives/u8/op1/home.tar.gz"].first_seen is None
    assert rows["archives/u8/op1/home.tar.gz"].size == 7
    assert OLD in bucket.sizes
    assert "archives/u8/op1/home.tar.gz" not in times.times


async def test_protection_falls_back_to_one_list_for_api_fakes() -> None:
    class ListOnly:
        async def list(self, ns: str | None = None) -> dict[str, Any]:
            return {"items": [ws("u1", CURRENT)]}

    protection = await load_protection(ListOnly())
    assert protection.covers(CURRENT)
    assert protection.workspaces == 1


def test_the_leader_runs_the_archive_gc() -> None:
    from codehub.operator.archive_gc import run_archive_gc
    from codehub.operator.components import leader_components

    runs = {c.name: c.run for c in leader_components()}
    assert runs["archive-gc"] is run_archive_gc


class _Term:
    """The slice of a leadership term the GC component uses."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.running: list[str] = []

    def mark_running(self, name: str) -> None:
        self.running.append(name)


def _context(objects: MemoryObjectStore | None) -> Any:
    from codehub.adapters.fake_instance import FakeInstanceController
    from codehub.adapters.fake_storage import FakeStorageProvider
    from codehub.operator.context import OperatorContext
    from codehub.operator.settings import Settings

    return OperatorContext(
        settings=Settings(),
        api=PagedApi([]),  # type: ignore[arg-type]
        instances=FakeInstanceController(),
        storage=FakeStorageProvider(),
        objects=objects,
    )


async def test_the_leader_sweeps_the_bucket_of_its_context(
    bucket: MemoryObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket comes from the composition root with the other adapters, not from
    settings read inside the component (a scale bench or M3 hands in its own)."""
    from codehub.operator import archive_gc

    swept: list[Any] = []

    async def run(self: ArchiveGC) -> None:
        swept.append(self.objects)

    monkeypatch.setattr(archive_gc.ArchiveGC, "run", run)
    term = _Term(_context(bucket))
    await archive_gc.run_archive_gc(term)  # type: ignore[arg-type]
    assert swept == [bucket]
    assert term.running == ["archive-gc"]


async def test_a_context_without_a_bucket_is_refused_by_name() -> None:
    from codehub.operator.archive_gc import run_archive_gc

    term = _Term(_context(None))
    with pytest.raises(RuntimeError, match="no archive bucket"):
        await run_archive_gc(term)  # type: ignore[arg-type]
    assert term.running == []
