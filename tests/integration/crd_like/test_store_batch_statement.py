"""The batch statement of group commit on real PostgreSQL (crd_like/store/pg/batch.py):
several compare-and-swap updates in one statement must each get the revision, row, log
entry and NOTIFY that one statement per update gave them, in arrival order, and refuse
exactly the updates that one statement after another would have refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from support.store_objects import ws

from codehub.crd_like.store.pg.batch import swap_batch
from codehub.crd_like.store.pg.schema import NOTIFY_CHANNEL
from codehub.crd_like.store.pg.statements import encode, write_params
from codehub.crd_like.store.postgres import PostgresStore

Params = dict[str, Any]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(database_url, watch_poll_interval=0.2)
    yield s
    await s.close()


async def created(store: PostgresStore, *names: str) -> dict[str, dict[str, Any]]:
    return {n: await store.create("workspaces", ws(n)) for n in names}


def swap(obj: dict[str, Any], expected: int | None = None, **spec: Any) -> Params:
    """The parameters of a compare-and-swap update of ``obj`` setting ``spec``."""
    meta = obj["metadata"]
    new = json.loads(json.dumps(obj))
    new["metadata"].pop("resourceVersion")
    new["spec"].update(spec)
    params = write_params(
        "workspaces", meta["namespace"], meta["name"], "MODIFIED", encode(new), new, "update"
    )
    params["expected"] = int(meta["resourceVersion"]) if expected is None else expected
    return params


async def run(store: PostgresStore, batch: list[Params]) -> list[int | None]:
    async with store._pool.connection() as conn:
        return await swap_batch(conn, batch)


async def log_since(store: PostgresStore, since: int) -> list[tuple[Any, ...]]:
    async with store._pool.connection() as conn:
        cur = await conn.execute(
            "SELECT revision, name, type, body, prev_body FROM event_log"
            " WHERE revision > %s ORDER BY revision",
            (since,),
        )
        return await cur.fetchall()


async def test_updates_land_in_arrival_order_and_stale_or_repeated_ones_are_refused(
    store: PostgresStore,
) -> None:
    objs = await created(store, "a", "b", "c")
    since = await store.current_revision()
    got = await run(
        store,
        [
            swap(objs["c"], memo="c1"),
            swap(objs["b"], expected=0, memo="stale"),  # b holds another revision
            swap(objs["a"], memo="a1"),
            swap(objs["c"], memo="c2"),  # the same row and revision again: too late
        ],
    )
    assert got == [since + 1, None, since + 2, None]
    assert await store.current_revision() == since + 2
    for name, memo, rev in (("c", "c1", since + 1), ("a", "a1", since + 2)):
        stored = await store.get("workspaces", "alice", name)
        assert stored["spec"]["memo"] == memo
        assert stored["metadata"]["resourceVersion"] == str(rev)
    assert await store.get("workspaces", "alice", "b") == objs["b"]
    log = await log_since(store, since)
    assert [(r[0], r[1], r[2]) for r in log] == [
        (since + 1, "c", "MODIFIED"),
        (since + 2, "a", "MODIFIED"),
    ]
    for rev, name, _type, body, prev in log:
        assert body == await store.get("workspaces", "alice", name)
        assert body["metadata"]["resourceVersion"] == str(rev)
        assert prev == objs[name]


async def test_typed_columns_follow_the_body(store: PostgresStore) -> None:
    objs = await created(store, "t", "u")
    deleting = swap(objs["u"])
    body = json.loads(deleting["body"])
    body["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    deleting = write_params("workspaces", "alice", "u", "MODIFIED", encode(body), body, "update")
    deleting["expected"] = int(objs["u"]["metadata"]["resourceVersion"])
    params = swap(objs["t"], desired_state="STOPPED")
    revs = await run(store, [params, deleting])
    assert None not in revs
    async with store._pool.connection() as conn:
        cur = await conn.execute(
            "SELECT name, resource_version, desired_state, generation, deletion_timestamp"
            " FROM objects WHERE name IN ('t', 'u') ORDER BY name"
        )
        rows = await cur.fetchall()
    assert rows == [
        ("t", revs[0], "STOPPED", params["gen"], None),
        ("u", revs[1], "RUNNING", deleting["gen"], datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ]


async def test_a_row_locked_elsewhere_is_refused_without_waiting_and_the_rest_land(
    store: PostgresStore, database_url: str
) -> None:
    objs = await created(store, "held", "free")
    since = await store.current_revision()
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        await other.execute("SELECT 1 FROM objects WHERE name = 'held' FOR UPDATE")
        got = await run(store, [swap(objs["held"], memo="x"), swap(objs["free"], memo="y")])
        await other.rollback()
    assert got == [None, since + 1]
    assert (await store.get("workspaces", "alice", "held"))["spec"].get("memo") is None


async def test_nothing_to_write_allocates_no_revision(store: PostgresStore) -> None:
    objs = await created(store, "n")
    since = await store.current_revision()
    assert await run(store, [swap(objs["n"], expected=0, memo="x")]) == [None]
    assert await store.current_revision() == since
    assert await log_since(store, since) == []


async def test_an_invalid_body_rolls_the_whole_batch_back(store: PostgresStore) -> None:
    objs = await created(store, "ok", "bad")
    since = await store.current_revision()
    with pytest.raises(psycopg.errors.DataError):
        await run(store, [swap(objs["ok"], memo="fine"), swap(objs["bad"], memo="nul\u0000")])
    assert await store.current_revision() == since
    assert await store.get("workspaces", "alice", "ok") == objs["ok"]


async def test_one_notify_per_batch_names_its_highest_revision(
    store: PostgresStore, database_url: str
) -> None:
    objs = await created(store, "p", "q", "r")
    since = await store.current_revision()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        got = await run(store, [swap(objs[n], memo="1") for n in ("p", "q", "r")])
        await listener.execute(f"NOTIFY {NOTIFY_CHANNEL}, 'end'")  # after the batch's
        payloads = []
        async for note in listener.notifies(timeout=30):
            if note.payload == "end":
                break
            payloads.append(note.payload)
    assert got == [since + 1, since + 2, since + 3]
    assert payloads == [str(since + 3)]
