"""The Store on PostgreSQL, kine-style (ARCHITECTURE A1).

- One global revision in a single-row counter, allocated inside the writing
  transaction by ``UPDATE ... RETURNING``: the row lock is held until commit, so
  revisions become visible strictly in order and a rolled-back write gives its number
  back. Gap-free in commit order; a watcher reading "everything > N" never skips.
- Every write is one statement (counter, object row, log entry, NOTIFY) after the row
  lock of the object, which keeps the counter lock short.
- The event log stores each entry's previous state, so a continued list is served as
  of its first page's revision and a selector watch sees objects move in and out.
- NOTIFY carries only the revision as a wake-up. One hub per store LISTENs on a
  dedicated connection and also polls the counter every ``watch_poll_interval``, so a
  lost notification only delays. The hub reads each new stretch of the log once into a
  bounded cache that every watcher of the store follows: N watches cost one connection
  and one log read per change, not N. A watcher older than the cache catches up from
  the database, which also answers Gone below the compaction floor.
- Continue tokens carry the first page's revision and the last key; later pages are
  computed as of that revision (current rows not written since, plus the log's
  ``prev_body`` of those that were) and are Gone once it is compacted.
- Admission checks get a view that takes a global advisory lock on first use, so
  counting and writing are atomic for checks that count.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
import copy
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import (
    AdmissionCheck,
    AdmissionView,
    AlreadyExists,
    Invalid,
    ListResult,
    Mutator,
    NotFound,
    Obj,
    RunningRef,
    Selectors,
    Store,
    WatchEvent,
)

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "codehub_events"
#: Distinct from the leader-election key (operator/leader.py) so they never collide.
ADMISSION_LOCK_KEY = 0x636F6465687501
MIGRATION_LOCK_KEY = 0x636F6465687502
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
WATCH_BATCH = 500


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        m = _MIGRATION_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path.read_text()))
    return found


async def migrate(database_url: str) -> None:
    """Apply pending migrations, each once, under an advisory lock so concurrent
    starters (several servers, ``codehub db migrate``) never race."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in await cur.fetchall()}
        for version, name, text in _migrations():
            if version in applied:
                continue
            log.info("applying migration %04d_%s", version, name)
            await conn.execute(text.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class _Columns:
    uid: str
    generation: int
    desired_state: str | None
    observed_status: str | None
    operation: str | None
    deletion_timestamp: datetime | None


def _columns(obj: Obj) -> _Columns:
    m = obj.get("metadata") or {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}

    def text(v: Any) -> str | None:
        return v if isinstance(v, str) else None

    return _Columns(
        uid=str(m["uid"]),
        generation=int(m.get("generation") or 1),
        desired_state=text((spec or {}).get("desired_state")),
        observed_status=text((status or {}).get("observed_status")),
        operation=text((status or {}).get("operation")),
        deletion_timestamp=_parse_ts(m.get("deletionTimestamp")),
    )


def _body_filters(
    selectors: Selectors | None, column: str = "body"
) -> tuple[sql.Composable, list[Any]]:
    """SQL conditions (ANDed, leading ``AND``) equivalent to ``semantics.matches``."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    if selectors is None:
        return sql.SQL(""), params
    body = sql.Identifier(column)
    if selectors.labels:
        parts.append(sql.SQL(" AND {} -> 'metadata' -> 'labels' @> %s").format(body))
        params.append(Jsonb(dict(selectors.labels)))
    for path, value in selectors.fields.items():
        if path == "metadata.namespace":
            parts.append(sql.SQL(" AND namespace = %s"))
        elif path == "metadata.name":
            parts.append(sql.SQL(" AND name = %s"))
        else:
            parts.append(sql.SQL(" AND {} #>> %s = %s").format(body))
            params.append(path.split("."))
        params.append(value)
    return sql.Composed(parts), params


class _PgAdmissionView(AdmissionView):
    """Takes the global admission lock on first use, not for every admitted write: a
    check that decides without counting (the write does not ask to run) then never
    queues behind others. Every transaction locks its one object row before this lock,
    so the lock order is the same everywhere and cannot deadlock."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
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


@dataclass(frozen=True)
class _LogRow:
    revision: int
    kind: str
    namespace: str
    type: str
    body: Obj
    prev: Obj | None


class _Hub:
    """One per store: learns that the revision moved (NOTIFY, a poll, or this process's
    own write), loads the new log entries once into a bounded in-memory cache, and wakes
    every watcher. Watchers positioned inside the cache never query the database; one
    that is further behind catches up from the database first."""

    def __init__(
        self,
        database_url: str,
        pool: AsyncConnectionPool[Any],
        interval: float,
        listen: bool,
        cache_size: int,
    ) -> None:
        self._url = database_url
        self._pool = pool
        self.interval = interval
        self.listen = listen
        self.cache_size = max(1, cache_size)
        self.head = 0  # highest revision known to exist
        self.loaded = 0  # the cache holds every entry in (cache_floor, loaded]
        self.cache_floor = 0
        self.db_floor = 0  # the database's compaction floor, as last seen
        self.listening = False
        self._rows: list[_LogRow] = []
        self._revs: list[int] = []
        self._event = asyncio.Event()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def event(self) -> asyncio.Event:
        """Set (and replaced) whenever ``loaded`` moves."""
        return self._event

    def advance(self, revision: int) -> None:
        if revision > self.head:
            self.head = revision
            self._dirty.set()

    def note_floor(self, floor: int) -> None:
        """Cached entries at or below the database's floor must not outlive it: a
        resume from before the compaction is Gone, whichever store serves it."""
        if floor <= self.db_floor:
            return
        self.db_floor = floor
        if self.cache_floor < floor:
            drop = bisect.bisect_right(self._revs, floor)
            del self._rows[:drop]
            del self._revs[:drop]
            self.cache_floor = min(floor, self.loaded)

    def after(self, revision: int) -> tuple[list[_LogRow], int]:
        """Cached entries above ``revision`` and the revision they reach."""
        start = bisect.bisect_right(self._revs, revision)
        return self._rows[start:], self.loaded

    async def start(self) -> None:
        rev = await self._read_head()
        self.head = self.loaded = self.cache_floor = rev
        self._tasks.append(asyncio.create_task(self._load_loop(), name="store-hub-load"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="store-hub-poll"))
        if self.listen:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="store-hub-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _read_head(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT rev, compact_rev FROM revision_counter")
            row = await cur.fetchone()
        assert row is not None
        self.note_floor(int(row[1]))
        return int(row[0])

    async def _load_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                while self.loaded < self.head:
                    await self._load_more()
            except Exception as exc:
                log.warning("watch cache load failed: %s", type(exc).__name__)
                await asyncio.sleep(self.interval)
                self._dirty.set()

    async def _load_more(self) -> None:
        query = (
            "SELECT c.rev, c.compact_rev, e.revision, e.kind, e.namespace, e.type, e.body,"
            " e.prev_body"
            " FROM revision_counter c LEFT JOIN LATERAL ("
            " SELECT revision, kind, namespace, type, body, prev_body FROM event_log"
            " WHERE revision > %s AND revision <= c.rev ORDER BY revision LIMIT %s) e ON true"
        )
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), (self.loaded, WATCH_BATCH))
            rows = await cur.fetchall()
        head = int(rows[0][0])
        entries = [_LogRow(int(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows if r[2]]
        entries.sort(key=lambda e: e.revision)
        if head > self.head:
            self.head = head
        if (entries and entries[0].revision != self.loaded + 1) or (
            not entries and head > self.loaded
        ):
            # Compacted before we read it: restart the cache above the gap; watchers
            # below it go to the database, which answers Gone.
            self._rows.clear()
            self._revs.clear()
            self.cache_floor = self.loaded = head
        else:
            self._rows.extend(entries)
            self._revs.extend(e.revision for e in entries)
            self.loaded = entries[-1].revision if len(entries) >= WATCH_BATCH else head
            excess = len(self._rows) - self.cache_size
            if excess > 0:
                self.cache_floor = self._revs[excess - 1]
                del self._rows[:excess]
                del self._revs[:excess]
        self.note_floor(int(rows[0][1]))
        self._event.set()
        self._event = asyncio.Event()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.advance(await self._read_head())
            except Exception as exc:  # keep polling; the database may come back
                log.warning("store poll failed: %s", type(exc).__name__)

    async def _listen_loop(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening = True
                    self.advance(await self._read_head())
                    async for note in conn.notifies():
                        with contextlib.suppress(ValueError):
                            self.advance(int(note.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "store listener lost (%s); polling until it is back", type(exc).__name__
                )
            finally:
                self.listening = False
            await asyncio.sleep(self.interval)


class PostgresStore(Store):
    def __init__(self, pool: AsyncConnectionPool[Any], hub: _Hub) -> None:
        self._pool = pool
        self._hub = hub

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        watch_poll_interval: float = 1.0,
        min_size: int = 2,
        max_size: int = 10,
        listen: bool = True,
        run_migrations: bool = True,
        watch_cache_size: int = 10_000,
    ) -> PostgresStore:
        """Connect, migrate and start the watch hub. ``listen=False`` disables NOTIFY
        (watchers then rely on polling alone; used to prove polling suffices)."""
        if run_migrations:
            await migrate(database_url)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open(wait=True)
        hub = _Hub(database_url, pool, watch_poll_interval, listen, watch_cache_size)
        try:
            await hub.start()
        except BaseException:
            await pool.close()
            raise
        return cls(pool, hub)

    async def close(self) -> None:
        await self._hub.stop()
        await self._pool.close()

    # -- reads -----------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT body FROM objects WHERE kind = %s AND namespace = %s AND name = %s",
                (kind, sem.ns_key(namespace), name),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f'{kind} "{name}" not found')
        body: Obj = row[0]
        return body

    async def list(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        items, revision, token = await self._list(
            kind, namespace, selectors, limit, continue_token, raw=False
        )
        return ListResult(items, revision, token)

    async def list_raw(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> sem.RawListResult:
        """``list`` with each item as its JSON text, unparsed: a server that only relays
        items skips a decode and re-encode per object (most of a big list's cost)."""
        items, revision, token = await self._list(
            kind, namespace, selectors, limit, continue_token, raw=True
        )
        return sem.RawListResult(items, revision, token)

    async def _list(
        self,
        kind: str,
        namespace: str | None,
        selectors: Selectors | None,
        limit: int | None,
        continue_token: str | None,
        *,
        raw: bool,
    ) -> tuple[builtins.list[Any], int, str | None]:
        token = sem.ContinueToken.decode(continue_token) if continue_token else None
        filters, fparams = _body_filters(selectors)
        ns_cond = sql.SQL(" AND namespace = %s") if namespace is not None else sql.SQL("")
        ns_params: list[Any] = [namespace] if namespace is not None else []
        fetch = (limit + 1) if limit is not None and limit > 0 else None
        lim = sql.SQL(" LIMIT %s") if fetch is not None else sql.SQL("")
        lim_params: list[Any] = [fetch] if fetch is not None else []
        # ORDER BY only to make LIMIT pick the right rows (an index range scan); the
        # final order is made in Python, so an unlimited list never sorts wide rows.
        order = sql.SQL(" ORDER BY namespace, name") if fetch is not None else sql.SQL("")
        params: list[Any]
        if token is None:
            inner = sql.SQL(
                "SELECT namespace, name, body FROM objects WHERE kind = %s{ns}{f}{order}{lim}"
            ).format(ns=ns_cond, f=filters, order=order, lim=lim)
            params = [kind, *ns_params, *fparams, *lim_params]
        else:
            # The state as of the token's revision: current rows not written since, plus
            # the pre-write state of those that were (from the log's prev_body). Each
            # branch is limited on its own so both stay index range scans.
            after = sql.SQL(" AND (namespace, name) > (%s, %s)")
            after_params = [token.namespace, token.name]
            inner = sql.SQL(
                "WITH changed AS ("
                " SELECT DISTINCT ON (namespace, name) namespace, name, prev_body"
                " FROM event_log WHERE kind = %s AND revision > %s{ns}"
                " ORDER BY namespace, name, revision)"
                " (SELECT namespace, name, body FROM objects"
                " WHERE kind = %s{ns}{after} AND NOT EXISTS (SELECT 1 FROM changed c"
                " WHERE c.namespace = objects.namespace AND c.name = objects.name){f}"
                "{order}{lim})"
                " UNION ALL"
                " (SELECT namespace, name, body FROM"
                " (SELECT namespace, name, prev_body AS body FROM changed"
                " WHERE prev_body IS NOT NULL) ch WHERE true{after}{f}{order}{lim})"
            ).format(ns=ns_cond, after=after, f=filters, order=order, lim=lim)
            params = [
                kind,
                token.revision,
                *ns_params,
                kind,
                *ns_params,
                *after_params,
                *fparams,
                *lim_params,
                *after_params,
                *fparams,
                *lim_params,
            ]
        query = sql.SQL(
            "SELECT c.rev, c.compact_rev, s.namespace, s.name, s.body{cast}"
            " FROM revision_counter c LEFT JOIN LATERAL ({inner}) s ON true"
        ).format(inner=inner, cast=sql.SQL("::text" if raw else ""))
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(query, params)
            rows = await cur.fetchall()
        head, floor = int(rows[0][0]), int(rows[0][1])
        # Sorted here, not by an outer ORDER BY that would sort wide rows on the server.
        rows.sort(key=lambda r: (r[2] or "", r[3] or ""))
        revision = head
        if token is not None:
            if token.revision < floor:
                raise sem.gone(token.revision, floor)
            revision = token.revision
        rows = [r for r in rows if r[4] is not None]
        if fetch is not None:
            rows = rows[:fetch]
        items = [r[4] for r in rows]
        next_token = None
        if limit is not None and limit > 0 and len(items) > limit:
            items = items[:limit]
            last = rows[limit - 1]
            next_token = sem.ContinueToken(revision, last[2], last[3]).encode()
        return items, revision, next_token

    async def list_by(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        desired_state: str | None = None,
        observed_status: str | None = None,
        operation: str | None = None,
        deleting: bool | None = None,
    ) -> builtins.list[Obj]:
        """Indexed typed-column query for controllers (TTL scans, GC, admission)."""
        conds = ["kind = %s"]
        params: list[Any] = [kind]
        for column, value in (
            ("namespace", namespace),
            ("desired_state", desired_state),
            ("observed_status", observed_status),
            ("operation", operation),
        ):
            if value is not None:
                conds.append(f"{column} = %s")
                params.append(value)
        if deleting is not None:
            conds.append(f"deletion_timestamp IS {'NOT ' if deleting else ''}NULL")
        query = f"SELECT body FROM objects WHERE {' AND '.join(conds)} ORDER BY namespace, name"
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return [r[0] for r in await cur.fetchall()]

    async def current_revision(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT rev FROM revision_counter")
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    # -- writes ----------------------------------------------------------------------

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        kind: str,
        namespace: str,
        name: str,
        type_: str,
        obj: Obj,
        prev: Obj | None,
        mode: Literal["insert", "update", "delete"],
    ) -> int:
        """Allocate the revision and write object row, log entry and NOTIFY at once."""
        if mode == "insert":
            c = _columns(obj)
            row_sql = (
                "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
                " owner, desired_state, observed_status, operation, deletion_timestamp, body)"
                " SELECT %(kind)s, %(ns)s, %(name)s, %(uid)s, b.rev, %(gen)s, %(ns)s, %(ds)s,"
                " %(os)s, %(op)s, %(dt)s, b.body FROM b"
            )
        elif mode == "update":
            c = _columns(obj)
            row_sql = (
                "UPDATE objects SET resource_version = b.rev, generation = %(gen)s,"
                " desired_state = %(ds)s, observed_status = %(os)s, operation = %(op)s,"
                " deletion_timestamp = %(dt)s, body = b.body FROM b"
                " WHERE kind = %(kind)s AND namespace = %(ns)s AND name = %(name)s"
            )
        else:
            c = None
            row_sql = (
                "DELETE FROM objects"
                " WHERE kind = %(kind)s AND namespace = %(ns)s AND name = %(name)s"
            )
        query = (
            "WITH r AS (UPDATE revision_counter SET rev = rev + 1 WHERE id = 1 RETURNING rev),"
            " b AS (SELECT rev, jsonb_set(%(body)s::jsonb, '{metadata,resourceVersion}',"
            " to_jsonb(rev::text)) AS body FROM r),"
            f" o AS ({row_sql}),"
            " l AS (INSERT INTO event_log (revision, kind, namespace, name, type, body, prev_body)"
            " SELECT b.rev, %(kind)s, %(ns)s, %(name)s, %(type)s, b.body, %(prev)s FROM b),"
            f" n AS (SELECT pg_notify('{NOTIFY_CHANNEL}', b.rev::text) FROM b)"
            " SELECT b.rev FROM b, n"
        )
        params: dict[str, Any] = {
            "kind": kind,
            "ns": namespace,
            "name": name,
            "type": type_,
            "body": Jsonb(obj),
            "prev": Jsonb(prev) if prev is not None else None,
        }
        if c is not None:
            params.update(
                uid=c.uid,
                gen=c.generation,
                ds=c.desired_state,
                os=c.observed_status,
                op=c.operation,
                dt=c.deletion_timestamp,
            )
        try:
            cur = await conn.execute(query.encode(), params)
        except psycopg.errors.DataError as exc:
            # NUL characters, NaN or Infinity: valid in Python, not in jsonb.
            raise Invalid(
                f"the object holds a value that cannot be stored ({type(exc).__name__})"
            ) from exc
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def create(self, kind: str, obj: Obj, *, admit: AdmissionCheck | None = None) -> Obj:
        namespace = (obj.get("metadata") or {}).get("namespace")
        new = sem.prepare_create(obj, namespace, sem.now_rfc3339())
        ns, name = sem.ns_key(namespace), sem.meta(new)["name"]
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if admit is not None:
                    cur = await conn.execute(
                        "SELECT 1 FROM objects WHERE kind = %s AND namespace = %s AND name = %s",
                        (kind, ns, name),
                    )
                    if await cur.fetchone() is not None:
                        raise AlreadyExists(f'{kind} "{name}" already exists')
                    await admit(_PgAdmissionView(conn), None, copy.deepcopy(new))
                rev = await self._write(conn, kind, ns, name, "ADDED", new, None, "insert")
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(f'{kind} "{name}" already exists') from exc
        self._hub.advance(rev)
        return sem.with_revision(new, rev)

    async def update(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        mutate: Mutator,
        *,
        subresource: Literal["status"] | None = None,
        admit: AdmissionCheck | None = None,
    ) -> Obj:
        ns = sem.ns_key(namespace)
        async with self._pool.connection() as conn, conn.transaction():
            current = await _locked_body(conn, kind, ns, name)
            plan = sem.apply_update(current, mutate(copy.deepcopy(current)), subresource)
            if plan is None:
                return current
            if admit is not None:
                await admit(_PgAdmissionView(conn), copy.deepcopy(current), plan.obj)
            type_ = "DELETED" if plan.remove else "MODIFIED"
            mode: Literal["delete", "update"] = "delete" if plan.remove else "update"
            rev = await self._write(conn, kind, ns, name, type_, plan.obj, current, mode)
        self._hub.advance(rev)
        return sem.with_revision(plan.obj, rev)

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        expected_resource_version: str | None = None,
        expected_uid: str | None = None,
    ) -> tuple[Obj, bool]:
        ns = sem.ns_key(namespace)
        async with self._pool.connection() as conn, conn.transaction():
            current = await _locked_body(conn, kind, ns, name)
            sem.check_delete_preconditions(current, expected_resource_version, expected_uid)
            m = sem.meta(current)
            if m.get("finalizers"):
                if m.get("deletionTimestamp"):
                    return current, False
                new = sem.mark_deleting(current, sem.now_rfc3339())
                rev = await self._write(conn, kind, ns, name, "MODIFIED", new, current, "update")
                removed = False
            else:
                new = copy.deepcopy(current)
                rev = await self._write(conn, kind, ns, name, "DELETED", new, current, "delete")
                removed = True
        self._hub.advance(rev)
        return sem.with_revision(new, rev), removed

    async def expire(self, kind: str, older_than_seconds: float, *, batch: int = 500) -> int:
        """Delete objects of ``kind`` created more than ``older_than_seconds`` ago (core/v1
        events, which a real cluster expires after an hour), each with its DELETED event;
        returns how many went. Finalizers are honoured like any delete."""
        cutoff = sem.rfc3339_before(older_than_seconds)
        removed = 0
        while True:
            async with self._pool.connection() as conn:
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
                    _, gone = await self.delete(kind, ns or None, name)
                    removed += int(gone)
            if len(keys) < batch:
                return removed

    async def compact(self, keep_revisions: int) -> int:
        """Raise the floor first (briefly locking the counter), then delete below it, so
        a reader sees either the old floor with all entries or the new floor."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE revision_counter SET compact_rev ="
                " GREATEST(compact_rev, rev - %s) RETURNING compact_rev",
                (max(0, keep_revisions),),
            )
            row = await cur.fetchone()
            assert row is not None
            floor = int(row[0])
            await conn.execute("DELETE FROM event_log WHERE revision <= %s", (floor,))
        self._hub.note_floor(floor)
        return floor + 1

    # -- watch -----------------------------------------------------------------------

    async def _read_log(
        self, kind: str, namespace: str | None, after: int, with_prev: bool
    ) -> tuple[int, int, builtins.list[tuple[int, str, Obj, Obj | None]]]:
        """Head, floor and the next log entries, all from one snapshot."""
        ns_cond = " AND l.namespace = %(ns)s" if namespace is not None else ""
        prev = "l.prev_body" if with_prev else "NULL::jsonb"
        query = (
            "SELECT c.rev, c.compact_rev, e.revision, e.type, e.body, e.prev_body"
            " FROM revision_counter c LEFT JOIN LATERAL ("
            f" SELECT l.revision, l.type, l.body, {prev} AS prev_body FROM event_log l"
            " WHERE l.kind = %(kind)s AND l.revision > %(after)s AND l.revision <= c.rev"
            f"{ns_cond} ORDER BY l.revision LIMIT %(batch)s) e ON true ORDER BY e.revision"
        )
        params = {"kind": kind, "after": after, "ns": namespace, "batch": WATCH_BATCH}
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            rows = await cur.fetchall()
        head, floor = int(rows[0][0]), int(rows[0][1])
        entries = [(int(r[2]), r[3], r[4], r[5]) for r in rows if r[2] is not None]
        return head, floor, entries

    async def watch(
        self,
        kind: str,
        *,
        since: int,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        with_prev = selectors is not None and bool(selectors.labels or selectors.fields)
        loop = asyncio.get_running_loop()
        hub = self._hub
        examined = since
        last_sent = loop.time()
        while True:
            wake = hub.event
            if examined < hub.db_floor:
                raise sem.gone(examined, hub.db_floor)
            if examined < hub.cache_floor:
                head, floor, rows = await self._read_log(kind, namespace, examined, with_prev)
                if examined < floor:
                    raise sem.gone(examined, floor)
                hub.advance(head)
                for revision, type_, body, prev in rows:
                    examined = revision
                    seen = sem.watch_type(type_, prev, body, selectors)
                    if seen is not None:
                        yield WatchEvent(seen, revision, body)
                        last_sent = loop.time()
                if len(rows) < WATCH_BATCH:
                    examined = max(examined, head)
                continue
            cached, upto = hub.after(examined)
            for row in cached:
                examined = row.revision
                if row.kind != kind or (namespace is not None and row.namespace != namespace):
                    continue
                seen = sem.watch_type(row.type, row.prev, row.body, selectors)
                if seen is not None:
                    yield WatchEvent(seen, row.revision, copy.deepcopy(row.body))
                    last_sent = loop.time()
            examined = max(examined, upto)
            if cached or hub.loaded > examined:
                continue
            timeout = None
            if bookmark_interval is not None:
                timeout = max(0.0, last_sent + bookmark_interval - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                yield WatchEvent("BOOKMARK", examined)
                last_sent = loop.time()


async def _locked_body(conn: Any, kind: str, ns: str, name: str) -> Obj:
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
