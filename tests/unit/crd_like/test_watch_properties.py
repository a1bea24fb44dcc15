"""Watch ordering on the MemoryStore under generated concurrent write schedules
(invariants: tests/support/watch_schedule.py; PostgreSQL: the integration twin)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from support.watch_schedule import SCHEDULES, check_schedule

from codehub.crd_like.store.memory import MemoryStore


@settings(max_examples=150, deadline=None)
@given(schedule=SCHEDULES)
def test_watchers_see_every_write_once_in_order(schedule: dict[str, Any]) -> None:
    async def run() -> None:
        store = MemoryStore()
        try:
            await check_schedule(store, "alice", schedule)
        finally:
            await store.close()

    asyncio.run(run())
