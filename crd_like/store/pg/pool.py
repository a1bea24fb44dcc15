"""The connection pool behind the store, with a breaker for database outages.

Without it, every request made while PostgreSQL is down waits the pool's whole timeout
for a connection that cannot come, then answers 503: clients hang, and requests pile up.
The breaker turns that into an immediate "database unavailable" (the server's 503
``Status`` with ``Retry-After``, docs/errors.md):

* it **opens** when an attempt to connect fails (the pool's own, or the probe's);
* while open, every ``connection()`` is refused at once; once per ``interval`` one refusal
  starts the single **probe**, a direct connection attempt in the background, never one
  a request waits for;
* it **closes** when a connection succeeds (the probe's, or the pool's own reconnect).

A connection that merely takes long (``PoolTimeout``: every connection busy) does not
open it: overload is not an outage. It starts the probe instead, which opens the breaker
only if connecting really fails. The decisions are ``Breaker``'s, pure over an injected
clock, so they are tested without a database or a wait (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

#: Seconds between probes while the database is unavailable.
PROBE_INTERVAL = 1.0
#: A probe that has not connected within this many seconds failed.
PROBE_TIMEOUT = 3.0


class DatabaseUnavailable(psycopg.OperationalError):
    """Refused at once: connecting to the database failed moments ago. An
    OperationalError like the pool's own timeout, so every caller handles it as one."""


class Admission(Enum):
    PASS = "pass"
    REFUSE = "refuse"
    #: refuse this one too, and start the one probe
    PROBE = "probe"


@dataclass
class Breaker:
    """The decisions (module docstring); the caller does the I/O they ask for."""

    interval: float = PROBE_INTERVAL
    clock: Callable[[], float] = time.monotonic
    is_open: bool = False
    probing: bool = False
    _probe_at: float = field(default=0.0, repr=False)

    def admit(self) -> Admission:
        """May a request ask the pool for a connection now?"""
        if not self.is_open:
            return Admission.PASS
        if self.probing or self.clock() < self._probe_at:
            return Admission.REFUSE
        self.probing = True
        return Admission.PROBE

    def timed_out(self) -> bool:
        """A request waited the acquisition timeout: busy or down? True: start the
        probe to find out (unless one is running)."""
        if self.probing:
            return False
        self.probing = True
        return True

    def failed(self) -> None:
        """A connection attempt failed: open, and probe again after the interval."""
        self.is_open = True
        self._probe_at = self.clock() + self.interval

    def succeeded(self) -> None:
        self.is_open = False

    def probed(self, ok: bool) -> None:
        self.probing = False
        if ok:
            self.succeeded()
        else:
            self.failed()


def _reporting(breaker: Breaker) -> type[psycopg.AsyncConnection[Any]]:
    """A connection class whose ``connect`` tells the breaker how it went: the pool's
    own connection attempts are the first to see an outage, and its reconnects the
    first to see the end of one."""

    class Reporting(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                conn = await super().connect(conninfo, **kwargs)
            except psycopg.OperationalError:
                breaker.failed()
                raise
            breaker.succeeded()
            return conn

    return Reporting


async def _connect_once(conninfo: str) -> None:
    async with asyncio.timeout(PROBE_TIMEOUT):
        conn = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=max(int(PROBE_TIMEOUT), 1)
        )
        await conn.close()


class GuardedPool(AsyncConnectionPool[Any]):
    """``AsyncConnectionPool`` whose ``connection()`` consults the breaker first.

    ``probe``: one connection attempt that raises on failure (default: a direct
    connection to ``conninfo``); injected by the unit tests to count attempts.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        breaker: Breaker | None = None,
        probe: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.breaker = breaker or Breaker()
        super().__init__(conninfo, connection_class=_reporting(self.breaker), **kwargs)
        self._probe = probe or (lambda: _connect_once(conninfo))
        self._probes: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:  # noqa: ASYNC109 (the base signature)
        admission = self.breaker.admit()
        if admission is not Admission.PASS:
            if admission is Admission.PROBE:
                self._start_probe()
            raise DatabaseUnavailable("the database is unavailable (connecting failed)")
        try:
            conn = await self.getconn(timeout=timeout)
        except PoolTimeout:
            if self.breaker.timed_out():
                self._start_probe()
            raise
        try:
            async with conn:
                yield conn
        finally:
            await self.putconn(conn)

    def _start_probe(self) -> None:
        task = asyncio.get_running_loop().create_task(self._run_probe())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _run_probe(self) -> None:
        try:
            await self._probe()
        except (OSError, TimeoutError, psycopg.Error):
            self.breaker.probed(False)
        except BaseException:
            self.breaker.probed(False)
            raise
        else:
            self.breaker.probed(True)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (the base signature)
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        await super().close(timeout)
