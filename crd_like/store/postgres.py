"""The Store on PostgreSQL, kine-style (docs/storage.md, docs/architecture.md).

One global, gap-free revision is the resourceVersion; every write appends to an event
log in the same transaction; watchers replay the log after their revision, then follow
new entries, woken by NOTIFY with a poll as the fallback. The parts live in
``codehub.crd_like.store.pg``:

- ``pg.schema``: migrations, the typed columns beside the JSON body, selector SQL;
- ``pg.reads``: get, paginated lists served as of the first page's revision, typed
  column queries;
- ``pg.writes``: create, update, delete and expiry: the row-locked read, revision
  allocation, object row, log entry and NOTIFY in one statement, admission locking;
- ``pg.watch``: the per-store hub (LISTEN, poll, shared log cache), catch-up from the
  database, compaction;
- ``pg.pool``: the connection pool, whose breaker answers "database unavailable" at once
  during an outage instead of letting every request wait the acquisition timeout.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any, Literal

from psycopg_pool import AsyncConnectionPool

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import (
    AdmissionCheck,
    ListResult,
    Mutator,
    Obj,
    Selectors,
    Store,
    WatchEvent,
)
from codehub.crd_like.store.pg import reads, writes
from codehub.crd_like.store.pg import watch as watching
from codehub.crd_like.store.pg.pool import GuardedPool
from codehub.crd_like.store.pg.schema import (
    ADMISSION_LOCK_KEY,
    MIGRATION_LOCK_KEY,
    NOTIFY_CHANNEL,
    migrate,
)

__all__ = [
    "ADMISSION_LOCK_KEY",
    "MIGRATION_LOCK_KEY",
    "NOTIFY_CHANNEL",
    "PostgresStore",
    "migrate",
]


class PostgresStore(Store):
    def __init__(self, pool: AsyncConnectionPool[Any], hub: watching.Hub) -> None:
        self._pool = pool
        self._hub = hub
        self._recent = writes.Recent()

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        watch_poll_interval: float = 1.0,
        min_size: int = 8,
        max_size: int = 10,
        listen: bool = True,
        run_migrations: bool = True,
        watch_cache_size: int = 10_000,
        acquire_timeout: float = 30.0,
    ) -> PostgresStore:
        """Connect, migrate and start the watch hub. ``listen=False`` disables NOTIFY
        (watchers then rely on polling alone; used to prove polling suffices).

        ``acquire_timeout``: how long a request may wait for a free connection. While the
        database is down it waits for none: the pool's breaker refuses at once
        (``pg.pool``; docs/operations.md).

        ``min_size`` connections are kept open (made in the background, so opening does
        not wait for all of them): a pool that grows on demand makes a burst of writes
        wait for connection set-ups one after another, hundreds of milliseconds on a
        loaded machine (docs/adr/0007-api-write-path-performance.md)."""
        if run_migrations:
            await migrate(database_url)
        pool = GuardedPool(
            database_url,
            min_size=min(min_size, max_size),
            max_size=max_size,
            kwargs={"autocommit": True},
            timeout=acquire_timeout,
            open=False,
        )
        await pool.open(wait=False)
        hub = watching.Hub(database_url, pool, watch_poll_interval, listen, watch_cache_size)
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
        return await reads.get(self._pool, kind, namespace, name)

    async def list(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        items, revision, token = await reads.list_page(
            self._pool, kind, namespace, selectors, limit, continue_token, raw=False
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
        items, revision, token = await reads.list_page(
            self._pool, kind, namespace, selectors, limit, continue_token, raw=True
        )
        return sem.RawListResult(items, revision, token)

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
        return await reads.list_by(
            self._pool,
            kind,
            namespace=namespace,
            desired_state=desired_state,
            observed_status=observed_status,
            operation=operation,
            deleting=deleting,
        )

    async def current_revision(self) -> int:
        return await reads.current_revision(self._pool)

    # -- writes ----------------------------------------------------------------------

    async def create(self, kind: str, obj: Obj, *, admit: AdmissionCheck | None = None) -> Obj:
        return await writes.create(self._pool, self._hub, self._recent, kind, obj, admit)

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
        return await writes.update(
            self._pool,
            self._hub,
            self._recent,
            kind,
            namespace,
            name,
            mutate,
            subresource,
            admit,
        )

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        expected_resource_version: str | None = None,
        expected_uid: str | None = None,
    ) -> tuple[Obj, bool]:
        return await writes.delete(
            self._pool,
            self._hub,
            self._recent,
            kind,
            namespace,
            name,
            expected_resource_version,
            expected_uid,
        )

    async def expire(self, kind: str, older_than_seconds: float, *, batch: int = 500) -> int:
        """Delete objects of ``kind`` created more than ``older_than_seconds`` ago (core/v1
        events, which a real cluster expires after an hour), each with its DELETED event;
        returns how many went. Finalizers are honoured like any delete."""
        return await writes.expire(
            self._pool, self._hub, self._recent, kind, older_than_seconds, batch
        )

    async def compact(self, keep_revisions: int) -> int:
        """Raise the floor first, then delete below it (see ``pg.watch.compact``)."""
        return await watching.compact(self._pool, self._hub, keep_revisions)

    # -- watch -----------------------------------------------------------------------

    def watch(
        self,
        kind: str,
        *,
        since: int,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        return watching.watch(
            self._pool, self._hub, kind, since, namespace, selectors, bookmark_interval
        )
