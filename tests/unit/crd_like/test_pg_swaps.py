"""Group commit of compare-and-swap updates (crd_like/store/pg/swaps.py), with fakes for
the database: who goes alone, who goes together, in which order, and what a failure or a
cancelled caller does to the others."""

from __future__ import annotations

import asyncio

import pytest

from codehub.crd_like.store.pg.swaps import Batcher


class Fake:
    """``one`` and ``many`` that record their calls and wait until released."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def one(self, p: int) -> int:
        self.calls.append([p])
        await self.release.wait()
        return p * 10

    async def many(self, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [p * 10 for p in batch]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_goes_alone_at_once() -> None:
    fake = Fake()
    fake.release.set()
    batcher = Batcher(fake.one, fake.many)
    assert await batcher.run(1) == 10
    assert await batcher.run(2) == 20
    assert fake.calls == [[1], [2]]
    assert batcher.batches == 0


async def test_calls_arriving_meanwhile_go_together_in_order() -> None:
    fake = Fake()
    batcher = Batcher(fake.one, fake.many)
    tasks = [asyncio.create_task(batcher.run(p)) for p in (1, 2, 3, 4)]
    await settle()
    assert fake.calls == [[1]]  # the others wait for the one in flight
    fake.release.set()
    assert await asyncio.gather(*tasks) == [10, 20, 30, 40]
    assert fake.calls == [[1], [2, 3, 4]]
    assert (batcher.batches, batcher.batched) == (1, 3)
    assert await batcher.run(5) == 50  # idle again: alone
    assert fake.calls[-1] == [5]


async def test_a_failed_batch_fails_each_of_its_calls_and_nothing_else() -> None:
    fake = Fake()
    fake.fail = RuntimeError("database said no")
    batcher = Batcher(fake.one, fake.many)
    first = asyncio.create_task(batcher.run(1))
    rest = [asyncio.create_task(batcher.run(p)) for p in (2, 3)]
    await settle()
    fake.release.set()
    assert await first == 10
    for task in rest:
        with pytest.raises(RuntimeError, match="database said no"):
            await task
    assert await batcher.run(4) == 40


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    fake = Fake()
    batcher = Batcher(fake.one, fake.many)
    first = asyncio.create_task(batcher.run(1))
    waiting = [asyncio.create_task(batcher.run(p)) for p in (2, 3, 4)]
    await settle()
    waiting[1].cancel()
    fake.release.set()
    assert await first == 10
    assert await waiting[0] == 20
    assert await waiting[2] == 40
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
    assert fake.calls == [[1], [2, 4]]


async def test_batches_are_bounded() -> None:
    fake = Fake()
    batcher = Batcher(fake.one, fake.many, limit=2)
    tasks = [asyncio.create_task(batcher.run(p)) for p in range(1, 7)]
    await settle()
    fake.release.set()
    assert await asyncio.gather(*tasks) == [10, 20, 30, 40, 50, 60]
    assert fake.calls == [[1], [2, 3], [4, 5], [6]]
