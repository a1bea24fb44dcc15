"""Watch ordering on real PostgreSQL under generated concurrent write schedules: two
stores (two server replicas) write at once, a third one watches (invariants:
tests/support/watch_schedule.py). Each example uses a namespace of its own in one
database; the number of examples is small (CODEHUB_WATCH_EXAMPLES, default 25)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from support.watch_schedule import SCHEDULES, check_schedule

from codehub.crd_like.store.postgres import PostgresStore

EXAMPLES = int(os.environ.get("CODEHUB_WATCH_EXAMPLES", "25"))


class TwoWriters:
    """Writes go alternately to two stores; reads and watches to a third."""

    def __init__(self, writers: list[PostgresStore], reader: PostgresStore) -> None:
        self.writers = writers
        self.reader = reader
        self.n = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("create", "update", "delete"):
            self.n += 1
            return getattr(self.writers[self.n % 2], name)
        return getattr(self.reader, name)


def test_watchers_see_every_write_once_in_order(database_url: str) -> None:
    stats: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(schedule=SCHEDULES)
    def check(schedule: dict[str, Any]) -> None:
        async def run() -> None:
            writers = [await PostgresStore.open(database_url) for _ in range(2)]
            reader = await PostgresStore.open(database_url, watch_poll_interval=0.2)
            try:
                store: Any = TwoWriters(writers, reader)
                result = await check_schedule(store, f"p{uuid.uuid4().hex[:8]}", schedule)
                stats.append(result["events"])
            finally:
                for s in (*writers, reader):
                    await s.close()

        asyncio.run(run())

    check()
    assert sum(stats) > 0
    print(f"postgres watch schedules: {len(stats)}, events checked: {sum(stats)}")
