"""The Archive GC's first-seen times in PostgreSQL (docs/archive-gc.md).

The table belongs to the GC and is created here, idempotently, before the first pass;
it is not part of the API server's schema. Keeping it in the database (not in memory)
is what makes the orphan delay survive coordinator restarts and leader changes. Every
statement is a batch over one listing page, so a pass costs a few queries per thousand
objects; ``queries`` counts them for the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS archive_gc_orphans (
    key        text COLLATE "C" PRIMARY KEY,
    first_seen timestamptz NOT NULL
)
"""


class FirstSeen(Protocol):
    """What a pass needs from the first-seen times (PostgreSQL, or memory in unit tests)."""

    queries: int

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def in_range(self, after: str, up_to: str) -> dict[str, datetime]: ...

    async def mark(self, keys: Sequence[str], now: datetime) -> None: ...

    async def forget(self, keys: Sequence[str]) -> None: ...

    async def forget_after(self, after: str) -> None: ...


class FirstSeenStore:
    """One connection for one pass (or one preview); use as ``async with``."""

    def __init__(self, database_url: str, *, connect_timeout: float = 10.0) -> None:
        self._url = database_url
        self._timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self.queries = 0

    async def __aenter__(self) -> FirstSeenStore:
        self._conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=int(self._timeout)
        )
        await self._execute(SCHEMA)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        assert self._conn is not None, "use FirstSeenStore as an async context manager"
        self.queries += 1
        cur = await self._conn.execute(sql, params)
        return await cur.fetchall() if cur.description is not None else []

    async def in_range(self, after: str, up_to: str) -> dict[str, datetime]:
        """Stored times of the keys in ``(after, up_to]`` (byte order, like S3 listings)."""
        rows = await self._execute(
            "SELECT key, first_seen FROM archive_gc_orphans WHERE key > %s AND key <= %s",
            (after, up_to),
        )
        return {str(k): t for k, t in rows if isinstance(t, datetime)}

    async def mark(self, keys: Sequence[str], now: datetime) -> None:
        if keys:
            await self._execute(
                "INSERT INTO archive_gc_orphans (key, first_seen) "
                "SELECT k, %s FROM unnest(%s::text[]) AS k ON CONFLICT (key) DO NOTHING",
                (now, list(keys)),
            )

    async def forget(self, keys: Sequence[str]) -> None:
        if keys:
            await self._execute(
                "DELETE FROM archive_gc_orphans WHERE key = ANY(%s::text[])", (list(keys),)
            )

    async def forget_after(self, after: str) -> None:
        """Drop the times of keys past the last listed one: they left the bucket."""
        await self._execute("DELETE FROM archive_gc_orphans WHERE key > %s", (after,))

    async def all_times(self) -> dict[str, datetime]:
        rows = await self._execute("SELECT key, first_seen FROM archive_gc_orphans")
        return {str(k): t for k, t in rows if isinstance(t, datetime)}


class MemoryFirstSeen:
    """The same contract in a dict, for unit tests; ``fail_next`` raises a psycopg error
    from the next call so database failures can be tested without a database."""

    def __init__(self) -> None:
        self.times: dict[str, datetime] = {}
        self.queries = 0
        self._fail_after = 0
        self._failures = 0

    def fail_next(self, times: int = 1, after: int = 0) -> None:
        """The ``times`` calls following the next ``after`` ones raise a psycopg error."""
        self._fail_after, self._failures = after, times

    def _enter(self) -> None:
        self.queries += 1
        if self._failures:
            if self._fail_after:
                self._fail_after -= 1
                return
            self._failures -= 1
            raise psycopg.OperationalError("injected")

    async def __aenter__(self) -> MemoryFirstSeen:
        self._enter()
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def in_range(self, after: str, up_to: str) -> dict[str, datetime]:
        self._enter()
        return {k: t for k, t in self.times.items() if after < k <= up_to}

    async def mark(self, keys: Sequence[str], now: datetime) -> None:
        if keys:
            self._enter()
            for key in keys:
                self.times.setdefault(key, now)

    async def forget(self, keys: Sequence[str]) -> None:
        if keys:
            self._enter()
            for key in keys:
                self.times.pop(key, None)

    async def forget_after(self, after: str) -> None:
        self._enter()
        for key in [k for k in self.times if k > after]:
            del self.times[key]
