"""Writes: create, update, delete and expiry, each one transaction (docs/storage.md).

- One global revision in a single-row counter, allocated inside the writing
  transaction by ``UPDATE ... RETURNING``: the row lock is held until commit, so
  revisions become visible strictly in order and a rolled-back write gives its number
  back. Gap-free in commit order; a watcher reading "everything > N" never skips.
- Every write is one statement (counter, object row, log entry, NOTIFY) after the row
  lock of the object, which keeps the counter lock short.
- The event log stores each entry's previous state, so a continued list is served as
  of its first page's revision and a selector watch sees objects move in and out.
- Admission checks get a view that takes a global advisory lock on first use, so
  counting and writing are atomic for checks that count; a check that says its limits
  is decided by the write statement itself (``admission.GUARD_SQL``).
- A create is one statement in its own transaction (no BEGIN, no COMMIT), unless its
  check counts the slow way.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Literal

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import (
    AdmissionCheck,
    AlreadyExists,
    Invalid,
    Mutator,
    NotFound,
    Obj,
)
from codehub.crd_like.store.pg.admission import (
    LOCKED,
    Limits,
    NoCountView,
    PgAdmissionView,
    RunningLimits,
    admit_create,
    create_guard,
)
from codehub.crd_like.store.pg.batch import swap_batch
from codehub.crd_like.store.pg.statements import (
    CAS_UPDATE_SQL,
    WRITE_SQL,
    Mode,
    encode,
    statement_for,
    write_params,
)
from codehub.crd_like.store.pg.swaps import Batcher
from codehub.crd_like.store.pg.watch import Hub, LogRow
from codehub.vocabulary.timestamps import now_rfc3339, rfc3339_before

Pool = AsyncConnectionPool[Any]
Conn = psycopg.AsyncConnection[Any]


async def locked_body(conn: Conn, kind: str, ns: str, name: str) -> Obj:
    """The current body, row-locked until the transaction ends (read-modify-write)."""
    cur = await conn.execute(
        b"SELECT body FROM objects WHERE kind = %s AND namespace = %s AND name = %s FOR UPDATE",
        (kind, ns, name),
        prepare=True,
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f'{kind} "{name}" not found')
    body: Obj = row[0]
    return body


async def swap_one(pool: Pool, params: dict[str, Any]) -> int | None:
    """One compare-and-swap update: the new revision, or None (the row changed)."""
    return await _revision_of_statement(pool, CAS_UPDATE_SQL, params)


async def _revision_of_statement(pool: Pool, query: bytes, params: dict[str, Any]) -> int | None:
    """Run one write statement in its own implicit transaction: the revision it wrote, or
    None when its condition left the row alone (nothing was written)."""
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(query, params, prepare=True)
            row = await cur.fetchone()
    except psycopg.errors.DataError as exc:
        raise _invalid(exc) from exc
    return None if row is None else int(row[0])


async def swap_many(pool: Pool, batch: list[dict[str, Any]]) -> list[int | None]:
    """Several compare-and-swap updates in one statement, one implicit transaction
    (``batch.BATCH_SQL``). Any error but a lost connection rolled all of them back, so
    each goes the locked way (None), where an invalid body fails alone."""
    try:
        async with pool.connection() as conn:
            return await swap_batch(conn, batch)
    except (
        psycopg.errors.TransactionRollback,
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
    ):
        return [None] * len(batch)  # rolled back (a deadlock, say): nothing committed
    except psycopg.OperationalError:
        raise  # the connection is gone: whether it committed is unknown
    except psycopg.Error:
        return [None] * len(batch)


async def write(
    conn: Conn,
    kind: str,
    ns: str,
    name: str,
    type_: str,
    obj: Obj,
    mode: Mode,
    limits: Limits | None = None,
) -> tuple[psycopg.AsyncCursor[Any], str]:
    """Queue the statement that allocates the revision and writes object row, log entry
    and NOTIFY; the caller reads the revision from the cursor after the commit (no row:
    ``limits`` refused it). The log's ``prev_body`` is the row as the statement's
    snapshot sees it (the state before this write, locked by this transaction), so it is
    never encoded nor sent from here. Returns the cursor and the body's JSON text."""
    text = encode(obj)
    query, params = statement_for(
        mode, write_params(kind, ns, name, type_, text, obj, mode), limits
    )
    return await conn.execute(query, params, prepare=True), text


async def revision_of(cur: psycopg.AsyncCursor[Any]) -> int:
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@contextlib.asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Conn]:
    """One transaction in pipeline mode: BEGIN goes out with the first query, and the
    write statement, COMMIT and the sync with each other, so a read-modify-write costs
    two round trips and the revision counter stays locked only while the server works,
    never across a round trip to this process (docs/adr/0007-api-write-path-performance.md).
    """
    async with pool.connection() as conn:
        try:
            async with conn.pipeline():
                await conn.execute(b"BEGIN")
                yield conn
                await conn.execute(b"COMMIT")
        except psycopg.errors.DataError as exc:
            await _end(conn)
            raise _invalid(exc) from exc
        except BaseException:
            await _end(conn)
            raise


def _invalid(exc: psycopg.errors.DataError) -> Invalid:
    """NUL characters, NaN or Infinity: valid in Python, not in jsonb."""
    return Invalid(f"the object holds a value that cannot be stored ({type(exc).__name__})")


async def _end(conn: Conn) -> None:
    """Roll back what a failed block left open; a broken connection is the pool's.

    ``conn.rollback()``, not a ROLLBACK statement: it also forgets the statements this
    connection prepared and deallocates them on the server. A pipeline that was aborted
    part way may have left psycopg believing in a statement the server never prepared
    (or deallocated after preparing it), and the next write using it on this pooled
    connection failed with "prepared statement ... does not exist"."""
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            await conn.rollback()


Key = tuple[str, str, str]


class Recent:
    """The bodies this process wrote last, as JSON text with their revision, bounded
    (least recently used go first). An update of a body found here is one statement,
    a compare-and-swap on its revision, instead of a locked read and a write: right
    whenever the row still holds that revision, and simply retried the locked way when
    another writer (another server, say) got there first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = max(0, size)
        self._items: OrderedDict[Key, tuple[int, str]] = OrderedDict()
        self._swaps: Batcher[dict[str, Any], int | None] | None = None

    def swaps(self, pool: Pool) -> Batcher[dict[str, Any], int | None]:
        """The group commit of the compare-and-swap updates of these bodies."""
        if self._swaps is None:
            self._swaps = Batcher(
                lambda params: swap_one(pool, params), lambda batch: swap_many(pool, batch)
            )
        return self._swaps

    def get(self, key: Key) -> tuple[int, str] | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: Key, revision: int, text: str) -> None:
        self._items[key] = (revision, text)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def drop(self, key: Key) -> None:
        self._items.pop(key, None)


async def _create(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    obj: Obj,
    admit: AdmissionCheck | None,
) -> Obj:
    namespace = (obj.get("metadata") or {}).get("namespace")
    new = sem.prepare_create(obj, namespace, now_rfc3339())
    ns, name = sem.ns_key(namespace), sem.meta(new)["name"]
    guard = await create_guard(admit, new)
    text = encode(new)
    params = write_params(kind, ns, name, "ADDED", text, new, "insert")
    try:
        rev = None if guard is LOCKED else await _insert(pool, params, guard)
        if rev is None:  # refused in SQL, or a check that counts: decided the slow way
            async with transaction(pool) as conn:
                if admit is not None:
                    await admit_create(conn, kind, ns, name, admit, new)
                cur = await conn.execute(WRITE_SQL["insert"], params, prepare=True)
            rev = await revision_of(cur)
    except psycopg.errors.UniqueViolation as exc:
        raise AlreadyExists(f'{kind} "{name}" already exists') from exc
    recent.put((kind, ns, name), rev, text)
    hub.offer(LogRow(rev, kind, ns, "ADDED", text, None))
    return sem.with_revision(new, rev)


async def _insert(pool: Pool, params: dict[str, Any], limits: Limits | None) -> int | None:
    """The create's one statement, in its own implicit transaction; None: ``limits``
    refused it (nothing was written)."""
    return await _revision_of_statement(pool, *statement_for("insert", params, limits))


async def _update_cached(
    pool: Pool,
    recent: Recent,
    key: Key,
    mutate: Mutator,
    subresource: Literal["status"] | None,
    admit: AdmissionCheck | None,
) -> tuple[Obj, LogRow] | None:
    """The one-statement update on the cached body; None: do it the locked way.

    Everything is computed from the cached body, so it is exactly what the locked path
    would compute whenever the compare-and-swap succeeds. A mutator or check that raises
    may have judged a stale body, so errors, no-op writes, removals and counting checks
    all go the locked way too (the mutator then runs again: mutators are pure)."""
    hit = recent.get(key)
    if hit is None:
        return None
    expected, text = hit
    current = sem.with_revision(json.loads(text), expected)
    try:
        plan = sem.apply_update(current, mutate(sem.clone(current)), subresource)
        if plan is None or plan.remove:
            return None
        if isinstance(admit, RunningLimits):
            if admit.running_limits(current, plan.obj) is not None:
                return None  # asks to run: the locked way decides it in SQL
        elif admit is not None:
            # ``current`` was decoded for this call alone and is not used again: no copy.
            await admit(NoCountView(), current, plan.obj)
    except Exception:
        return None
    kind, ns, name = key
    new_text = encode(plan.obj)
    params = write_params(kind, ns, name, "MODIFIED", new_text, plan.obj, "update")
    params["expected"] = expected
    rev = await recent.swaps(pool).run(params)
    if rev is None:
        recent.drop(key)
        return None
    recent.put(key, rev, new_text)
    return sem.with_revision(plan.obj, rev), LogRow(rev, kind, ns, "MODIFIED", new_text, text)


async def _update(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    namespace: str | None,
    name: str,
    mutate: Mutator,
    subresource: Literal["status"] | None,
    admit: AdmissionCheck | None,
) -> Obj:
    ns = sem.ns_key(namespace)
    key = (kind, ns, name)
    done: tuple[Obj, LogRow | None] | None
    done = await _update_cached(pool, recent, key, mutate, subresource, admit)
    if done is None:
        locked = (pool, recent, key, mutate, subresource, admit)
        done = await _update_locked(*locked, in_sql=True)
        if done is None:  # refused in SQL: the view decides, and builds the refusal
            done = await _update_locked(*locked, in_sql=False)
            assert done is not None
    if done[1] is not None:
        hub.offer(done[1])
    return done[0]


async def _update_locked(
    pool: Pool,
    recent: Recent,
    key: Key,
    mutate: Mutator,
    subresource: Literal["status"] | None,
    admit: AdmissionCheck | None,
    *,
    in_sql: bool,
) -> tuple[Obj, LogRow | None] | None:
    """The read-modify-write under the row lock: the object and its log entry (None
    when nothing changed). A check that says its limits is decided by the write
    statement when ``in_sql`` (None: it refused and nothing was written), by the view
    otherwise."""
    kind, ns, name = key
    async with transaction(pool) as conn:
        current = await locked_body(conn, kind, ns, name)
        plan = sem.apply_update(current, mutate(sem.clone(current)), subresource)
        if plan is None:
            return current, None
        limits = None
        if isinstance(admit, RunningLimits) and in_sql and not plan.remove:
            limits = admit.running_limits(current, plan.obj)
        elif admit is not None:
            await admit(PgAdmissionView(conn), sem.clone(current), plan.obj)
        type_ = "DELETED" if plan.remove else "MODIFIED"
        mode: Mode = "delete" if plan.remove else "update"
        cur, text = await write(conn, kind, ns, name, type_, plan.obj, mode, limits)
    row = await cur.fetchone()
    if row is None:
        return None
    rev = int(row[0])
    if plan.remove:
        recent.drop(key)
    else:
        recent.put(key, rev, text)
    return sem.with_revision(plan.obj, rev), LogRow(rev, kind, ns, type_, text, None, current)


async def _delete(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    namespace: str | None,
    name: str,
    expected_resource_version: str | None,
    expected_uid: str | None,
) -> tuple[Obj, bool]:
    ns = sem.ns_key(namespace)
    recent.drop((kind, ns, name))
    async with transaction(pool) as conn:
        current = await locked_body(conn, kind, ns, name)
        sem.check_delete_preconditions(current, expected_resource_version, expected_uid)
        m = sem.meta(current)
        if m.get("finalizers"):
            if m.get("deletionTimestamp"):
                return current, False
            new = sem.mark_deleting(current, now_rfc3339())
            type_ = "MODIFIED"
            cur, text = await write(conn, kind, ns, name, type_, new, "update")
            removed = False
        else:
            new = sem.clone(current)
            type_ = "DELETED"
            cur, text = await write(conn, kind, ns, name, type_, new, "delete")
            removed = True
    rev = await revision_of(cur)
    hub.offer(LogRow(rev, kind, ns, type_, text, None, current))
    return sem.with_revision(new, rev), removed


async def create(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    obj: Obj,
    admit: AdmissionCheck | None,
) -> Obj:
    with hub.writing():
        return await _create(pool, hub, recent, kind, obj, admit)


async def update(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    namespace: str | None,
    name: str,
    mutate: Mutator,
    subresource: Literal["status"] | None,
    admit: AdmissionCheck | None,
) -> Obj:
    with hub.writing():
        return await _update(pool, hub, recent, kind, namespace, name, mutate, subresource, admit)


async def delete(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    namespace: str | None,
    name: str,
    expected_resource_version: str | None,
    expected_uid: str | None,
) -> tuple[Obj, bool]:
    with hub.writing():
        return await _delete(
            pool,
            hub,
            recent,
            kind,
            namespace,
            name,
            expected_resource_version,
            expected_uid,
        )


async def expire(
    pool: Pool,
    hub: Hub,
    recent: Recent,
    kind: str,
    older_than_seconds: float,
    batch: int,
) -> int:
    """Delete objects of ``kind`` created more than ``older_than_seconds`` ago, each with
    its DELETED event; returns how many went. Finalizers are honoured like any delete."""
    cutoff = rfc3339_before(older_than_seconds)
    removed = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT namespace, name FROM objects WHERE kind = %s"
                " AND deletion_timestamp IS NULL"
                " AND body -> 'metadata' ->> 'creationTimestamp' < %s"
                " ORDER BY namespace, name LIMIT %s",
                (kind, cutoff, batch),
            )
            keys = await cur.fetchall()
        for ns, name in keys:
            with contextlib.suppress(NotFound):
                _, gone = await delete(pool, hub, recent, kind, ns or None, name, None, None)
                removed += int(gone)
        if len(keys) < batch:
            return removed
