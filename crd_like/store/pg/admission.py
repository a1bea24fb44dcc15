"""The running-limit view inside a writing transaction (docs/limits.md).

Every write that asks a workspace to run takes one global advisory lock and counts, in
its own transaction, the workspaces that run or are asked to, so concurrent admissions
never exceed a limit. The lock serialises those writes, so what happens under it bounds
the create rate of the whole installation: it is a ``count(*)`` over the partial index
``objects_running`` (whose predicate is exactly the running-candidate rule) plus one
primary-key probe for the object being written, never a transfer of every running
name. The names are listed only when a limit is exceeded, because the 429 body carries
them (docs/limits.md); that refused write pays for it, no admitted one does.
"""

from __future__ import annotations

from typing import Any

import psycopg

from codehub.crd_like.store.interface import AdmissionView, RunningRef
from codehub.crd_like.store.pg.schema import ADMISSION_LOCK_KEY

Conn = psycopg.AsyncConnection[Any]

#: The running-candidate rule of docs/limits.md, the predicate of index objects_running.
_CANDIDATE = (
    "kind = 'workspaces' AND deletion_timestamp IS NULL AND (desired_state = 'RUNNING'"
    " OR observed_status = 'RUNNING' OR operation = 'STARTING')"
)
_SCOPE = " AND owner = %(owner)s"
_EXCLUDED = " AND namespace = %(ns)s AND name = %(name)s"


def count_query(*, scoped: bool, excluding: bool) -> str:
    """``count(*)`` of the candidates, minus the excluded object if it is one."""
    scope = _SCOPE if scoped else ""
    query = f"SELECT (SELECT count(*) FROM objects WHERE {_CANDIDATE}{scope})"
    if excluding:
        query += f" - (SELECT count(*) FROM objects WHERE {_CANDIDATE}{scope}{_EXCLUDED})"
    return query


def list_query(*, scoped: bool) -> str:
    scope = _SCOPE if scoped else ""
    return f"SELECT namespace, name FROM objects WHERE {_CANDIDATE}{scope} ORDER BY namespace, name"


class PgAdmissionView(AdmissionView):
    """Takes the global admission lock on first use, not for every admitted write: a
    check that decides without counting (the write does not ask to run) then never
    queues behind others. Every transaction locks its one object row before this lock,
    so the lock order is the same everywhere and cannot deadlock."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._locked = False

    async def _lock(self) -> None:
        if not self._locked:
            await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_KEY,))
            self._locked = True

    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        await self._lock()
        params = {"owner": namespace}
        cur = await self._conn.execute(list_query(scoped=namespace is not None), params)
        return [RunningRef(ns, name) for ns, name in await cur.fetchall()]

    async def count_running(
        self, namespace: str | None = None, *, excluding: RunningRef | None = None
    ) -> int:
        await self._lock()
        params: dict[str, Any] = {"owner": namespace}
        if excluding is not None:
            params.update(ns=excluding.namespace, name=excluding.name)
        query = count_query(scoped=namespace is not None, excluding=excluding is not None)
        cur = await self._conn.execute(query, params)
        row = await cur.fetchone()
        return int(row[0]) if row is not None else 0
