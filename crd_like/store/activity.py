"""Proxy activity kept in PostgreSQL so several server replicas agree (docs/proxy.md).

- Open WebSocket connections: one row per (replica, workspace) with a heartbeat. The
  total is the sum over rows whose heartbeat is younger than a TTL, so a crashed
  replica's connections stop counting once its heartbeat ages out; ``expire`` deletes
  those rows.
- ``claim_write``: at most one ``status.last_access_at`` write per workspace per
  interval across every replica (a conditional upsert decides who writes).
- ``use_link``: a sign-in link id is recorded on first use; a second use anywhere fails.

``MemoryActivityStore`` has the same behaviour for unit tests and in-memory servers.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from typing import Any

from psycopg_pool import AsyncConnectionPool


def _ago(now: dt.datetime, seconds: float) -> dt.datetime:
    return now - dt.timedelta(seconds=seconds)


class ActivityStore(ABC):
    @abstractmethod
    async def set_open(self, replica: str, workspace: str, count: int, now: dt.datetime) -> None:
        """Record this replica's open connections to ``workspace`` (0 removes the row)."""

    @abstractmethod
    async def heartbeat(self, replica: str, now: dt.datetime) -> None:
        """Refresh every row of ``replica`` so its counts stay live."""

    @abstractmethod
    async def open_connections(self, workspace: str, now: dt.datetime, ttl: float) -> int:
        """Sum of open connections over replicas whose heartbeat is younger than ``ttl``."""

    @abstractmethod
    async def expire(self, now: dt.datetime, ttl: float) -> int:
        """Delete rows of dead replicas and used links past expiry; returns rows removed."""

    @abstractmethod
    async def claim_write(self, workspace: str, now: dt.datetime, interval: float) -> bool:
        """True for exactly one caller per ``interval`` per workspace, across replicas."""

    @abstractmethod
    async def last_write(self, workspace: str) -> dt.datetime | None:
        """When the write that holds the current interval was claimed."""

    @abstractmethod
    async def use_link(self, link_id: str, expires_at: dt.datetime) -> bool:
        """True the first time ``link_id`` is used, False on every later use."""

    async def close(self) -> None:
        return None


class MemoryActivityStore(ActivityStore):
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[int, dt.datetime]] = {}
        self.writes: dict[str, dt.datetime] = {}
        self.links: dict[str, dt.datetime] = {}

    async def set_open(self, replica: str, workspace: str, count: int, now: dt.datetime) -> None:
        if count <= 0:
            self.rows.pop((replica, workspace), None)
        else:
            self.rows[(replica, workspace)] = (count, now)

    async def heartbeat(self, replica: str, now: dt.datetime) -> None:
        for key, (count, _) in list(self.rows.items()):
            if key[0] == replica:
                self.rows[key] = (count, now)

    async def open_connections(self, workspace: str, now: dt.datetime, ttl: float) -> int:
        floor = _ago(now, ttl)
        return sum(c for (_, w), (c, at) in self.rows.items() if w == workspace and at > floor)

    async def expire(self, now: dt.datetime, ttl: float) -> int:
        floor = _ago(now, ttl)
        dead = [k for k, (_, at) in self.rows.items() if at <= floor]
        used = [k for k, exp in self.links.items() if exp <= now]
        for key in dead:
            del self.rows[key]
        for link in used:
            del self.links[link]
        return len(dead) + len(used)

    async def claim_write(self, workspace: str, now: dt.datetime, interval: float) -> bool:
        last = self.writes.get(workspace)
        if last is not None and last > _ago(now, interval):
            return False
        self.writes[workspace] = now
        return True

    async def last_write(self, workspace: str) -> dt.datetime | None:
        return self.writes.get(workspace)

    async def use_link(self, link_id: str, expires_at: dt.datetime) -> bool:
        if link_id in self.links:
            return False
        self.links[link_id] = expires_at
        return True


class PostgresActivityStore(ActivityStore):
    """Uses its own small pool: the tables are the proxy's, not the object store's."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, *, max_size: int = 4) -> PostgresActivityStore:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True)
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def set_open(self, replica: str, workspace: str, count: int, now: dt.datetime) -> None:
        async with self._pool.connection() as conn:
            if count <= 0:
                await conn.execute(
                    "DELETE FROM proxy_connections WHERE replica_id = %s AND workspace = %s",
                    (replica, workspace),
                )
                return
            await conn.execute(
                "INSERT INTO proxy_connections (replica_id, workspace, open_count, heartbeat_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (replica_id, workspace) DO UPDATE"
                " SET open_count = EXCLUDED.open_count, heartbeat_at = EXCLUDED.heartbeat_at",
                (replica, workspace, count, now),
            )

    async def heartbeat(self, replica: str, now: dt.datetime) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE proxy_connections SET heartbeat_at = %s WHERE replica_id = %s",
                (now, replica),
            )

    async def open_connections(self, workspace: str, now: dt.datetime, ttl: float) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT coalesce(sum(open_count), 0) FROM proxy_connections"
                " WHERE workspace = %s AND heartbeat_at > %s",
                (workspace, _ago(now, ttl)),
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def expire(self, now: dt.datetime, ttl: float) -> int:
        async with self._pool.connection() as conn:
            dead = await conn.execute(
                "DELETE FROM proxy_connections WHERE heartbeat_at <= %s", (_ago(now, ttl),)
            )
            used = await conn.execute("DELETE FROM proxy_used_links WHERE expires_at <= %s", (now,))
        return int(max(dead.rowcount, 0) + max(used.rowcount, 0))

    async def claim_write(self, workspace: str, now: dt.datetime, interval: float) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO proxy_activity_writes (workspace, written_at) VALUES (%s, %s)"
                " ON CONFLICT (workspace) DO UPDATE SET written_at = EXCLUDED.written_at"
                " WHERE proxy_activity_writes.written_at <= %s RETURNING workspace",
                (workspace, now, _ago(now, interval)),
            )
            return await cur.fetchone() is not None

    async def last_write(self, workspace: str) -> dt.datetime | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT written_at FROM proxy_activity_writes WHERE workspace = %s", (workspace,)
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def use_link(self, link_id: str, expires_at: dt.datetime) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO proxy_used_links (link_id, expires_at) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING RETURNING link_id",
                (link_id, expires_at),
            )
            return await cur.fetchone() is not None
