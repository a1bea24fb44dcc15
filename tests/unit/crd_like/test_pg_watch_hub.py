"""The PostgreSQL watch hub's cache bookkeeping, without a database: offers of this
process's writes and log reads that overlap them (docs/storage.md)."""

from __future__ import annotations

from typing import Any

import pytest

from codehub.crd_like.store.pg.watch import Hub, LogRow


def hub_at(loaded: int) -> Hub:
    pool: Any = None  # never used: these tests call no method that queries
    hub = Hub("postgresql://unused", pool, interval=1.0, listen=False, cache_size=100)
    hub.head = hub.loaded = hub.cache_floor = loaded
    return hub


def row(rev: int) -> LogRow:
    return LogRow(rev, "workspaces", "ns", "MODIFIED", f'{{"n":{rev}}}', None)


def revisions(hub: Hub, after: int = 0) -> list[int]:
    rows, _ = hub.after(after)
    return [r.revision for r in rows]


def test_the_next_offer_enters_the_cache_at_once_and_wakes_watchers() -> None:
    hub = hub_at(5)
    woken = hub.event
    hub.offer(row(6))
    assert hub.loaded == 6
    assert revisions(hub) == [6]
    assert woken.is_set()


def test_an_offer_above_a_gap_waits_for_the_gap() -> None:
    hub = hub_at(5)
    hub.offer(row(7))
    assert hub.loaded == 5
    assert hub.head == 7
    hub.offer(row(6))
    assert hub.loaded == 7
    assert revisions(hub) == [6, 7]


def test_a_log_read_overlapping_offers_keeps_the_offered_entries() -> None:
    hub = hub_at(5)
    hub.offer(row(6))  # arrives while a read from 5 is in flight
    hub._append([row(6), row(7)], head=7)
    assert hub.loaded == 7
    assert revisions(hub) == [6, 7]
    assert hub.cache_floor == 5


def test_a_log_read_wholly_overtaken_by_offers_changes_nothing() -> None:
    hub = hub_at(5)
    hub.offer(row(6))
    hub.offer(row(7))
    hub._append([row(6)], head=6)
    assert hub.loaded == 7
    assert revisions(hub) == [6, 7]
    assert hub.cache_floor == 5


def test_a_compacted_stretch_still_restarts_the_cache_above_it() -> None:
    hub = hub_at(5)
    hub._append([], head=9)
    assert hub.loaded == 9
    assert hub.cache_floor == 9
    assert revisions(hub) == []


async def test_the_loader_stops_waiting_for_offers_once_the_cache_is_complete() -> None:
    hub = hub_at(5)
    hub.advance(6)
    with hub.writing():  # another write stays in flight throughout
        hub.offer(row(6))
        step = hub._await_offer()
        try:
            step.send(None)  # must finish without suspending: nothing is missing
        except StopIteration:
            pass
        else:
            step.close()
            pytest.fail("the loader waited for an offer with the cache complete")
    assert hub.loaded == 6


class LogPool:
    """A pool whose one connection answers the hub's log read from ``log`` (the
    statement's own bounds applied), recording them."""

    def __init__(self, log: dict[int, LogRow], head: int) -> None:
        self.log = log
        self.head = head
        self.reads: list[tuple[int, int | None]] = []

    def connection(self) -> Any:
        pool = self

        class Conn:
            async def __aenter__(self) -> Conn:
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            async def execute(self, query: bytes, params: tuple[Any, ...], **_: Any) -> Any:
                after, below, limit = params
                pool.reads.append((after, below))
                top = pool.head if below is None else min(pool.head, below)
                hits = [pool.log[r] for r in sorted(pool.log) if after < r <= top][:limit]
                rows = [
                    (
                        pool.head,
                        0,
                        r.revision,
                        r.kind,
                        r.namespace,
                        r.type,
                        r.body_text,
                        r.prev_text,
                    )
                    for r in hits
                ] or [(pool.head, 0, None, None, None, None, None, None)]

                class Cur:
                    async def fetchall(self) -> list[tuple[Any, ...]]:
                        return rows

                return Cur()

        return Conn()


async def test_a_gap_below_offered_entries_reads_the_gap_alone() -> None:
    """Revision 6 is another writer's (or not offered yet), 7..9 are offered: the log is
    read for 6 only, and the cache then runs on through the offered ones."""
    pool = LogPool({r: row(r) for r in range(6, 10)}, head=9)
    hub = Hub("postgresql://unused", pool, interval=1.0, listen=False, cache_size=100)
    hub.head = hub.loaded = hub.cache_floor = 5
    for r in (7, 8, 9):
        hub.offer(row(r))
    await hub._load_more()
    assert pool.reads == [(5, 6)]
    assert hub.loaded == 6
    assert hub._take_pending()
    assert revisions(hub) == [6, 7, 8, 9]
    assert hub.loaded == 9


async def test_a_gap_with_nothing_offered_reads_up_to_the_head() -> None:
    pool = LogPool({r: row(r) for r in range(6, 10)}, head=9)
    hub = Hub("postgresql://unused", pool, interval=1.0, listen=False, cache_size=100)
    hub.head = hub.loaded = hub.cache_floor = 5
    await hub._load_more()
    assert pool.reads == [(5, None)]
    assert revisions(hub) == [6, 7, 8, 9]
