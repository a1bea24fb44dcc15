"""Watch correctness on real PostgreSQL (docs/storage.md): gap-free revisions in commit
order, resume after a restart, compaction, and NOTIFY being only a wake-up."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.watch_events import take_events

from codehub.crd_like.store import Gone, Selectors, WatchEvent
from codehub.crd_like.store.postgres import PostgresStore

WRITERS = 8
WRITES = 100
#: Liveness bound only (a hang must fail, not block CI); nothing here measures speed.
PATIENCE = 120.0


def ws(name: str, ns: str = "alice") -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"desired_state": "RUNNING", "image_ref": "img"},
    }


def memo(value: str) -> Any:
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"]["memo"] = value
        return obj

    return mutate


async def take(it: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    """The next ``n`` non-bookmark events."""
    return await take_events(it, n, PATIENCE)


async def until_bookmark(it: AsyncIterator[WatchEvent]) -> tuple[list[WatchEvent], int]:
    out: list[WatchEvent] = []

    async def run() -> int:
        async for ev in it:
            if ev.type == "BOOKMARK":
                return ev.revision
            out.append(ev)
        raise AssertionError("watch ended")

    rev = await asyncio.wait_for(run(), PATIENCE)
    return out, rev


async def run_writers(stores: list[PostgresStore], names: list[str], tag: str) -> list[int]:
    """WRITERS tasks x WRITES updates on shared objects (row contention), each write a
    real change; returns every resourceVersion the writes returned."""
    revisions: list[int] = []

    async def writer(w: int) -> None:
        rnd = random.Random(w)
        for i in range(WRITES):
            name = rnd.choice(names)
            obj = await stores[w % len(stores)].update(
                "workspaces", "alice", name, memo(f"{tag}-{w}-{i}")
            )
            revisions.append(int(obj["metadata"]["resourceVersion"]))

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    return revisions


@pytest.mark.parametrize("cache_size", [10_000, 7], ids=["cached", "tiny-cache"])
async def test_concurrent_writers_watcher_sees_every_revision_once_in_order(
    database_url: str, cache_size: int
) -> None:
    """With a tiny watch cache the watcher keeps falling behind it and alternates between
    catching up from the database and following the cache: both paths must agree."""
    stores = [await PostgresStore.open(database_url, watch_poll_interval=0.5) for _ in range(2)]
    watch_store = await PostgresStore.open(
        database_url, watch_poll_interval=0.5, watch_cache_size=cache_size
    )
    try:
        names = [f"w{i}" for i in range(4)]
        for name in names:
            await stores[0].create("workspaces", ws(name))
        start = (await watch_store.list("workspaces")).revision
        watch = watch_store.watch("workspaces", since=start)
        watcher = asyncio.create_task(take(watch, WRITERS * WRITES))
        written = await run_writers(stores, names, "a")
        seen = await watcher

        assert len(written) == WRITERS * WRITES
        assert len(set(written)) == len(written)
        revs = [e.revision for e in seen]
        assert revs == sorted(written)
        # Gap-free: the writes were the only writes, so they fill the range exactly.
        assert revs == list(range(start + 1, start + 1 + WRITERS * WRITES))
        for ev in seen:
            assert ev.type == "MODIFIED"
            assert ev.object is not None
            assert int(ev.object["metadata"]["resourceVersion"]) == ev.revision
        final = {o["metadata"]["name"]: o for o in (await watch_store.list("workspaces")).items}
        last_by_name: dict[str, dict[str, Any]] = {}
        for ev in seen:
            assert ev.object is not None
            last_by_name[ev.object["metadata"]["name"]] = ev.object
        assert last_by_name == final
    finally:
        for s in [*stores, watch_store]:
            await s.close()


async def test_resume_from_bookmark_on_new_store_misses_nothing(database_url: str) -> None:
    writer_store = await PostgresStore.open(database_url, watch_poll_interval=0.5)
    first = await PostgresStore.open(database_url, watch_poll_interval=0.5)
    try:
        names = [f"w{i}" for i in range(4)]
        for name in names:
            await writer_store.create("workspaces", ws(name))
        start = (await first.list("workspaces")).revision
        watch = first.watch("workspaces", since=start, bookmark_interval=0.3)
        phase1 = await run_writers([writer_store], names, "p1")
        events1, bookmark = await until_bookmark(watch)
        # A bookmark may also arrive mid-stream if the writers pause; drain until caught up.
        while bookmark < max(phase1):
            more, bookmark = await until_bookmark(watch)
            events1 += more
        assert [e.revision for e in events1] == sorted(phase1)
        assert bookmark >= max(phase1)
        await watch.aclose()  # type: ignore[attr-defined]
        await first.close()  # the "server" restarts

        phase2 = await run_writers([writer_store], names, "p2")
        second = await PostgresStore.open(database_url, watch_poll_interval=0.5)
        try:
            resumed = second.watch("workspaces", since=bookmark)
            events2 = await take(resumed, len(phase2))
            assert [e.revision for e in events2] == sorted(phase2)
            assert set(e.revision for e in events1).isdisjoint(e.revision for e in events2)
        finally:
            await second.close()
    finally:
        await writer_store.close()


async def test_compaction_gives_gone_and_relist_recovers(database_url: str) -> None:
    store = await PostgresStore.open(database_url, watch_poll_interval=0.2)
    try:
        for i in range(20):
            await store.create("workspaces", ws(f"w{i}"))
        old = 5
        assert await store.compact(keep_revisions=10) == 11
        with pytest.raises(Gone):
            await store.watch("workspaces", since=old).__anext__()
        still = await take(store.watch("workspaces", since=10), 10)
        assert [e.revision for e in still] == list(range(11, 21))

        # The standard recovery: re-list, then watch from the list's revision.
        listed = await store.list("workspaces")
        assert len(listed.items) == 20
        assert listed.revision == 20
        watch = store.watch("workspaces", since=listed.revision)
        pending = asyncio.create_task(take(watch, 1))
        updated = await store.update("workspaces", "alice", "w3", memo("after"))
        (ev,) = await pending
        assert ev.revision == int(updated["metadata"]["resourceVersion"])

        # A watch whose position falls behind a compaction while it runs gets Gone too.
        lagging = store.watch("workspaces", since=20)
        await store.update("workspaces", "alice", "w4", memo("x"))
        await store.compact(keep_revisions=0)
        with pytest.raises(Gone):
            await asyncio.wait_for(lagging.__anext__(), PATIENCE)
    finally:
        await store.close()


async def test_lost_notify_converges_by_polling(database_url: str) -> None:
    writer = await PostgresStore.open(database_url)
    deaf = await PostgresStore.open(database_url, watch_poll_interval=0.3, listen=False)
    try:
        since = await deaf.current_revision()
        watch = deaf.watch("workspaces", since=since)
        pending = asyncio.create_task(take(watch, 3))
        for i in range(3):
            await writer.create("workspaces", ws(f"w{i}"))
        events = await pending
        assert [e.revision for e in events] == [since + 1, since + 2, since + 3]
    finally:
        await deaf.close()
        await writer.close()


async def test_notify_wakes_watchers_without_polling(database_url: str) -> None:
    writer = await PostgresStore.open(database_url)
    # The poll interval is far longer than PATIENCE: only NOTIFY can deliver in time.
    listener = await PostgresStore.open(database_url, watch_poll_interval=3600)
    try:
        for _ in range(100):
            if listener._hub.listening:
                break
            await asyncio.sleep(0.05)
        assert listener._hub.listening
        watches = [listener.watch("workspaces", since=0) for _ in range(5)]
        pending = [asyncio.create_task(take(w, 2)) for w in watches]
        await writer.create("workspaces", ws("a"))
        await writer.create("workspaces", ws("b", "bob"))
        for task in pending:
            assert [e.revision for e in await task] == [1, 2]
        ns_only = await take(listener.watch("workspaces", since=0, namespace="bob"), 1)
        assert ns_only[0].object is not None
        assert ns_only[0].object["metadata"]["name"] == "b"
    finally:
        await listener.close()
        await writer.close()


async def test_selector_watch_sees_objects_move_in_and_out(database_url: str) -> None:
    """From the cache (store opened before the writes) and from the database (opened
    after, so its cache starts above them): the same events."""
    early = await PostgresStore.open(database_url, watch_poll_interval=0.2)
    try:
        await early.create(
            "workspaces",
            {**ws("a"), "metadata": {"name": "a", "namespace": "alice", "labels": {"team": "x"}}},
        )
        await early.create("workspaces", ws("b"))

        def relabel(team: str) -> Any:
            def mutate(obj: dict[str, Any]) -> dict[str, Any]:
                obj["metadata"].setdefault("labels", {})["team"] = team
                return obj

            return mutate

        await early.update("workspaces", "alice", "a", relabel("y"))
        await early.update("workspaces", "alice", "b", relabel("x"))
        await early.update("workspaces", "alice", "a", relabel("x"))
        await early.delete("workspaces", "alice", "b")
        expected = [
            ("ADDED", "a"),
            ("DELETED", "a"),
            ("ADDED", "b"),
            ("ADDED", "a"),
            ("DELETED", "b"),
        ]
        late = await PostgresStore.open(database_url, watch_poll_interval=0.2)
        try:
            for store in (early, late):
                got = await take(
                    store.watch("workspaces", since=0, selectors=Selectors(labels={"team": "x"})),
                    len(expected),
                )
                assert [(e.type, e.object["metadata"]["name"]) for e in got if e.object] == (
                    expected
                )
                by_name = await take(
                    store.watch(
                        "workspaces", since=0, selectors=Selectors(fields={"metadata.name": "b"})
                    ),
                    3,
                )
                assert [e.type for e in by_name] == ["ADDED", "MODIFIED", "DELETED"]
        finally:
            await late.close()
    finally:
        await early.close()
