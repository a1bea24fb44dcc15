"""Group commit for compare-and-swap updates (docs/adr/0007-api-write-path-performance.md).

A lone update goes out at once, as its own statement. Updates that arrive while one is
in flight wait for it and then go out together: one pipeline, one ``send()``, one
backend woken, one transaction, instead of one of each per update. With 8 writers a
server spends most of a write's wall time waiting to get a core back after waking
PostgreSQL; batching wakes it once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


class Batcher(Generic[P, R]):
    """Runs ``one`` for a call that finds nothing in flight, ``many`` for the calls that
    queued up meanwhile (in arrival order, results in the same order). An exception of
    ``many`` goes to every call of its batch. A call cancelled while it waits does not
    disturb the others (its entry may still run: like any write cancelled mid-flight)."""

    def __init__(
        self,
        one: Callable[[P], Awaitable[R]],
        many: Callable[[list[P]], Awaitable[list[R]]],
        limit: int = 64,
    ) -> None:
        self._one = one
        self._many = many
        self._limit = max(1, limit)
        self._queue: list[tuple[P, asyncio.Future[R]]] = []
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # for tests and benchmarks: batches of more than one call
        self.batched = 0  # calls that went out in such batches

    async def run(self, params: P) -> R:
        if self._busy:
            future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            self._queue.append((params, future))
            return await future
        self._busy = True
        try:
            return await self._one(params)
        finally:
            self._next()

    def _next(self) -> None:
        if self._queue:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False
            self._task = None

    async def _drain(self) -> None:
        batch, self._queue = self._queue[: self._limit], self._queue[self._limit :]
        batch = [(p, f) for p, f in batch if not f.cancelled()]
        try:
            if len(batch) == 1:
                results = [await self._one(batch[0][0])]
            elif batch:
                self.batches += 1
                self.batched += len(batch)
                results = await self._many([p for p, _ in batch])
            else:
                results = []
        except BaseException as exc:  # every caller of the batch learns the outcome
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._next()
