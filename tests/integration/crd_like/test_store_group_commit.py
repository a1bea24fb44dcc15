"""Group commit on real PostgreSQL (docs/adr/0007-api-write-path-performance.md):
compare-and-swap updates that queue behind one in flight go out in one pipeline and one
transaction. Every write must still get its own revision, land, and reach a watch once
and in order; an invalid body in a batch must fail alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.store_objects import set_spec

from codehub.crd_like.store import Invalid, WatchEvent
from codehub.crd_like.store.postgres import PostgresStore


def ws(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {"desired_state": "PENDING", "image_ref": "img"},
    }


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(database_url, watch_poll_interval=0.2, max_size=20)
    yield s
    await s.close()


async def test_concurrent_updates_are_batched_and_each_lands_once_in_order(
    store: PostgresStore,
) -> None:
    writers, writes = 8, 20
    for w in range(writers):
        await store.create("workspaces", ws(f"g{w}"))
    since = await store.current_revision()
    swaps = store._recent.swaps(store._pool)

    async def writer(w: int) -> list[int]:
        out = []
        for i in range(writes):
            obj = await store.update("workspaces", "alice", f"g{w}", set_spec("memo", str(i)))
            out.append(int(obj["metadata"]["resourceVersion"]))
        return out

    revisions = await asyncio.gather(*(writer(w) for w in range(writers)))
    assert swaps.batches > 0
    written = sorted(r for rs in revisions for r in rs)
    assert written == list(range(since + 1, since + 1 + writers * writes))
    for w in range(writers):
        got = await store.get("workspaces", "alice", f"g{w}")
        assert got["spec"]["memo"] == str(writes - 1)
        assert int(got["metadata"]["resourceVersion"]) == revisions[w][-1]
    seen: list[WatchEvent] = []
    watch = store.watch("workspaces", since=since)
    async for event in watch:
        seen.append(event)
        if event.revision == written[-1]:
            break
    await watch.aclose()  # type: ignore[attr-defined]
    assert [e.revision for e in seen] == written
    assert all(e.type == "MODIFIED" for e in seen)


async def test_an_invalid_body_in_a_batch_fails_alone(store: PostgresStore) -> None:
    names = [f"v{i}" for i in range(5)]
    for name in names:
        await store.create("workspaces", ws(name))
        await store.update("workspaces", "alice", name, set_spec("memo", "cached"))
    swaps = store._recent.swaps(store._pool)
    batches = swaps.batches
    # The first update goes out alone; the rest queue behind it and go out together,
    # the NUL character (which jsonb refuses) among them.
    memos = ["a", "b", "bad\u0000", "c", "d"]
    results = await asyncio.gather(
        *(
            store.update("workspaces", "alice", name, set_spec("memo", memo))
            for name, memo in zip(names, memos, strict=True)
        ),
        return_exceptions=True,
    )
    assert swaps.batches == batches + 1
    assert isinstance(results[2], Invalid)
    for name, memo, result in zip(names, memos, results, strict=True):
        stored = await store.get("workspaces", "alice", name)
        if memo == "bad\u0000":
            assert stored["spec"]["memo"] == "cached"
        else:
            assert isinstance(result, dict)
            assert stored["spec"]["memo"] == memo
            assert stored == result
