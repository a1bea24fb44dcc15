"""The maintained running counts on real PostgreSQL (migration 0003, docs/limits.md):
after any sequence of writes -- creates, spec and status updates, deletes with and without
finalizers, finalizer removal, concurrent bursts that go out as one batch statement, and
rows written straight into the table -- the counters equal ``count(*)`` over the
running-candidate rule, overall and per owner; the migration starts them from the rows
already there; admission reads them."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.store_objects import set_spec, ws

from codehub.crd_like.store import AdmissionView, AlreadyExists, NotFound, RunningRef
from codehub.crd_like.store.postgres import PostgresStore, migrate

Obj = dict[str, Any]

CANDIDATE = (
    "kind = 'workspaces' AND deletion_timestamp IS NULL AND (desired_state = 'RUNNING'"
    " OR observed_status = 'RUNNING' OR operation = 'STARTING')"
)


async def counts(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """(the counters, the truth): per owner, with the total under ``"*"``; owners at 0
    left out of both."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        kept: dict[str, int] = dict(
            await (await conn.execute("SELECT owner, n FROM running_counts")).fetchall()
        )
        total = await (await conn.execute("SELECT n FROM running_total")).fetchone()
        truth: dict[str, int] = dict(
            await (
                await conn.execute(
                    f"SELECT owner, count(*) FROM objects WHERE {CANDIDATE} GROUP BY owner"
                )
            ).fetchall()
        )
    kept = {k: v for k, v in kept.items() if v}
    assert total is not None
    kept["*"], truth["*"] = total[0], sum(truth.values())
    return kept, truth


def set_status(**fields: str | None) -> Any:
    def mutate(obj: Obj) -> Obj:
        obj["status"] = {**(obj.get("status") or {}), **fields}
        return obj

    return mutate


def drop_finalizers(obj: Obj) -> Obj:
    obj["metadata"]["finalizers"] = []
    return obj


NAMES = st.sampled_from(["a", "b", "c"])
NAMESPACES = st.sampled_from(["alice", "bob"])
STATES = st.sampled_from(["RUNNING", "STANDBY", "STOPPED"])
CREATE = st.tuples(st.just("create"), NAMESPACES, NAMES, STATES, st.booleans())
SPEC = st.tuples(st.just("spec"), NAMESPACES, NAMES, STATES)
STATUS = st.tuples(
    st.just("status"),
    NAMESPACES,
    NAMES,
    st.sampled_from(["RUNNING", "STOPPED", None]),
    st.sampled_from(["STARTING", "NONE", None]),
)
DELETE = st.tuples(st.just("delete"), NAMESPACES, NAMES)
RELEASE = st.tuples(st.just("release"), NAMESPACES, NAMES)
STEP = st.one_of(CREATE, SPEC, STATUS, DELETE, RELEASE)
#: A burst: its writes run at once, so cached updates go out as one batch statement.
OPS = st.lists(st.one_of(STEP, st.lists(st.one_of(SPEC, STATUS), min_size=2, max_size=8)))


async def apply(store: PostgresStore, op: tuple[Any, ...]) -> None:
    kind, ns, name, *rest = op
    with contextlib.suppress(NotFound, AlreadyExists):
        if kind == "create":
            state, finalizer = rest
            body = ws(name, ns, desired=state)
            if finalizer:
                body["metadata"]["finalizers"] = ["codehub.io/cleanup"]
            await store.create("workspaces", body)
        elif kind == "spec":
            await store.update("workspaces", ns, name, set_spec("desired_state", rest[0]))
        elif kind == "status":
            observed, operation = rest
            mutate = set_status(observed_status=observed, operation=operation)
            await store.update("workspaces", ns, name, mutate, subresource="status")
        elif kind == "delete":
            await store.delete("workspaces", ns, name)
        else:
            await store.update("workspaces", ns, name, drop_finalizers)


async def burst_until_batched(store: PostgresStore, url: str) -> None:
    """Bursts of concurrent status writes that move eight workspaces the store wrote (their
    bodies cached) into and out of the running set, until the batch statement has carried
    some: the examples above reach that path only when their bursts happen to overlap a
    batch in flight, which depends on timing. Then the counters must still be exact."""
    names = [(("alice", "bob")[i % 2], f"burst-{i}") for i in range(8)]
    for ns, name in names:
        with contextlib.suppress(AlreadyExists):
            await store.create("workspaces", ws(name, ns, desired="STANDBY"))
    batcher = store._recent.swaps(store._pool)
    for attempt in range(100):
        if batcher.batched:
            break
        observed = ("RUNNING", "STOPPED")[attempt % 2]
        await asyncio.gather(
            *(
                store.update("workspaces", ns, name, set_status(observed_status=observed),
                             subresource="status")
                for ns, name in names
            )
        )  # fmt: skip
    assert batcher.batched > 0, "no burst went out as a batch statement in 100 tries"
    kept, truth = await counts(url)
    assert kept == truth


def test_the_counters_equal_a_count_after_any_writes(database_url: str) -> None:
    """One store over all examples (its cache of bodies carries over, so bursts of
    updates of bodies it wrote go out as batch statements)."""
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(PostgresStore.open(database_url, max_size=8))

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(ops=OPS)
    def check(ops: list[Any]) -> None:
        async def run() -> None:
            for op in ops:
                if isinstance(op, list):
                    await asyncio.gather(*(apply(store, o) for o in op))
                else:
                    await apply(store, op)
            kept, truth = await counts(database_url)
            assert kept == truth

        loop.run_until_complete(run())

    try:
        check()
        loop.run_until_complete(burst_until_batched(store, database_url))
    finally:
        loop.run_until_complete(store.close())
        loop.close()


async def test_writes_after_failed_writes_on_one_connection(database_url: str) -> None:
    """Creates that find the name taken, updates and deletes of what is gone, all on one
    pooled connection, and the counters after them. Regression: a write that failed in
    the pipeline left psycopg believing in a prepared statement the server did not have,
    and a later write on that connection failed with "prepared statement ... does not
    exist" (5 of 8 such sequences did, before the rollback cleared the cache)."""
    store = await PostgresStore.open(database_url, min_size=1, max_size=1)
    rnd = random.Random(5)
    try:
        for _ in range(400):
            name, state = rnd.choice("abc"), rnd.choice(["RUNNING", "STOPPED"])
            op = rnd.choice(
                [
                    ("create", "alice", name, state, rnd.random() < 0.5),
                    ("spec", "alice", name, state),
                    ("status", "alice", name, rnd.choice(["RUNNING", None]), "STARTING"),
                    ("delete", "alice", name),
                    ("release", "alice", name),
                ]
            )
            await apply(store, op)
    finally:
        await store.close()
    kept, truth = await counts(database_url)
    assert kept == truth


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(database_url, max_size=8)
    yield s
    await s.close()


async def test_a_batch_that_stops_many_counts_each(store: PostgresStore, database_url: str) -> None:
    for i in range(12):
        await store.create("workspaces", ws(f"w{i}", ("alice", "bob")[i % 2]))
    assert (await counts(database_url))[0] == {"alice": 6, "bob": 6, "*": 12}
    swaps = store._recent.swaps(store._pool)
    before = swaps.batched
    await asyncio.gather(
        *(
            store.update(
                "workspaces", ("alice", "bob")[i % 2], f"w{i}", set_spec("desired_state", "STOPPED")
            )
            for i in range(12)
        )
    )
    assert swaps.batched > before
    kept, truth = await counts(database_url)
    assert kept == truth == {"*": 0}


async def test_the_migration_starts_from_the_rows_there(database_url: str) -> None:
    """Rows written before migration 0003 (straight into the table, as an older server
    would have) are counted; writes after it move the counts."""
    await migrate(database_url, up_to=2)
    rows = [
        ("alice", "a", "RUNNING", None, None, None),
        ("alice", "b", "STOPPED", "RUNNING", None, None),
        ("alice", "c", "STOPPED", None, "STARTING", None),
        ("alice", "d", "RUNNING", None, None, "2026-01-01T00:00:00Z"),  # being deleted
        ("bob", "e", "STANDBY", "STOPPED", "NONE", None),
        ("carol", "f", None, None, None, None),
        ("carol", "g", "RUNNING", "RUNNING", "NONE", None),
    ]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for i, (ns, name, ds, os_, op, dt) in enumerate(rows):
            await conn.execute(
                "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
                " owner, desired_state, observed_status, operation, deletion_timestamp, body)"
                " VALUES ('workspaces', %s, %s, gen_random_uuid(), %s, 1, %s, %s, %s, %s, %s,"
                " '{}'::jsonb)",
                (ns, name, i + 1, ns, ds, os_, op, dt),
            )
        await conn.execute(
            "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
            " owner, desired_state, body) VALUES ('events', 'alice', 'x', gen_random_uuid(),"
            " 9, 1, 'alice', 'RUNNING', '{}'::jsonb)"  # not a workspace: never counted
        )
    await migrate(database_url)
    kept, truth = await counts(database_url)
    assert kept == truth == {"alice": 3, "carol": 1, "*": 4}

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM objects WHERE name = 'a'")
        await conn.execute("UPDATE objects SET desired_state = 'RUNNING' WHERE name = 'e'")
    kept, truth = await counts(database_url)
    assert kept == truth == {"alice": 2, "bob": 1, "carol": 1, "*": 4}


class Probe:
    """An admission check that records what the view answers."""

    def __init__(self, queries: list[tuple[str | None, RunningRef | None]]) -> None:
        self.queries = queries
        self.answers: list[int] = []

    async def __call__(self, view: AdmissionView, old: Obj | None, new: Obj) -> None:
        self.answers = [await view.count_running(ns, excluding=ex) for ns, ex in self.queries]


async def test_admission_reads_the_counters(store: PostgresStore, database_url: str) -> None:
    """The view answers from the counters (a counter set by hand shows through), and a
    per-user question after a global one (and the reverse) reads each once."""
    await store.create("workspaces", ws("a", "alice"))
    await store.create("workspaces", ws("b", "bob"))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("UPDATE running_total SET n = n + 40")
        await conn.execute("UPDATE running_counts SET n = n + 7 WHERE owner = 'bob'")
    me = RunningRef("alice", "a")
    probe = Probe([(None, me), ("alice", me), ("bob", me), (None, None), ("bob", None)])
    await store.create("workspaces", ws("p", "carol", desired="STANDBY"), admit=probe)
    assert probe.answers == [41, 0, 8, 42, 8]
