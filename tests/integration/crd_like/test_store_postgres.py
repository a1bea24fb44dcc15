"""PostgresStore against a real PostgreSQL: CRUD, concurrency rules, lists, migrations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from support.store_objects import set_spec, ws

from codehub.crd_like.store import (
    AdmissionView,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    Selectors,
)
from codehub.crd_like.store.postgres import PostgresStore, migrate


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(database_url, watch_poll_interval=0.2)
    yield s
    await s.close()


async def test_migrate_is_idempotent_and_concurrent(database_url: str) -> None:
    await asyncio.gather(*(migrate(database_url) for _ in range(4)))
    await migrate(database_url)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        rows = await cur.fetchall()
    assert rows[0] == (1, "objects_and_log")
    assert len(rows) == len({r[0] for r in rows})


async def test_crud_generation_noop_and_status(store: PostgresStore) -> None:
    created = await store.create("workspaces", ws("a"))
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["resourceVersion"] == "1"
    assert await store.get("workspaces", "alice", "a") == created
    with pytest.raises(AlreadyExists):
        await store.create("workspaces", ws("a"))
    with pytest.raises(NotFound):
        await store.get("workspaces", "alice", "zzz")
    with pytest.raises(NotFound):
        await store.update("workspaces", "alice", "zzz", set_spec("memo", "x"))

    up = await store.update("workspaces", "alice", "a", set_spec("desired_state", "STANDBY"))
    assert (up["metadata"]["generation"], up["metadata"]["resourceVersion"]) == (2, "2")
    same = await store.update("workspaces", "alice", "a", set_spec("desired_state", "STANDBY"))
    assert same == up
    assert await store.current_revision() == 2

    def status(obj: dict[str, Any]) -> dict[str, Any]:
        obj["status"] = {"observed_status": "RUNNING", "operation": "NONE"}
        obj["spec"]["desired_state"] = "PENDING"  # ignored on /status
        return obj

    st = await store.update("workspaces", "alice", "a", status, subresource="status")
    assert st["status"]["observed_status"] == "RUNNING"
    assert st["spec"]["desired_state"] == "STANDBY"
    assert st["metadata"]["generation"] == 2
    assert st["metadata"]["resourceVersion"] == "3"
    main = await store.update("workspaces", "alice", "a", status)
    assert main["status"] == st["status"]
    assert main["spec"]["desired_state"] == "PENDING"
    assert await store.get("workspaces", "alice", "a") == main
    running = await store.list_by("workspaces", observed_status="RUNNING")
    assert [o["metadata"]["name"] for o in running] == ["a"]
    assert await store.list_by("workspaces", desired_state="RUNNING") == []


async def test_stale_resource_version_via_mutator_is_conflict(store: PostgresStore) -> None:
    created = await store.create("workspaces", ws("a"))
    await store.update("workspaces", "alice", "a", set_spec("memo", "first"))

    def guarded(obj: dict[str, Any]) -> dict[str, Any]:
        if obj["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        obj["spec"]["memo"] = "second"
        return obj

    with pytest.raises(Conflict):
        await store.update("workspaces", "alice", "a", guarded)
    assert (await store.get("workspaces", "alice", "a"))["spec"]["memo"] == "first"
    assert await store.current_revision() == 2


async def test_immutable_fields_refused_and_state_unchanged(store: PostgresStore) -> None:
    before = await store.create("workspaces", ws("a"))

    def rename(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
        return obj

    with pytest.raises(Invalid) as info:
        await store.update("workspaces", "alice", "a", rename)
    assert info.value.field == "metadata.uid"
    assert await store.get("workspaces", "alice", "a") == before


async def test_finalizer_deletion(store: PostgresStore) -> None:
    obj = ws("a")
    obj["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    created = await store.create("workspaces", obj)
    with pytest.raises(Conflict):
        await store.delete("workspaces", "alice", "a", expected_resource_version="999")
    marked, removed = await store.delete(
        "workspaces",
        "alice",
        "a",
        expected_resource_version=created["metadata"]["resourceVersion"],
    )
    assert not removed
    assert marked["metadata"]["deletionTimestamp"]
    assert (await store.list_by("workspaces", deleting=True))[0]["metadata"]["name"] == "a"
    again, removed = await store.delete("workspaces", "alice", "a")
    assert (again, removed) == (marked, False)

    def drop(o: dict[str, Any]) -> dict[str, Any]:
        o["metadata"]["finalizers"] = []
        return o

    last = await store.update("workspaces", "alice", "a", drop)
    with pytest.raises(NotFound):
        await store.get("workspaces", "alice", "a")
    it = store.watch("workspaces", since=int(marked["metadata"]["resourceVersion"]))
    ev = await asyncio.wait_for(it.__anext__(), 10)
    assert ev.type == "DELETED"
    assert ev.revision == int(last["metadata"]["resourceVersion"])
    await store.create("workspaces", ws("b"))
    _, removed = await store.delete("workspaces", "alice", "b")
    assert removed
    with pytest.raises(NotFound):
        await store.delete("workspaces", "alice", "b")


async def test_concurrent_create_same_name(store: PostgresStore) -> None:
    results = await asyncio.gather(
        *(store.create("workspaces", ws("same")) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))
    assert await store.current_revision() == 1


async def test_paginated_list_consistent_then_gone(store: PostgresStore) -> None:
    for i in range(10):
        await store.create("workspaces", ws(f"w{i:02d}", "alice" if i % 2 else "bob"))
    page = await store.list("workspaces", limit=4)
    raw = await store.list_raw("workspaces", limit=4)
    assert [json.loads(x) for x in raw.items] == page.items
    assert (raw.revision, raw.continue_token) == (page.revision, page.continue_token)
    assert [o["metadata"]["name"] for o in page.items] == ["w01", "w03", "w05", "w07"]
    assert page.revision == 10
    assert page.continue_token
    await store.delete("workspaces", "alice", "w09")
    await store.delete("workspaces", "bob", "w00")
    await store.create("workspaces", ws("w99", "alice"))
    await store.update("workspaces", "bob", "w02", set_spec("desired_state", "PENDING"))
    rest: list[dict[str, Any]] = []
    token = page.continue_token
    while token:
        nxt = await store.list("workspaces", limit=4, continue_token=token)
        assert nxt.revision == 10
        rest += nxt.items
        token = nxt.continue_token
    assert [o["metadata"]["name"] for o in rest] == ["w09", "w00", "w02", "w04", "w06", "w08"]
    assert next(o for o in rest if o["metadata"]["name"] == "w02")["spec"]["desired_state"] == (
        "RUNNING"
    )
    fresh = await store.list("workspaces", namespace="alice")
    assert [o["metadata"]["name"] for o in fresh.items] == ["w01", "w03", "w05", "w07", "w99"]
    assert fresh.revision == 14
    assert fresh.continue_token is None
    await store.compact(0)
    with pytest.raises(Gone):
        await store.list("workspaces", limit=4, continue_token=page.continue_token)


async def test_selectors(store: PostgresStore) -> None:
    await store.create("workspaces", ws("a", team="x", tier="1"))
    await store.create("workspaces", ws("b", team="y"))
    await store.create("workspaces", ws("c", "bob", team="x"))
    await store.create(
        "events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "a.1", "namespace": "alice"},
            "involvedObject": {"kind": "Workspace", "name": "a", "namespace": "alice", "uid": "u1"},
            "reason": "Started",
        },
    )

    def names(r: Any) -> list[str]:
        return [o["metadata"]["name"] for o in r.items]

    assert names(await store.list("workspaces", selectors=Selectors(labels={"team": "x"}))) == [
        "a",
        "c",
    ]
    assert names(
        await store.list(
            "workspaces", namespace="alice", selectors=Selectors(labels={"team": "x", "tier": "1"})
        )
    ) == ["a"]
    assert names(
        await store.list("workspaces", selectors=Selectors(fields={"metadata.name": "b"}))
    ) == ["b"]
    assert names(
        await store.list("workspaces", selectors=Selectors(fields={"metadata.namespace": "bob"}))
    ) == ["c"]
    for fields in (
        {"involvedObject.name": "a"},
        {"involvedObject.uid": "u1", "involvedObject.kind": "Workspace"},
        {"involvedObject.namespace": "alice"},
    ):
        assert names(await store.list("events", selectors=Selectors(fields=fields))) == ["a.1"]
    assert (
        names(await store.list("events", selectors=Selectors(fields={"involvedObject.name": "b"})))
        == []
    )


class _PerUserLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def __call__(self, view: AdmissionView, old: Any, new: dict[str, Any]) -> None:
        if new["spec"].get("desired_state") != "RUNNING":
            return
        running = await view.running_workspaces(new["metadata"]["namespace"])
        await asyncio.sleep(0.01)  # widen the race window: the lock must hold anyway
        others = [r for r in running if r.name != new["metadata"]["name"]]
        if len(others) >= self.limit:
            raise PermissionError(f"limit {self.limit} reached: {len(others)}")


async def test_admission_twenty_concurrent_creates_admit_two(database_url: str) -> None:
    stores = [await PostgresStore.open(database_url, max_size=5) for _ in range(2)]
    try:
        admit = _PerUserLimit(2)
        results = await asyncio.gather(
            *(stores[i % 2].create("workspaces", ws(f"w{i}"), admit=admit) for i in range(20)),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(ok) == 2
        assert len(refused) == 18
        assert all(isinstance(r, PermissionError) for r in refused)
        listed = await stores[0].list("workspaces")
        assert len(listed.items) == 2

        # Updates to RUNNING are admitted the same way; other namespaces are separate.
        await stores[0].create("workspaces", ws("p", desired="PENDING"))
        with pytest.raises(PermissionError):
            await stores[1].update(
                "workspaces", "alice", "p", set_spec("desired_state", "RUNNING"), admit=admit
            )
        await stores[1].create("workspaces", ws("b1", "bob"), admit=admit)
    finally:
        for s in stores:
            await s.close()


async def test_expire_old_events(store: PostgresStore, database_url: str) -> None:
    for name in ("old1", "old2", "new"):
        await store.create("events", {"metadata": {"name": name, "namespace": "alice"}})
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE objects SET body = jsonb_set(body, '{metadata,creationTimestamp}',"
            " '\"2000-01-01T00:00:00Z\"') WHERE name LIKE 'old%%'"
        )
    since = await store.current_revision()
    assert await store.expire("events", 3600) == 2
    assert [o["metadata"]["name"] for o in (await store.list("events")).items] == ["new"]
    watch = store.watch("events", since=since)
    got = [await asyncio.wait_for(watch.__anext__(), 30) for _ in range(2)]
    assert [(e.type, e.revision) for e in got] == [("DELETED", since + 1), ("DELETED", since + 2)]


@pytest.mark.parametrize("bad", ["nul\u0000char", float("nan")])
async def test_unstorable_values_are_invalid_and_change_nothing(
    store: PostgresStore, bad: Any
) -> None:
    before = await store.create("workspaces", ws("a"))
    with pytest.raises(Invalid):
        await store.update("workspaces", "alice", "a", set_spec("memo", bad))
    with pytest.raises(Invalid):
        await store.create("workspaces", {**ws("b"), "spec": {"memo": bad}})
    assert await store.get("workspaces", "alice", "a") == before
    assert await store.current_revision() == 1
