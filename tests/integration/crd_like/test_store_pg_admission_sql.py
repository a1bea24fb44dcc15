"""Running limits decided inside the write statement (real PostgreSQL; migration 0006,
crd_like/store/pg/admission.py, docs/limits.md): an admitted create or start never runs
the check in Python, a refused one gets the check's exact 429, the counts are read after
the admission lock is granted (not from the statement's older snapshot), and concurrent
creates from two stores never admit more than the limits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from support.store_objects import set_spec, ws

from codehub.crd_like.server.admission import LimitExceeded, RunningLimitCheck
from codehub.crd_like.store import AdmissionView, NotFound
from codehub.crd_like.store.pg.schema import ADMISSION_LOCK_KEY
from codehub.crd_like.store.postgres import PostgresStore

Obj = dict[str, Any]


class Spy(RunningLimitCheck):
    """The real check, counting how often the store ran it in Python."""

    def __init__(self, max_per_user: int, max_global: int) -> None:
        super().__init__(max_per_user, max_global)
        self.ran = 0

    async def __call__(self, view: AdmissionView, old: Obj | None, new: Obj) -> None:
        self.ran += 1
        await super().__call__(view, old, new)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(database_url, max_size=5)
    yield s
    await s.close()


async def test_admitted_writes_are_decided_in_sql_refused_ones_by_the_check(
    store: PostgresStore,
) -> None:
    spy = Spy(max_per_user=2, max_global=3)
    await store.create("workspaces", ws("a1", "alice"), admit=spy)
    await store.create("workspaces", ws("b1", "bob", desired="STANDBY"), admit=spy)
    await store.update("workspaces", "bob", "b1", set_spec("desired_state", "RUNNING"), admit=spy)
    await store.create("workspaces", ws("a2", "alice"), admit=spy)
    assert spy.ran == 0  # three admitted asks to run, none decided in Python

    with pytest.raises(LimitExceeded) as per_user:
        await store.create("workspaces", ws("a3", "alice"), admit=spy)
    assert spy.ran == 1
    d = per_user.value.details
    assert (d["limit_type"], d["current"], d["max"]) == ("per_user", 2, 2)
    assert [r["name"] for r in d["running_workspaces"]] == ["a1", "a2"]

    await store.create("workspaces", ws("c1", "carol", desired="STANDBY"), admit=spy)
    with pytest.raises(LimitExceeded) as global_:
        await store.update(
            "workspaces", "carol", "c1", set_spec("desired_state", "RUNNING"), admit=spy
        )
    d = global_.value.details
    assert (d["limit_type"], d["current"], d["max"]) == ("global", 3, 3)
    assert (await store.get("workspaces", "carol", "c1"))["spec"]["desired_state"] == "STANDBY"
    with pytest.raises(NotFound):
        await store.get("workspaces", "alice", "a3")

    # Asking a counted workspace to run again: it is excluded, then counted once, so it
    # is admitted at the limit (in SQL), where a new one is refused.
    await store.update(
        "workspaces", "alice", "a1", set_status(observed_status="RUNNING"), subresource="status"
    )
    await store.update("workspaces", "alice", "a1", set_spec("desired_state", "STANDBY"))
    ran = spy.ran
    await store.update("workspaces", "alice", "a1", set_spec("desired_state", "RUNNING"), admit=spy)
    assert spy.ran == ran


def set_status(**fields: str) -> Any:
    def mutate(obj: Obj) -> Obj:
        obj["status"] = {**(obj.get("status") or {}), **fields}
        return obj

    return mutate


def running_row(ns: str, name: str) -> tuple[str, str, str, str, str]:
    uid = str(uuid.uuid4())
    body = {**ws(name, ns), "metadata": {"name": name, "namespace": ns, "uid": uid}}
    return ns, name, uid, ns, json.dumps(body)


async def test_the_counts_are_read_after_the_lock_is_granted(
    store: PostgresStore, database_url: str
) -> None:
    """A create that waited for the admission lock sees what the holder committed: the
    statement's own snapshot, taken before it waited, would still show a free slot."""
    await store.create("workspaces", ws("w1", "alice"))
    spy = Spy(max_per_user=100, max_global=2)
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_KEY,))
        create = asyncio.create_task(store.create("workspaces", ws("late", "bob"), admit=spy))
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
            while not create.done():  # until the create waits for the lock, in SQL
                cur = await probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
                row = await cur.fetchone()
                if row is not None and row[0] > 0:
                    break
                await asyncio.sleep(0.01)
        assert not create.done()
        await holder.execute(  # the second running workspace, straight into the table
            "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
            " owner, desired_state, body) VALUES ('workspaces', %s, %s, %s, 1, 1, %s,"
            " 'RUNNING', %s)",
            running_row("carol", "w2"),
        )
        await holder.commit()
    with pytest.raises(LimitExceeded) as refused:
        await create
    assert refused.value.details["current"] == 2
    assert spy.ran == 1


async def test_concurrent_creates_never_admit_more_than_the_limits(database_url: str) -> None:
    """Sixty creates asking to run, from two stores (two API servers), against a per-user
    limit of 4 and a global limit of 10: exactly ten admitted, no user above four."""
    stores = [await PostgresStore.open(database_url, max_size=6) for _ in range(2)]
    spy = Spy(max_per_user=4, max_global=10)
    try:
        users = ("alice", "bob", "carol", "dave")
        results = await asyncio.gather(
            *(
                stores[i % 2].create("workspaces", ws(f"c{i}", users[i % 4]), admit=spy)
                for i in range(60)
            ),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, LimitExceeded) for r in refused), refused
        assert len(results) - len(refused) == 10
        stored = (await stores[0].list("workspaces")).items
        assert len(stored) == 10
        per_user = {u: sum(o["metadata"]["namespace"] == u for o in stored) for u in users}
        assert max(per_user.values()) <= 4
        assert spy.ran >= len(refused)  # each refusal was built by the check
    finally:
        for s in stores:
            await s.close()
