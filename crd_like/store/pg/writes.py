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
  counting and writing are atomic for checks that count.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import (
    AdmissionCheck,
    AdmissionView,
    AlreadyExists,
    Invalid,
    Mutator,
    NotFound,
    Obj,
    RunningRef,
)
from codehub.crd_like.store.pg.schema import ADMISSION_LOCK_KEY, NOTIFY_CHANNEL, columns
from codehub.vocabulary.timestamps import now_rfc3339, rfc3339_before

Pool = AsyncConnectionPool[Any]
Conn = psycopg.AsyncConnection[Any]
#: Tells the watch hub that a revision exists (this process's own write).
Advance = Callable[[int], None]
Mode = Literal["insert", "update", "delete"]


class PgAdmissionView(AdmissionView):
    """Takes the global admission lock on first use, not for every admitted write: a
    check that decides without counting (the write does not ask to run) then never
    queues behind others. Every transaction locks its one object row before this lock,
    so the lock order is the same everywhere and cannot deadlock."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._locked = False

    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        if not self._locked:
            await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_KEY,))
            self._locked = True
        query = (
            "SELECT namespace, name FROM objects WHERE kind = 'workspaces'"
            " AND deletion_timestamp IS NULL AND (desired_state = 'RUNNING'"
            " OR observed_status = 'RUNNING' OR operation = 'STARTING')"
        )
        params: tuple[Any, ...] = ()
        if namespace is not None:
            query += " AND owner = %s"
            params = (namespace,)
        cur = await self._conn.execute(query + " ORDER BY namespace, name", params)
        return [RunningRef(ns, name) for ns, name in await cur.fetchall()]


async def locked_body(conn: Conn, kind: str, ns: str, name: str) -> Obj:
    """The current body, row-locked until the transaction ends (read-modify-write)."""
    cur = await conn.execute(
        "SELECT body FROM objects WHERE kind = %s AND namespace = %s AND name = %s FOR UPDATE",
        (kind, ns, name),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f'{kind} "{name}" not found')
    body: Obj = row[0]
    return body


_ROW_SQL: dict[Mode, str] = {
    "insert": (
        "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
        " owner, desired_state, observed_status, operation, deletion_timestamp, body)"
        " SELECT %(kind)s, %(ns)s, %(name)s, %(uid)s, b.rev, %(gen)s, %(ns)s, %(ds)s,"
        " %(os)s, %(op)s, %(dt)s, b.body FROM b"
    ),
    "update": (
        "UPDATE objects SET resource_version = b.rev, generation = %(gen)s,"
        " desired_state = %(ds)s, observed_status = %(os)s, operation = %(op)s,"
        " deletion_timestamp = %(dt)s, body = b.body FROM b"
        " WHERE kind = %(kind)s AND namespace = %(ns)s AND name = %(name)s"
    ),
    "delete": (
        "DELETE FROM objects"
        " WHERE kind = %(kind)s AND namespace = %(ns)s AND name = %(name)s"
    ),
}


def _write_query(mode: Mode) -> bytes:
    return (
        "WITH r AS (UPDATE revision_counter SET rev = rev + 1 WHERE id = 1 RETURNING rev),"
        " b AS (SELECT rev, jsonb_set(%(body)s::jsonb, '{metadata,resourceVersion}',"
        " to_jsonb(rev::text)) AS body FROM r),"
        f" o AS ({_ROW_SQL[mode]}),"
        " l AS (INSERT INTO event_log (revision, kind, namespace, name, type, body, prev_body)"
        " SELECT b.rev, %(kind)s, %(ns)s, %(name)s, %(type)s, b.body, %(prev)s FROM b),"
        f" n AS (SELECT pg_notify('{NOTIFY_CHANNEL}', b.rev::text) FROM b)"
        " SELECT b.rev FROM b, n"
    ).encode()


async def write(
    conn: Conn, kind: str, ns: str, name: str, type_: str, obj: Obj, prev: Obj | None,
    mode: Mode,
) -> int:
    """Allocate the revision and write object row, log entry and NOTIFY at once."""
    params: dict[str, Any] = {
        "kind": kind,
        "ns": ns,
        "name": name,
        "type": type_,
        "body": Jsonb(obj),
        "prev": Jsonb(prev) if prev is not None else None,
    }
    if mode != "delete":
        c = columns(obj)
        params.update(uid=c.uid, gen=c.generation, ds=c.desired_state,
                      os=c.observed_status, op=c.operation, dt=c.deletion_timestamp)
    try:
        cur = await conn.execute(_write_query(mode), params)
    except psycopg.errors.DataError as exc:
        # NUL characters, NaN or Infinity: valid in Python, not in jsonb.
        raise Invalid(
            f"the object holds a value that cannot be stored ({type(exc).__name__})"
        ) from exc
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def create(
    pool: Pool, advance: Advance, kind: str, obj: Obj, admit: AdmissionCheck | None
) -> Obj:
    namespace = (obj.get("metadata") or {}).get("namespace")
    new = sem.prepare_create(obj, namespace, now_rfc3339())
    ns, name = sem.ns_key(namespace), sem.meta(new)["name"]
    try:
        async with pool.connection() as conn, conn.transaction():
            if admit is not None:
                cur = await conn.execute(
                    "SELECT 1 FROM objects WHERE kind = %s AND namespace = %s AND name = %s",
                    (kind, ns, name),
                )
                if await cur.fetchone() is not None:
                    raise AlreadyExists(f'{kind} "{name}" already exists')
                await admit(PgAdmissionView(conn), None, copy.deepcopy(new))
            rev = await write(conn, kind, ns, name, "ADDED", new, None, "insert")
    except psycopg.errors.UniqueViolation as exc:
        raise AlreadyExists(f'{kind} "{name}" already exists') from exc
    advance(rev)
    return sem.with_revision(new, rev)


async def update(
    pool: Pool, advance: Advance, kind: str, namespace: str | None, name: str,
    mutate: Mutator, subresource: Literal["status"] | None, admit: AdmissionCheck | None,
) -> Obj:
    ns = sem.ns_key(namespace)
    async with pool.connection() as conn, conn.transaction():
        current = await locked_body(conn, kind, ns, name)
        plan = sem.apply_update(current, mutate(copy.deepcopy(current)), subresource)
        if plan is None:
            return current
        if admit is not None:
            await admit(PgAdmissionView(conn), copy.deepcopy(current), plan.obj)
        type_ = "DELETED" if plan.remove else "MODIFIED"
        mode: Mode = "delete" if plan.remove else "update"
        rev = await write(conn, kind, ns, name, type_, plan.obj, current, mode)
    advance(rev)
    return sem.with_revision(plan.obj, rev)


async def delete(
    pool: Pool, advance: Advance, kind: str, namespace: str | None, name: str,
    expected_resource_version: str | None, expected_uid: str | None,
) -> tuple[Obj, bool]:
    ns = sem.ns_key(namespace)
    async with pool.connection() as conn, conn.transaction():
        current = await locked_body(conn, kind, ns, name)
        sem.check_delete_preconditions(current, expected_resource_version, expected_uid)
        m = sem.meta(current)
        if m.get("finalizers"):
            if m.get("deletionTimestamp"):
                return current, False
            new = sem.mark_deleting(current, now_rfc3339())
            rev = await write(conn, kind, ns, name, "MODIFIED", new, current, "update")
            removed = False
        else:
            new = copy.deepcopy(current)
            rev = await write(conn, kind, ns, name, "DELETED", new, current, "delete")
            removed = True
    advance(rev)
    return sem.with_revision(new, rev), removed


async def expire(
    pool: Pool, advance: Advance, kind: str, older_than_seconds: float, batch: int
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
                _, gone = await delete(pool, advance, kind, ns or None, name, None, None)
                removed += int(gone)
        if len(keys) < batch:
            return removed
