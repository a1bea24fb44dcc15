"""Leader election against a real PostgreSQL: one leader, failover on a killed session."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from codehub.operator.coordinator import Coordinator, LeaderComponent, LeaderTerm
from codehub.operator.leader import LeaderElector
from codehub.operator.settings import Settings

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


# --- the coordinator on top of the elector --------------------------------------------


class _Recorder:
    """Intervals during which each node's component was running (wall clock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.intervals: list[list[Any]] = []  # [node, start, end or None]

    def component(self, node: str) -> LeaderComponent:
        async def run(term: LeaderTerm) -> None:
            entry = [node, time.monotonic(), None]
            with self.lock:
                self.intervals.append(entry)
            term.mark_running("worker")
            try:
                await asyncio.Event().wait()
            finally:
                entry[2] = time.monotonic()

        return LeaderComponent("worker", run)


async def _no_context(settings: Settings, labels: Any, metrics: Any) -> object:
    return object()


def _coordinator(database_url: str, node: str, recorder: _Recorder) -> Coordinator:
    settings = Settings(database_url=database_url, coordinator_retry_interval=0.2, node_id=node)
    return Coordinator(
        settings,
        components=lambda: [recorder.component(node)],
        context_factory=_no_context,
        elector=_elector(database_url, node),
        metrics=object(),
    )


async def _until(predicate: Any, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_coordinators_hand_over_without_overlap(database_url: str) -> None:
    recorder = _Recorder()
    a = _coordinator(database_url, "coord-a", recorder)
    b = _coordinator(database_url, "coord-b", recorder)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    run_a = asyncio.create_task(a.run(stop_a))
    await _until(lambda: a.health()["components"].get("worker", {}).get("state") == "running")
    run_b = asyncio.create_task(b.run(stop_b))
    try:
        await asyncio.sleep(1.0)
        assert a.health()["leader"] is True
        assert b.health()["leader"] is False
        assert [i[0] for i in recorder.intervals] == ["coord-a"]

        await _terminate(database_url, "coord-a")
        await _until(lambda: b.health()["leader"] and len(recorder.intervals) == 2)
        await _until(lambda: a.health()["components"]["worker"]["state"] == "stopped")
        old, new = recorder.intervals
        assert old[0] == "coord-a"
        assert new[0] == "coord-b"
        assert old[2] is not None
        assert old[2] <= new[1], "the new leader acted before the old one stopped"
        # The old leader is a standby now and campaigns again, without winning.
        await asyncio.sleep(1.0)
        assert a.health()["leader"] is False
        assert a.terms == 1
        assert b.terms == 1
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(run_a, run_b), 30)
    assert all(i[2] is not None for i in recorder.intervals)
    assert await _lock_holders(database_url) == []


async def test_healthz_and_metrics_show_leadership(database_url: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    recorder = _Recorder()
    a = _coordinator(database_url, "coord-http", recorder)
    stop = asyncio.Event()
    run = asyncio.create_task(a.run(stop))
    async with TestClient(TestServer(a.app())) as client:
        try:
            await _until(lambda: a.elector.is_leader)
            health = await (await client.get("/healthz")).json()
            assert health["leader"] is True
            assert health["node_id"] == "coord-http"
            assert "worker" in health["components"]
            metrics = await (await client.get("/metrics")).text()
            assert "codehub_leader 1.0" in metrics
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
        health = await (await client.get("/healthz")).json()
        assert health["leader"] is False
        assert "codehub_leader 0.0" in await (await client.get("/metrics")).text()
