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
