"""The informer (crd_like/client/informer.py) against the in-process API on a MemoryStore:
first sync, events applied, the index, resuming a stream without a List, re-listing
after a 410, a resync dropping a key whose deletion was lost, a stalled watch restarted,
errors retried and logged; and the ListingSource fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from support.api import ApiFactory, ApiHarness
from support.informer import SteeredClient, until

from codehub.crd_like.client.api import ApiClient, ApiConnectionError
from codehub.crd_like.client.informer import (
    Informer,
    ListingSource,
    NotSynced,
    without_managed_fields,
)

Obj = dict[str, Any]
NS = "alice"


def memo_is_x(obj: Obj) -> bool:
    return (obj.get("spec") or {}).get("memo") == "x"


def memo(inf: Informer, name: str) -> Any:
    obj = inf.get(NS, name)
    return None if obj is None else (obj.get("spec") or {}).get("memo")


async def create(admin: ApiClient, name: str, memo_value: str = "") -> Obj:
    spec: Obj = {"desired_state": "STANDBY"}
    if memo_value:
        spec["memo"] = memo_value
    return await admin.create(NS, {"metadata": {"name": name}, "spec": spec})


async def set_memo(admin: ApiClient, name: str, value: str) -> str:
    obj = await admin.patch_merge(NS, name, {"spec": {"memo": value}})
    return str(obj["metadata"]["resourceVersion"])


Running = Callable[..., Awaitable[tuple[Informer, SteeredClient]]]


@pytest.fixture
async def harness(make_api: ApiFactory) -> ApiHarness:
    return await make_api()


@pytest.fixture
async def running(harness: ApiHarness) -> AsyncIterator[Running]:
    """Start informers over a steered operator client; cancelled at the end."""
    tasks: list[asyncio.Task[None]] = []

    async def start(**options: Any) -> tuple[Informer, SteeredClient]:
        client = SteeredClient(harness.client("operator"))
        options.setdefault("index", memo_is_x)
        options.setdefault("page_size", 2)
        inf = Informer(client, **options)
        tasks.append(asyncio.create_task(inf.run()))
        return inf, client

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_first_sync_fills_the_cache_in_pages(harness: ApiHarness, running: Running) -> None:
    admin = harness.client("admin")
    for i, value in enumerate(["x", "", "x", "y", ""]):
        await create(admin, f"w{i}", value)
    inf, _ = await running()
    await inf.wait_synced(30)
    assert sorted(name for _, name in (key for key in map(_key, inf.items()))) == [
        f"w{i}" for i in range(5)
    ]
    assert sorted(inf.indexed()) == [(NS, "w0"), (NS, "w2")]
    assert memo(inf, "w3") == "y"
    assert inf.get(NS, "nope") is None
    assert (inf.relists, inf.list_requests) == (1, 3)


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


async def test_added_modified_deleted_are_applied_and_indexed(
    harness: ApiHarness, running: Running
) -> None:
    admin = harness.client("admin")
    await create(admin, "a")
    inf, _ = await running()
    await inf.wait_synced(30)
    assert inf.indexed() == []

    await create(admin, "b", "x")
    await until(lambda: inf.get(NS, "b") is not None, "b added")
    assert inf.indexed() == [(NS, "b")]

    await set_memo(admin, "a", "x")
    await until(lambda: memo(inf, "a") == "x", "a modified")
    assert sorted(inf.indexed()) == [(NS, "a"), (NS, "b")]

    await set_memo(admin, "b", "y")
    await until(lambda: memo(inf, "b") == "y", "b modified")
    assert inf.indexed() == [(NS, "a")]

    await admin.delete(NS, "a")
    await until(lambda: inf.get(NS, "a") is None, "a deleted")
    assert inf.indexed() == []
    assert len(inf) == 1
    assert inf.relists == 1


async def test_an_ended_stream_is_resumed_without_a_list(
    harness: ApiHarness, running: Running
) -> None:
    admin = harness.client("admin")
    await create(admin, "a")
    inf, client = await running(watch_timeout=1.0)  # the server ends each stream after 1 s
    await inf.wait_synced(30)
    first_rv = inf.resource_version
    await set_memo(admin, "a", "before")
    await until(lambda: memo(inf, "a") == "before", "first event")
    await until(lambda: inf.watches >= 3, "two streams ended and resumed")
    rv = await set_memo(admin, "a", "after")
    await until(lambda: memo(inf, "a") == "after", "event on a resumed stream")
    assert inf.resource_version == rv
    assert inf.relists == 1
    assert client.watch_versions[0] == first_rv
    assert all(v is not None and int(v) > int(first_rv or 0) for v in client.watch_versions[1:])


async def test_gone_relists_and_the_list_replaces_the_cache(
    harness: ApiHarness, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "codehub.crd_like.client.informer")
    admin = harness.client("admin")
    await create(admin, "a")
    await create(admin, "b", "x")
    inf, client = await running(watch_timeout=1.0)
    await inf.wait_synced(30)
    client.open.clear()
    await until(lambda: client.held == 1, "the next stream held back")
    for i in range(5):
        await set_memo(admin, "a", f"m{i}")
    await admin.delete(NS, "b")
    await harness.store.compact(1)
    client.open.set()

    await until(lambda: inf.relists == 2, "a re-list after 410")
    assert memo(inf, "a") == "m4"
    assert inf.get(NS, "b") is None  # vanished from the List: gone from the cache
    assert inf.indexed() == []
    assert "watch answered 410" in caplog.text
    rv = await set_memo(admin, "a", "after")
    await until(lambda: inf.resource_version == rv, "watching again after the re-list")
    assert memo(inf, "a") == "after"


async def test_resync_drops_a_key_whose_deletion_was_lost(
    harness: ApiHarness, running: Running
) -> None:
    admin = harness.client("admin")
    await create(admin, "a", "x")
    await create(admin, "b")
    inf, client = await running(resync_period=600.0, watch_timeout=1.0)
    client.drop.add("DELETED")
    await inf.wait_synced(30)
    await admin.delete(NS, "a")
    await set_memo(admin, "b", "later")  # the deletion's event went by, dropped
    await until(lambda: memo(inf, "b") == "later", "the event after the lost one")
    assert inf.get(NS, "a") is not None  # the cache is wrong until a resync
    inf.resync_period = 0.2
    await until(lambda: inf.relists >= 2, "a periodic resync")  # when the stream ends
    assert inf.get(NS, "a") is None
    assert inf.indexed() == []


async def test_a_silent_watch_is_restarted_from_where_it_was(
    harness: ApiHarness, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    admin = harness.client("admin")
    await create(admin, "a")
    inf, client = await running(stall_timeout=0.2)
    client.open.clear()  # no event, no bookmark
    await inf.wait_synced(30)
    await until(lambda: inf.watches >= 2, "the stalled watch restarted")
    assert "no event or bookmark" in caplog.text
    assert inf.relists == 1
    assert client.watch_versions[1] == client.watch_versions[0]
    client.open.set()
    inf.stall_timeout = 30.0
    await set_memo(admin, "a", "seen")
    await until(lambda: memo(inf, "a") == "seen", "events after the restart")


async def test_errors_are_logged_and_retried_until_synced(
    harness: ApiHarness, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    admin = harness.client("admin")
    await create(admin, "a")
    inf, client = await running(backoff=(0.01, 0.02))
    client.list_failures += [ApiConnectionError("down"), ApiConnectionError("still down")]
    await inf.wait_synced(30)
    assert inf.errors == 2
    assert inf.get(NS, "a") is not None
    assert "still down" in caplog.text


async def test_a_transform_trims_listed_and_watched_objects(
    harness: ApiHarness, running: Running
) -> None:
    admin = harness.client("admin")
    await create(admin, "a")
    assert "managedFields" in (await admin.get(NS, "a"))["metadata"]
    inf, _ = await running(transform=without_managed_fields)
    await inf.wait_synced(30)
    await create(admin, "b")
    await set_memo(admin, "a", "x")
    await until(lambda: memo(inf, "a") == "x" and inf.get(NS, "b") is not None, "events")
    assert all("managedFields" not in o["metadata"] for o in inf.items())
    assert inf.indexed() == [(NS, "a")]


async def test_readers_fail_when_never_synced(harness: ApiHarness) -> None:
    client = SteeredClient(harness.client("operator"))
    client.list_failures += [ApiConnectionError("down")] * 100
    inf = Informer(client, sync_timeout=0.05, backoff=(10.0,))
    task = asyncio.create_task(inf.run())
    try:
        with pytest.raises(NotSynced):
            await inf.snapshot()
        assert not inf.synced
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_listing_source_lists_on_every_call(harness: ApiHarness) -> None:
    admin = harness.client("admin")
    for i, value in enumerate(["x", "", "x"]):
        await create(admin, f"w{i}", value)
    source = ListingSource(harness.client("operator"), index=memo_is_x, page_size=2)
    assert len(await source.snapshot()) == 3
    assert sorted(await source.matching()) == [(NS, "w0"), (NS, "w2")]
    assert source.list_requests == 4
    assert await ListingSource(harness.client("operator")).matching() == []
