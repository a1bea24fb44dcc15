"""Leader election against a real PostgreSQL: one leader, failover on a killed session."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from codehub.operator.leader import LeaderElector

pytestmark = pytest.mark.integration

KEY = 7_000_001


def _elector(database_url: str, node: str) -> LeaderElector:
    return LeaderElector(
        database_url,
        KEY,
        node,
        retry_interval=0.2,
        check_interval=0.2,
        check_timeout=1.0,
        takeover_delay=1.5,
    )


async def _terminate(database_url: str, node: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"codehub-leader:{node}",),
        )
        return len(await cur.fetchall())


async def _lock_holders(database_url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s",
            (KEY & 0xFFFFFFFF,),
        )
        return [r[0] for r in await cur.fetchall()]


async def test_one_wins_and_the_loser_takes_over_after_termination(database_url: str) -> None:
    a, b = _elector(database_url, "node-a"), _elector(database_url, "node-b")
    await a.campaign()
    standby = asyncio.create_task(b.campaign())
    samples: list[tuple[bool, bool]] = []
    try:
        for _ in range(10):
            await asyncio.sleep(0.1)
            samples.append((a.is_leader, b.is_leader))
        assert a.is_leader
        assert not b.is_leader
        assert not standby.done()
        assert await _lock_holders(database_url) == ["codehub-leader:node-a"]

        holding = asyncio.create_task(a.hold())
        assert await _terminate(database_url, "node-a") == 1
        while not standby.done():
            samples.append((a.is_leader, b.is_leader))
            await asyncio.sleep(0.02)
        await standby
        await asyncio.wait_for(holding, 10)
        samples.append((a.is_leader, b.is_leader))

        assert a.lost.is_set()
        assert not a.is_leader
        assert b.is_leader
        assert await _lock_holders(database_url) == ["codehub-leader:node-b"]
        assert all(not (x and y) for x, y in samples), "two leaders at one moment"
        assert (False, True) in samples
        assert (True, False) in samples
    finally:
        standby.cancel()
        await a.release()
        await b.release()


async def test_old_leader_notices_loss_before_the_new_one_acts(database_url: str) -> None:
    a, b = _elector(database_url, "node-c"), _elector(database_url, "node-d")
    await a.campaign()
    order: list[str] = []
    a.on_lost(lambda: order.append("a-lost"))
    holding = asyncio.create_task(a.hold())
    standby = asyncio.create_task(b.campaign())
    try:
        await asyncio.sleep(0.3)
        await _terminate(database_url, "node-c")
        await asyncio.wait_for(standby, 15)
        order.append("b-leader")
        await asyncio.wait_for(holding, 5)
        assert order == ["a-lost", "b-leader"]
    finally:
        standby.cancel()
        await a.release()
        await b.release()


async def test_release_hands_over_at_once(database_url: str) -> None:
    a, b = _elector(database_url, "node-e"), _elector(database_url, "node-f")
    await a.campaign()
    assert not await b.try_acquire()
    await a.release()
    assert await b.try_acquire()
    await b.release()
    assert await _lock_holders(database_url) == []
