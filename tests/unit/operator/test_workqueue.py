"""WorkQueue: controller-runtime semantics, with a FakeClock (nothing waits for real)."""

from __future__ import annotations

import asyncio

import pytest

from codehub.operator.clock import FakeClock
from codehub.operator.workqueue import RateLimiter, WorkQueue


class CountingMetrics:
    def __init__(self) -> None:
        self.adds = 0
        self.depths: list[int] = []
        self.waits: list[float] = []
        self.retries = 0

    def added(self) -> None:
        self.adds += 1

    def depth(self, value: int) -> None:
        self.depths.append(value)

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def retried(self) -> None:
        self.retries += 1


def make(base: float = 1.0, cap: float = 8.0) -> tuple[WorkQueue[str], FakeClock, CountingMetrics]:
    clock = FakeClock()
    metrics = CountingMetrics()
    return WorkQueue(clock=clock, limiter=RateLimiter(base, cap), metrics=metrics), clock, metrics


def test_adds_are_deduplicated_while_waiting() -> None:
    q, _, m = make()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert m.adds == 2
    assert [q.get_nowait(), q.get_nowait(), q.get_nowait()] == ["a", "b", None]


def test_one_worker_per_key_and_requeue_when_added_during_processing() -> None:
    q, _, _ = make()
    q.add("a")
    assert q.get_nowait() == "a"
    q.add("a")  # changed while being processed
    assert len(q) == 0  # not handed to a second worker
    assert q.get_nowait() is None
    q.add("a")  # still deduplicated while dirty
    q.done("a")
    assert len(q) == 1  # processed again afterwards
    assert q.get_nowait() == "a"
    q.done("a")
    assert q.get_nowait() is None  # not dirty: done for good


def test_begin_takes_a_key_directly_and_refuses_a_busy_one() -> None:
    q, _, _ = make()
    q.add("a")
    assert q.begin("a")  # takes it out of the queue: processed once, not twice
    assert len(q) == 0
    assert not q.begin("a")  # busy: marked dirty instead
    assert q.get_nowait() is None
    q.done("a")
    assert q.get_nowait() == "a"
    assert not q.begin("a")  # a worker has it
    q.done("a")
    assert q.get_nowait() == "a"  # the refused begin is not lost


def test_begin_from_the_middle_keeps_the_others_in_order() -> None:
    """An event source takes keys out of the middle of a long queue (a safety-net pass
    queued thousands); the rest keep their FIFO order and each comes out once."""
    q, _, _ = make()
    for key in "abcdef":
        q.add(key)
    assert q.begin("d")
    assert q.begin("b")
    assert len(q) == 4
    q.add("b")  # added again while processing: dirty, not queued twice
    assert [q.get_nowait() for _ in range(4)] == ["a", "c", "e", "f"]
    assert q.get_nowait() is None
    q.done("b")
    q.done("d")
    assert q.get_nowait() == "b"  # re-queued at the end, once
    assert q.get_nowait() is None


def test_add_unless_processing_leaves_a_key_in_processing_clean() -> None:
    q, _, _ = make()
    assert q.begin("a")
    assert not q.add_unless_processing("a")  # no dirty mark: no second run after done
    q.done("a")
    assert q.get_nowait() is None
    assert q.add_unless_processing("a")  # idle: queued like add
    assert q.add_unless_processing("a")  # already queued: still queued, once
    assert len(q) == 1
    assert q.get_nowait() == "a"
    q.add("a")  # a real change during processing still re-runs it
    q.done("a")
    assert q.get_nowait() == "a"


def test_add_after_waits_for_the_clock() -> None:
    q, clock, m = make()
    q.add_after("a", 5)
    assert q.get_nowait() is None
    assert q.waiting() == 1
    assert q.next_ready_in() == 5
    clock.advance(4.9)
    assert q.get_nowait() is None
    clock.advance(0.1)
    assert q.get_nowait() == "a"
    assert m.waits == [0.0]


def test_rate_limited_backoff_is_exponential_per_key_capped_and_forgotten() -> None:
    q, clock, m = make(base=1.0, cap=8.0)
    delays = [q.add_rate_limited("a") for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    assert q.add_rate_limited("b") == 1  # per key
    assert q.add_rate_limited("b", at_least=30) == 30  # the caller's own delay wins
    assert m.retries == 8
    assert q.limiter.requeues("a") == 6
    q.forget("a")
    assert q.limiter.requeues("a") == 0
    assert q.add_rate_limited("a") == 1
    clock.advance(1)
    assert {q.get_nowait(), q.get_nowait()} == {"a", "b"}  # parked duplicates dedup


def test_queue_duration_and_depth_are_reported() -> None:
    q, clock, m = make()
    q.add("a")
    q.add("b")
    clock.advance(3)
    assert q.get_nowait() == "a"
    assert m.waits == [3.0]
    assert m.depths[-1] == 1


async def test_get_waits_for_an_add_and_for_a_parked_key() -> None:
    q, clock, _ = make()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.add("a")
    assert await getter == "a"
    q.add_after("b", 10)
    assert await q.get() == "b"  # the fake clock's sleep moves time
    assert clock.monotonic() >= 10


async def test_shutdown_releases_waiters_and_drops_everything() -> None:
    q, _, _ = make()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add_after("later", 100)
    q.shutdown()
    assert await getter is None
    q.add("a")
    assert len(q) == 0
    assert q.get_nowait() is None
    assert await q.get() is None
    assert q.shutting_down


@pytest.mark.parametrize("n", [1, 3])
async def test_concurrent_workers_never_share_a_key(n: int) -> None:
    q, _, _ = make()
    active: set[str] = set()
    seen: list[str] = []

    async def worker() -> None:
        while (key := await q.get()) is not None:
            assert key not in active
            active.add(key)
            seen.append(key)
            await asyncio.sleep(0)
            if len(seen) < 6:
                q.add(key)  # re-added while processing
            active.discard(key)
            q.done(key)
            if len(seen) >= 6 and len(q) == 0:
                q.shutdown()

    for key in ("a", "b")[:n]:
        q.add(key)
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), 5)
    assert len(seen) >= 6
