"""A keyed work queue with controller-runtime (client-go ``workqueue``) semantics.

Pure asyncio, no I/O, time from a ``Clock`` so tests move it instead of waiting:

* **dedup**: a key added while it waits is queued once;
* **one worker per key**: a key being processed is never handed out again until
  ``done``; added meanwhile, it is marked dirty and re-queued by ``done``, so a change that
  arrived during processing is always looked at afterwards;
* **delays**: ``add_after`` parks a key until its time; ``add_rate_limited`` parks it for
  the per-key exponential backoff of ``RateLimiter`` (base * 2**failures, capped);
  ``forget`` resets that backoff after a success;
* **shutdown**: ``get`` returns None once the queue is shut down, waiting keys are dropped.

``begin(key)`` takes a key straight into processing (for an event source that runs the
work in its own task, kopf's handlers); it fails, marking the key dirty, if a worker
already has it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from codehub.operator.clock import Clock, SystemClock

K = TypeVar("K", bound=Hashable)


class QueueMetrics(Protocol):
    """What a queue reports (controller-runtime's ``workqueue_*`` metrics)."""

    def added(self) -> None: ...

    def depth(self, value: int) -> None: ...

    def waited(self, seconds: float) -> None: ...

    def retried(self) -> None: ...


class _NoMetrics:
    def added(self) -> None:
        pass

    def depth(self, value: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass

    def retried(self) -> None:
        pass


@dataclass
class RateLimiter(Generic[K]):
    """Per-key exponential backoff: ``base * 2**n`` for the n-th failure, at most ``cap``."""

    base: float = 1.0
    cap: float = 300.0
    _failures: dict[K, int] = field(default_factory=dict)

    def when(self, key: K) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.base * float(2**n), self.cap)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class WorkQueue(Generic[K]):
    """See the module docstring."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        limiter: RateLimiter[K] | None = None,
        metrics: QueueMetrics | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.limiter: RateLimiter[K] = limiter or RateLimiter()
        self.metrics: QueueMetrics = metrics or _NoMetrics()
        #: Ready keys in FIFO order, each at most once: an ordered set, so taking a key
        #: out of the middle (``begin``) is O(1), not a scan of every queued key.
        self._queue: OrderedDict[K, None] = OrderedDict()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}
        self._waiting: list[tuple[float, int, K]] = []
        self._seq = 0
        self._wake = asyncio.Event()
        self._shut = False

    # -- adding ------------------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shut or key in self._dirty:
            return
        self.metrics.added()
        self._dirty.add(key)
        self._added_at.setdefault(key, self.clock.monotonic())
        if key in self._processing:
            return
        self._queue[key] = None
        self._changed()

    def add_after(self, key: K, delay: float) -> None:
        if self._shut:
            return
        if delay <= 0:
            self.add(key)
            return
        self._seq += 1
        heapq.heappush(self._waiting, (self.clock.monotonic() + delay, self._seq, key))
        self._wake.set()

    def add_rate_limited(self, key: K, at_least: float = 0.0) -> float:
        """Park ``key`` for its backoff (or ``at_least`` if longer); returns the delay."""
        delay = max(self.limiter.when(key), at_least)
        self.metrics.retried()
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self.limiter.forget(key)

    def add_unless_processing(self, key: K) -> bool:
        """``add``, unless ``key`` is being processed: for a periodic re-check, which
        processing that has not ended yet makes redundant (its outcome goes to whoever
        processes it; marking the key dirty would only buy a second run afterwards that
        finds nothing to do). True if the key is queued now."""
        if key in self._processing:
            return False
        self.add(key)
        return not self._shut

    # -- processing --------------------------------------------------------------------

    def begin(self, key: K) -> bool:
        """Take ``key`` into processing now; False (and dirty) if a worker has it."""
        if key in self._processing:
            self.add(key)
            return False
        if key in self._dirty:
            self._dirty.discard(key)
            self._added_at.pop(key, None)
            self._queue.pop(key, None)
            self._changed()
        self._processing.add(key)
        return True

    def get_nowait(self) -> K | None:
        """The next ready key (now in processing), or None."""
        self._promote()
        if self._shut or not self._queue:
            return None
        key, _ = self._queue.popitem(last=False)
        self._processing.add(key)
        self._dirty.discard(key)
        added = self._added_at.pop(key, None)
        if added is not None:
            self.metrics.waited(max(self.clock.monotonic() - added, 0.0))
        self._changed()
        return key

    async def get(self) -> K | None:
        """Wait for the next key; None after ``shutdown``."""
        while not self._shut:
            key = self.get_nowait()
            if key is not None:
                return key
            self._wake.clear()
            await self._sleep_until_next()
        return None

    def done(self, key: K) -> None:
        """Processing of ``key`` finished: re-queue it if it was added meanwhile."""
        self._processing.discard(key)
        if key in self._dirty and not self._shut:
            self._queue[key] = None
            self._changed()

    def shutdown(self) -> None:
        self._shut = True
        self._queue.clear()
        self._dirty.clear()
        self._waiting.clear()
        self._wake.set()

    # -- introspection -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shut

    def processing(self, key: K) -> bool:
        return key in self._processing

    def waiting(self) -> int:
        return len(self._waiting)

    def next_ready_in(self) -> float | None:
        """Seconds until the earliest parked key is due (None: none parked)."""
        if not self._waiting:
            return None
        return max(self._waiting[0][0] - self.clock.monotonic(), 0.0)

    # -- internals ---------------------------------------------------------------------

    def _promote(self) -> None:
        now = self.clock.monotonic()
        while self._waiting and self._waiting[0][0] <= now:
            _, _, key = heapq.heappop(self._waiting)
            self.add(key)

    def _changed(self) -> None:
        self.metrics.depth(len(self._queue))
        self._wake.set()

    async def _sleep_until_next(self) -> None:
        delay = self.next_ready_in()
        woken = asyncio.ensure_future(self._wake.wait())
        if delay is None:
            await woken
            return
        timer = asyncio.ensure_future(self.clock.sleep(delay))
        try:
            await asyncio.wait({woken, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, timer):
                task.cancel()
