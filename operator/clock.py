"""Time as a dependency: the time-based components (reconciler backoff, TTL Manager,
Archive GC, staleness) read it from a Clock so tests can move time instead of waiting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


async def run_every(
    clock: Clock,
    interval: float,
    do_pass: Callable[[], Awaitable[object]],
    log: logging.Logger,
    what: str,
    *,
    wait_first: bool = False,
) -> None:
    """A leader component's loop: a pass, then ``interval`` on ``clock``, until cancelled.

    A failed pass is logged with its traceback and the loop goes on: one bad pass must not
    end the component (the next one sees fresh state). Cancellation always propagates.
    """
    while True:
        if wait_first:
            await clock.sleep(interval)
        try:
            await do_pass()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pass failed", what)
        if not wait_first:
            await clock.sleep(interval)
