"""Activity of proxied workspaces: open connections and throttled status writes.

Every replica keeps its own open-connection counts in memory (they describe only its
own sockets) and mirrors them to PostgreSQL rows with a heartbeat; the total any
replica reports is the sum of live rows. ``status.last_access_at``,
``last_activity_source`` and ``open_connections`` are written together, at most once
per ``activity_interval`` per workspace across all replicas (the store decides who
writes), as a merge into ``status`` that leaves every other field alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from codehub.crd_like.config import ApiConfig
from codehub.crd_like.store.activity import ActivityStore
from codehub.crd_like.store.interface import Obj, Store, StoreError
from codehub.vocabulary.timestamps import format_rfc3339, utc_now

from .metrics import ProxyMetrics

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class WorkspaceRef:
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, obj: Obj) -> WorkspaceRef:
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta["uid"]))


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ActivityTracker:
    """One per server replica. ``touch`` is cheap on the hot path (local throttle first)."""

    def __init__(
        self,
        store: Store,
        activity: ActivityStore,
        config: ApiConfig,
        metrics: ProxyMetrics,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.activity = activity
        self.metrics = metrics
        self.replica = config.replica_id or default_replica_id()
        self.interval = config.activity_interval
        self.replica_ttl = config.replica_ttl
        self.clock = clock
        self.open: dict[WorkspaceRef, int] = {}
        self._last_local: dict[str, dt.datetime] = {}
        self._pending: dict[WorkspaceRef, str] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self._closing: set[asyncio.Future[None]] = set()

    async def touch(self, ref: WorkspaceRef, source: str) -> bool:
        """Record use of ``ref`` (source http|websocket|wake|api); True if status was written.

        Within the interval of this replica's last write nothing is asked of the
        database; the activity is remembered and ``flush`` writes it later.
        """
        now = self.clock()
        last = self._last_local.get(ref.uid)
        if last is not None and (now - last).total_seconds() < self.interval:
            self._pending[ref] = source
            return False
        self._pending.pop(ref, None)
        return await self._write(ref, source, now)

    def touch_soon(self, ref: WorkspaceRef, source: str) -> None:
        """``touch`` off the request path: a request never waits for the database."""
        last = self._last_local.get(ref.uid)
        if last is not None and (self.clock() - last).total_seconds() < self.interval:
            self._pending[ref] = source
            return
        task = asyncio.get_running_loop().create_task(self.touch(ref, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, ref: WorkspaceRef, source: str, now: dt.datetime) -> bool:
        try:
            if not await self.activity.claim_write(ref.uid, now, self.interval):
                # Another replica wrote within the interval: wait for the end of *its*
                # interval, and keep the activity to write then.
                self._last_local[ref.uid] = await self.activity.last_write(ref.uid) or now
                self._pending.setdefault(ref, source)
                return False
            count = await self.activity.open_connections(ref.uid, now, self.replica_ttl)
        except Exception as exc:
            log.warning("activity store unavailable: %r", exc)
            return False
        self._last_local[ref.uid] = now
        patch = {
            "last_access_at": format_rfc3339(now),
            "last_activity_source": source,
            "open_connections": count,
        }

        def merge(current: Obj) -> Obj:
            if (current.get("metadata") or {}).get("uid") != ref.uid:
                raise _Replaced()
            status = dict(current.get("status") or {})
            status.update(patch)
            current["status"] = status
            return current

        try:
            await self.store.update(
                "workspaces", ref.namespace, ref.name, merge, subresource="status"
            )
        except (_Replaced, StoreError):
            return False
        self.metrics.activity_writes.inc()
        return True

    async def connection_opened(self, ref: WorkspaceRef) -> None:
        await self._set_open(ref, +1)
        await self.touch(ref, "websocket")

    async def connection_closed(self, ref: WorkspaceRef) -> None:
        """Count the connection as closed, even when the caller is being cancelled.

        A client that disconnects cancels its handler, usually while this runs in the
        handler's ``finally``. Were the decrement cancelled too, the replica's row would
        keep counting an open connection and, heartbeated, keep the workspace awake forever.
        """
        task = asyncio.ensure_future(self._set_open(ref, -1))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._pending[ref] = "websocket"
        await asyncio.shield(task)

    async def _set_open(self, ref: WorkspaceRef, delta: int) -> None:
        async with self._lock:
            count = max(0, self.open.get(ref, 0) + delta)
            if count:
                self.open[ref] = count
            else:
                self.open.pop(ref, None)
            self.metrics.open_connections.set(sum(self.open.values()))
            try:
                await self.activity.set_open(self.replica, ref.uid, count, self.clock())
            except Exception as exc:
                log.warning("activity store unavailable: %r", exc)

    async def flush(self) -> int:
        """Heartbeat this replica's rows, expire dead ones, write pending activity."""
        now = self.clock()
        try:
            await self.activity.heartbeat(self.replica, now)
            await self.activity.expire(now, self.replica_ttl)
        except Exception as exc:
            log.warning("activity heartbeat failed: %r", exc)
        written = 0
        for ref, source in list(self._pending.items()):
            last = self._last_local.get(ref.uid)
            if last is not None and (now - last).total_seconds() < self.interval:
                continue
            del self._pending[ref]
            written += await self._write(ref, source, now)
        return written

    async def run(self) -> None:
        """Flush every third of the replica TTL (and at least once per interval)."""
        period = max(0.05, min(self.replica_ttl / 3.0, self.interval))
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(Exception):
                await self.flush()

    async def close(self) -> None:
        """A clean shutdown takes this replica's connections out of the totals at once."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        for ref in list(self.open):
            with contextlib.suppress(Exception):
                await self.activity.set_open(self.replica, ref.uid, 0, self.clock())
        self.open.clear()


class _Replaced(Exception):
    """The name now belongs to another workspace (deleted and created again)."""
