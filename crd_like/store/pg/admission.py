"""The running-limit view inside a writing transaction (docs/limits.md).

Every write that asks a workspace to run takes one global advisory lock and reads, in
its own transaction, how many workspaces run or are asked to, so concurrent admissions
never exceed a limit. The lock serialises those writes, so what happens under it bounds
the create rate of the whole installation. It is O(1): the counts are two rows
(``running_total`` and the owner's ``running_counts``) that a trigger on ``objects``
keeps in the transaction of every write that moves a workspace into or out of the
running-candidate set (migration 0003), plus one primary-key probe for the object being
written. Lock and reads go out together, in one round trip. The names are listed only
when a limit is exceeded, because the 429 body carries them (docs/limits.md); that
refused write pays for it, no admitted one does.

A check that says what it would decide (``RunningLimits``: the two limits a write must
fit in) is decided inside the write statement instead (``GUARD_SQL``, migration 0006):
the lock is taken and the counts read by the statement, so the lock is held only while
PostgreSQL works, never across a round trip to this process. Only a write the guard
refuses goes the way above, which builds the 429 (and may still admit, if the counts
fell meanwhile).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final, Protocol, runtime_checkable

import psycopg

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import (
    AdmissionCheck,
    AdmissionView,
    AlreadyExists,
    Obj,
    RunningRef,
)
from codehub.crd_like.store.pg.schema import ADMISSION_LOCK_KEY

Conn = psycopg.AsyncConnection[Any]

#: The running-candidate rule of docs/limits.md, the predicate of index objects_running
#: (and of the SQL function ``running_candidate`` the counting trigger uses).
_CANDIDATE = (
    "kind = 'workspaces' AND deletion_timestamp IS NULL AND (desired_state = 'RUNNING'"
    " OR observed_status = 'RUNNING' OR operation = 'STARTING')"
)
_SCOPE = " AND owner = %(owner)s"

#: The total, the owner's count, and the owner of the excluded object if it is counted
#: (so excluding it lowers the total, and the count of that owner only). A separate
#: statement from the lock: its snapshot is taken after the lock is granted, so it sees
#: every write of the previous holder. The rule is applied to the row found, not in its
#: WHERE clause: there it would match index objects_running's predicate, and a plan made
#: while the table was small scanned that index (every running workspace) for the probe.
COUNTS_SQL = (
    b"SELECT (SELECT n FROM running_total WHERE id = 1),"
    b" (SELECT n FROM running_counts WHERE owner = %(owner)s),"
    b" (SELECT CASE WHEN running_candidate(kind, deletion_timestamp, desired_state,"
    b" observed_status, operation) THEN owner END FROM objects"
    b" WHERE kind = 'workspaces' AND namespace = %(ns)s AND name = %(name)s)"
)
LOCK_SQL = b"SELECT pg_advisory_xact_lock(%s)"

#: The condition a write that asks to run adds to its revision-counter update: true
#: when it fits in both limits (migration 0006's ``running_admits``, which takes the
#: admission lock). False allocates no revision and writes nothing.
GUARD_SQL = (
    "running_admits(%(lock)s, %(ns)s, %(name)s, %(max_per_user)s::bigint, %(max_global)s::bigint)"
)

#: The two limits (per user, global) a write must fit in.
Limits = tuple[int, int]


@runtime_checkable
class RunningLimits(Protocol):
    """An admission check that can say what it would decide: ``running_limits(old, new)``
    is None when the check admits ``new`` without reading its view, else the limits
    (per user, global) it admits ``new`` under, exactly when the owner's count and the
    total, each excluding ``new`` and then counting it once, stay within them; otherwise
    the check raises. The store then decides in SQL and calls the check itself only for
    a write the SQL refused (to raise its error)."""

    def running_limits(self, old: Obj | None, new: Obj) -> Limits | None: ...

    async def __call__(self, view: AdmissionView, old: Obj | None, new: Obj) -> None: ...


def guard_params(limits: Limits) -> dict[str, Any]:
    """The parameters ``GUARD_SQL`` adds to a write's."""
    return {"lock": ADMISSION_LOCK_KEY, "max_per_user": limits[0], "max_global": limits[1]}


def list_query(*, scoped: bool) -> str:
    scope = _SCOPE if scoped else ""
    return f"SELECT namespace, name FROM objects WHERE {_CANDIDATE}{scope} ORDER BY namespace, name"


class PgAdmissionView(AdmissionView):
    """Takes the global admission lock on first use, not for every admitted write: a
    check that decides without counting (the write does not ask to run) then never
    queues behind others. Every transaction locks its one object row before this lock,
    so the lock order is the same everywhere and cannot deadlock.

    The counts are read once per owner and exclusion and then answered from what was
    read: a per-user check followed by a global one costs one round trip under the lock,
    not two. Writes that do not take the lock (status writes) may change the counts
    meanwhile, as they may between any check and its commit: the limits bound what
    admitted writes add, which the lock makes exact."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._locked = False
        #: per exclusion: the total, the counts per owner read so far, the excluded
        #: object's owner if it is counted.
        self._read: dict[RunningRef | None, tuple[int, dict[str, int], str | None]] = {}

    async def _lock(self) -> None:
        if not self._locked:
            await self._conn.execute(LOCK_SQL, (ADMISSION_LOCK_KEY,), prepare=True)
            self._locked = True

    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        await self._lock()
        params = {"owner": namespace}
        cur = await self._conn.execute(list_query(scoped=namespace is not None), params)
        return [RunningRef(ns, name) for ns, name in await cur.fetchall()]

    async def count_running(
        self, namespace: str | None = None, *, excluding: RunningRef | None = None
    ) -> int:
        read = self._read.get(excluding)
        if read is None or (namespace is not None and namespace not in read[1]):
            await self._lock()
            params = {
                "owner": namespace,
                "ns": None if excluding is None else excluding.namespace,
                "name": None if excluding is None else excluding.name,
            }
            cur = await self._conn.execute(COUNTS_SQL, params, prepare=True)
            row = await cur.fetchone()
            assert row is not None
            owners = dict(read[1]) if read is not None else {}
            if namespace is not None:
                owners[namespace] = int(row[1] or 0)
            read = (int(row[0] or 0), owners, row[2])
            self._read[excluding] = read
        total, owners, excluded_owner = read
        if namespace is None:
            return total - (excluded_owner is not None)
        return owners[namespace] - (excluded_owner == namespace)


async def admit_create(
    conn: Conn, kind: str, ns: str, name: str, admit: AdmissionCheck, new: Obj
) -> None:
    """The check of a create. Whether the name is taken is asked only when the check
    refuses (a taken name answers AlreadyExists, not the refusal); an admitted create
    of a taken name fails on the primary key instead. That saves every admitted create
    a statement and a round trip before it reaches the admission lock."""
    try:
        await admit(PgAdmissionView(conn), None, sem.clone(new))
    except psycopg.Error:
        raise
    except Exception:
        cur = await conn.execute(
            b"SELECT 1 FROM objects WHERE kind = %s AND namespace = %s AND name = %s",
            (kind, ns, name),
        )
        if await cur.fetchone() is not None:
            raise AlreadyExists(f'{kind} "{name}" already exists') from None
        raise


class NeedsCount(Exception):
    """An admission check wants to count: that needs the view, its transaction and lock."""


class NoCountView(AdmissionView):
    """The view of a check run outside any transaction: asking it anything refuses."""

    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        raise NeedsCount


class Way(Enum):
    #: The create needs the transaction and the view (a check that counts and cannot
    #: say how it decides, or one that refused without counting: it raises there again).
    LOCKED = "locked"


LOCKED: Final = Way.LOCKED


async def create_guard(admit: AdmissionCheck | None, new: Obj) -> Limits | Way | None:
    """How a create is admitted: None, by no check or one that decides without its
    view (a plain insert); limits, in the insert statement (``GUARD_SQL``); LOCKED, the
    way this module's docstring describes first."""
    if admit is None:
        return None
    if isinstance(admit, RunningLimits):
        return admit.running_limits(None, new)
    try:
        await admit(NoCountView(), None, sem.clone(new))
    except Exception:
        return LOCKED
    return None
