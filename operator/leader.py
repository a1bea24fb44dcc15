"""Leader election with a PostgreSQL session advisory lock (docs/coordinator.md, ADR 0003).

A session advisory lock lives exactly as long as the backend session that took it, so
the lock connection is dedicated to it and never shared with a pool: when that session
dies (coordinator crash, ``pg_terminate_backend``, network loss noticed by the server),
PostgreSQL releases the lock and a standby can take it.

The danger is the window in which the server has already released the lock but the old
leader has not noticed yet. Two measures close it:

* the holder probes its connection every ``check_interval`` seconds with a query bounded
  by ``check_timeout``; the first failure fires ``lost`` at once, before anything else;
* a new leader waits ``takeover_delay`` (longer than one probe period plus its timeout)
  after winning the lock before it reports leadership, so an old leader that lost its
  session has already fired ``lost`` and begun stopping its components.

The claim compare-and-set of the reconciler (docs/state-machine.md) stays the last line of defence
for actuator work still finishing in threads during that hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg

from codehub.operator.clock import Clock, SystemClock

log = logging.getLogger(__name__)

#: ``int.from_bytes(b"codehub", "big")``: one well-known key per installation database.
DEFAULT_LOCK_KEY = 0x636F6465687562


class LockConnection(Protocol):
    """The part of ``psycopg.AsyncConnection`` the elector uses (fakeable in unit tests)."""

    async def execute(self, query: Any, params: Any = None) -> Any: ...

    async def close(self) -> None: ...


Connect = Callable[[], Awaitable[LockConnection]]


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LeaderElector:
    """Campaign for, hold and lose leadership; one instance per coordinator process."""

    def __init__(
        self,
        database_url: str,
        lock_key: int = DEFAULT_LOCK_KEY,
        node_id: str = "",
        retry_interval: float = 5.0,
        clock: Clock | None = None,
        *,
        check_interval: float = 1.0,
        check_timeout: float = 2.0,
        takeover_delay: float | None = None,
        connect: Connect | None = None,
    ) -> None:
        self._database_url = database_url
        self.lock_key = lock_key
        self.node_id = node_id or default_node_id()
        self.retry_interval = retry_interval
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.takeover_delay = (
            check_interval + check_timeout + 0.5 if takeover_delay is None else takeover_delay
        )
        self._clock: Clock = clock or SystemClock()
        self._connect: Connect = connect or self._connect_postgres
        self._conn: LockConnection | None = None
        self._is_leader = False
        #: Set the moment leadership is lost (or released); cleared on each win.
        self.lost = asyncio.Event()
        self._lost_callbacks: list[Callable[[], None]] = []
        self.elected_at: float | None = None

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Register a synchronous callback run the instant leadership is lost."""
        self._lost_callbacks.append(callback)

    async def _connect_postgres(self) -> LockConnection:
        conn = await psycopg.AsyncConnection.connect(
            self._database_url,
            autocommit=True,
            connect_timeout=max(1, int(self.check_timeout) + 1),
            application_name=f"codehub-leader:{self.node_id}"[:63],
            # The server notices a vanished client quickly too, releasing the lock.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=1,
            keepalives_count=3,
        )
        return conn

    async def try_acquire(self) -> bool:
        """One attempt: True when this node now holds the lock (before the takeover delay)."""
        if self._conn is None:
            try:
                self._conn = await self._connect()
            except (psycopg.Error, OSError) as exc:
                log.warning("leader election: cannot connect to the database: %s", _short(exc))
                return False
        try:
            async with asyncio.timeout(self.check_timeout):
                cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
                row = await cur.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("leader election: lock attempt failed: %s", _short(exc))
            await self._drop_connection()
            return False
        return bool(row and row[0])

    async def campaign(self) -> None:
        """Return once this node is leader; retries every ``retry_interval`` seconds."""
        while True:
            if await self.try_acquire():
                log.info(
                    "leader election: %s won the lock; waiting %.1fs before acting",
                    self.node_id,
                    self.takeover_delay,
                )
                await self._clock.sleep(self.takeover_delay)
                if await self._probe():
                    self.lost.clear()
                    self._is_leader = True
                    self.elected_at = self._clock.monotonic()
                    log.info("leader election: %s is leader", self.node_id)
                    return
                await self._drop_connection()
            await self._clock.sleep(self.retry_interval)

    async def hold(self) -> None:
        """Probe the lock connection until it fails; then fire ``lost`` and return."""
        while self.is_leader:
            await self._clock.sleep(self.check_interval)
            if self.lost.is_set():  # released meanwhile
                return
            if not await self._probe():
                log.error("leader election: %s lost the lock connection", self.node_id)
                self._fire_lost()
                await self._drop_connection()
                return

    async def _probe(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the query completes, and hold() then probes on forever.
        try:
            async with asyncio.timeout(self.check_timeout):
                cur = await conn.execute("SELECT 1")
                row = await cur.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("leader election: probe failed: %s", _short(exc))
            return False
        return bool(row and row[0] == 1)

    def _fire_lost(self) -> None:
        was_leader = self._is_leader
        self._is_leader = False
        self.elected_at = None
        self.lost.set()
        if was_leader:
            for callback in self._lost_callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("leader election: a lost-callback failed")

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.check_timeout)

    async def release(self) -> None:
        """Step down voluntarily: closing the session releases the lock at once."""
        self._fire_lost()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,)),
                    self.check_timeout,
                )
        await self._drop_connection()


def _short(exc: BaseException) -> str:
    """One line, no connection string (which may carry a password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
