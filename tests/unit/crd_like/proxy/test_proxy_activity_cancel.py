"""A WebSocket whose client goes away cancels its handler; the close must still count.

Otherwise the replica's row keeps one open connection, its heartbeat keeps the row alive,
and the TTL never puts the workspace to sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from prometheus_client import CollectorRegistry

from codehub.crd_like.config import ApiConfig
from codehub.crd_like.proxy.activity import ActivityTracker, WorkspaceRef
from codehub.crd_like.proxy.metrics import ProxyMetrics
from codehub.crd_like.store.activity import MemoryActivityStore
from codehub.crd_like.store.memory import MemoryStore


class SlowClose(MemoryActivityStore):
    """Holds the decrement (count 0) until released, as a slow database would."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = asyncio.Event()
        self.release = asyncio.Event()

    async def set_open(self, replica: str, workspace: str, count: int, now: dt.datetime) -> None:
        if count == 0:
            self.closing.set()
            await self.release.wait()
        await super().set_open(replica, workspace, count, now)


async def test_a_cancelled_close_still_counts_the_connection_closed() -> None:
    activity = SlowClose()
    tracker = ActivityTracker(
        MemoryStore(),
        activity,
        ApiConfig(database_url="", replica_id="r1"),
        ProxyMetrics(CollectorRegistry()),
    )
    ref = WorkspaceRef("alice", "w", "uid-1")
    await tracker.connection_opened(ref)
    now = dt.datetime.now(dt.UTC)
    assert await activity.open_connections("uid-1", now, 60) == 1

    handler = asyncio.create_task(tracker.connection_closed(ref))
    await activity.closing.wait()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
    activity.release.set()
    for _ in range(100):
        if await activity.open_connections("uid-1", now, 60) == 0:
            break
        await asyncio.sleep(0.01)
    assert await activity.open_connections("uid-1", now, 60) == 0
    assert tracker.open == {}
