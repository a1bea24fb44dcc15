"""PostgresStore's fast write path (docs/adr/0007-api-write-path-performance.md).

An update of a body this store wrote last is a compare-and-swap on its revision, and
the watch hub takes this store's own writes without reading the log. Two stores on one
database stand for two API servers: each one's cache goes stale by the other's writes,
and each one's hub must still see every revision, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.store_objects import set_spec

from codehub.crd_like.store import AdmissionView, Conflict, WatchEvent
from codehub.crd_like.store.postgres import PostgresStore


def ws(name: str, desired: str = "PENDING") -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {"desired_state": desired, "image_ref": "img"},
    }


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a = await PostgresStore.open(database_url, watch_poll_interval=0.2)
    b = await PostgresStore.open(database_url, watch_poll_interval=0.2, run_migrations=False)
    yield a, b
    await a.close()
    await b.close()


async def test_a_stale_cached_body_never_wins(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await a.create("workspaces", ws("w"))
    await a.update("workspaces", "alice", "w", set_spec("memo", "a1"))  # cached in a
    by_b = await b.update("workspaces", "alice", "w", set_spec("other", "b1"))
    after = await a.update("workspaces", "alice", "w", set_spec("memo", "a2"))
    assert after["spec"]["other"] == "b1"  # built on b's write, not on a's stale copy
    assert after["spec"]["memo"] == "a2"
    assert (
        int(after["metadata"]["resourceVersion"]) == int(by_b["metadata"]["resourceVersion"]) + 1
    )  # the failed swap allocated no revision
    assert await b.get("workspaces", "alice", "w") == after


async def test_a_precondition_is_judged_on_the_stored_body(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await a.create("workspaces", ws("w"))
    stored = await b.update("workspaces", "alice", "w", set_spec("memo", "b"))
    calls: list[str] = []

    def expect(rv: str) -> Any:
        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            calls.append(obj["metadata"]["resourceVersion"])
            if obj["metadata"]["resourceVersion"] != rv:
                raise Conflict("stale")
            obj["spec"]["memo"] = "a"
            return obj

        return mutate

    # a's cache says the create's revision; the row holds b's. Right: accepted.
    done = await a.update("workspaces", "alice", "w", expect(stored["metadata"]["resourceVersion"]))
    assert done["spec"]["memo"] == "a"
    assert calls[-1] == stored["metadata"]["resourceVersion"]
    # And the other way round: a's cache is now fresh, the caller's revision stale.
    with pytest.raises(Conflict):
        await a.update("workspaces", "alice", "w", expect(stored["metadata"]["resourceVersion"]))


async def test_a_counting_admission_check_runs_under_the_lock(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = stores
    await a.create("workspaces", ws("w"))
    await a.update("workspaces", "alice", "w", set_spec("memo", "1"))  # cached
    counted: list[int] = []

    async def admit(view: AdmissionView, old: Any, new: Any) -> None:
        counted.append(len(await view.running_workspaces()))

    out = await a.update(
        "workspaces", "alice", "w", set_spec("desired_state", "RUNNING"), admit=admit
    )
    assert out["spec"]["desired_state"] == "RUNNING"
    assert counted == [0]  # counted once, in the transaction that wrote


async def test_every_revision_reaches_both_hubs_in_order(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    for i in range(4):
        await a.create("workspaces", ws(f"w{i}"))
    since = await a.current_revision()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def follow(store: PostgresStore, key: str, until: int) -> None:
        events: AsyncIterator[WatchEvent] = store.watch("workspaces", since=since)
        async for event in events:
            if event.type != "BOOKMARK":
                seen[key].append(event.revision)
                assert event.object is not None
                assert event.object["metadata"]["resourceVersion"] == str(event.revision)
            if len(seen[key]) == until:
                return

    async def writer(store: PostgresStore, name: str, n: int) -> list[int]:
        revs = []
        for j in range(n):
            out = await store.update("workspaces", "alice", name, set_spec("memo", str(j)))
            revs.append(int(out["metadata"]["resourceVersion"]))
        return revs

    total = 4 * 25
    followers = [
        asyncio.create_task(follow(a, "a", total)),
        asyncio.create_task(follow(b, "b", total)),
    ]
    written = await asyncio.gather(
        writer(a, "w0", 25), writer(a, "w1", 25), writer(b, "w2", 25), writer(b, "w3", 25)
    )
    async with asyncio.timeout(20):
        await asyncio.gather(*followers)
    expected = sorted(r for revs in written for r in revs)
    assert expected == list(range(since + 1, since + total + 1))  # gap-free
    assert seen["a"] == expected
    assert seen["b"] == expected
