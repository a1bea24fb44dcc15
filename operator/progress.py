"""status.progress of a long storage operation (docs/operations.md#progress).

The data path calls ``on_progress(done, total)`` from its worker threads a few times per
second; a reporter keeps only the latest pair (under a lock) and a task on the event loop
writes it to ``status.progress`` at most every ``interval`` seconds, fenced on the
operation like every other write of a claimed operation. When the actuator returns or
fails, the progress written is removed, so a settled workspace never shows any.

Progress is advisory: a failed write is logged and skipped; losing the operation stops
the reports and leaves the rest to the reconciler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from codehub.adapters.errors import CodehubError
from codehub.adapters.interfaces import ProgressCallback
from codehub.operator.context import OperatorContext
from codehub.operator.planning import Operation
from codehub.operator.reconcile_view import View
from codehub.operator.status_writes import LostOwnership, write_op_fenced
from codehub.vocabulary.timestamps import format_rfc3339

log = logging.getLogger(__name__)

#: Seconds between two progress writes of one operation.
PROGRESS_INTERVAL = 2.0
#: Seconds the final clearing write may take before it is given up.
_CLEAR_TIMEOUT = 5.0


def progress_body(
    op: Operation, done: int, total: int | None, elapsed: float, updated_at: str
) -> dict[str, Any]:
    """The ``status.progress`` object; the rate is the average since the transfer began."""
    rate = round(done / elapsed, 1) if elapsed > 0 else None
    return {
        "operation": op.value,
        "bytes_done": max(done, 0),
        "bytes_total": total if total is None else max(total, 0),
        "bytes_per_second": rate,
        "updated_at": updated_at,
    }


class ProgressReporter:
    """Thread-safe sink for ``on_progress`` and the writer of ``status.progress``."""

    def __init__(
        self, ctx: OperatorContext, w: View, op: Operation, interval: float = PROGRESS_INTERVAL
    ) -> None:
        self.ctx = ctx
        self.w = w
        self.op = op
        self.interval = interval
        self.writes = 0
        self._lock = threading.Lock()
        self._latest: tuple[int, int | None] | None = None
        self._sent: tuple[int, int | None] | None = None
        self._started = ctx.clock.monotonic()
        self._lost = False

    def __call__(self, done: int, total: int | None) -> None:
        with self._lock:
            self._latest = (done, total)

    async def run(self) -> None:
        """Write the latest report every ``interval`` until cancelled or ownership is lost."""
        while not self._lost:
            await self.ctx.clock.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        with self._lock:
            latest = self._latest
        if latest is None or latest == self._sent or self._lost:
            return
        elapsed = self.ctx.clock.monotonic() - self._started
        now = format_rfc3339(self.ctx.clock.now(), micro=True)
        body = progress_body(self.op, latest[0], latest[1], elapsed, now)
        if await self._write(body):
            self._sent = latest
            self.writes += 1

    async def clear(self) -> None:
        """Remove the progress written (nothing to do when none was)."""
        if self.writes and not self._lost:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLEAR_TIMEOUT):
                    await self._write(None)

    async def _write(self, body: dict[str, Any] | None) -> bool:
        try:
            await write_op_fenced(self.ctx, self.w, {"progress": body})
        except LostOwnership:
            self._lost = True
            return False
        except CodehubError as exc:
            log.warning("%s/%s: progress not recorded: %s", self.w.ns, self.w.name, exc)
            return False
        return True


@contextlib.asynccontextmanager
async def reporting(
    ctx: OperatorContext, w: View, op: Operation, interval: float = PROGRESS_INTERVAL
) -> AsyncIterator[ProgressCallback]:
    """``on_progress`` for one actuator call, written while it runs and cleared after."""
    reporter = ProgressReporter(ctx, w, op, interval)
    task = asyncio.create_task(reporter.run())
    try:
        yield reporter
    finally:
        task.cancel()
        await asyncio.wait([task])
        await reporter.clear()
