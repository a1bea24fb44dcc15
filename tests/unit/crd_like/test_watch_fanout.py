"""The server's watch fan-out parts: batches of queued events, shared encoded lines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from codehub.crd_like.server.watch import EventQueue, LineCache
from codehub.crd_like.store.interface import WatchEvent


def ev(rev: int, type_: str = "MODIFIED") -> WatchEvent:
    return WatchEvent(type_, rev, {"metadata": {"name": "a", "resourceVersion": str(rev)}})  # type: ignore[arg-type]


async def source(items: list[WatchEvent | Exception]) -> AsyncIterator[WatchEvent]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


async def test_a_batch_takes_everything_queued_then_the_end() -> None:
    events = EventQueue(source([ev(1), ev(2), ev(3)]))
    await asyncio.sleep(0)  # the pump queues all three and the end
    batch = await events.get_batch(1.0)
    assert batch is not None
    assert [e.revision for e in batch if isinstance(e, WatchEvent)] == [1, 2, 3]
    assert await events.get_batch(1.0) is None
    assert await events.get(1.0) is None
    await events.close()


async def test_a_batch_stops_after_an_error() -> None:
    events = EventQueue(source([ev(1), RuntimeError("store down")]))
    await asyncio.sleep(0)
    batch = await events.get_batch(1.0)
    assert batch is not None
    assert isinstance(batch[0], WatchEvent)
    assert isinstance(batch[1], RuntimeError)
    await events.close()


async def test_a_batch_is_bounded() -> None:
    events = EventQueue(source([ev(i) for i in range(1, 11)]))
    await asyncio.sleep(0)
    first = await events.get_batch(1.0, limit=4)
    second = await events.get_batch(1.0, limit=100)
    assert first is not None
    assert second is not None
    assert [e.revision for e in first + second if isinstance(e, WatchEvent)] == list(range(1, 11))
    assert len(first) == 4
    await events.close()


async def test_a_timeout_is_none() -> None:
    async def silent() -> AsyncIterator[WatchEvent]:
        await asyncio.Event().wait()
        yield ev(1)

    events = EventQueue(silent())
    assert await events.get_batch(0.01) is None
    await events.close()


def test_lines_are_encoded_once_per_revision_and_type() -> None:
    cache = LineCache(size=2)
    a, b = cache.line(ev(5)), cache.line(ev(5))
    assert a is b
    assert cache.encoded == 1
    assert json.loads(a) == {"type": "MODIFIED", "object": ev(5).object}
    assert a.endswith(b"\n")
    assert a.count(b"\n") == 1
    assert json.loads(cache.line(ev(5, "DELETED")))["type"] == "DELETED"
    assert cache.encoded == 2
    cache.line(ev(6))  # bounded: the oldest line goes
    cache.line(ev(5))
    assert cache.encoded == 4
