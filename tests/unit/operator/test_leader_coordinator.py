"""The coordinator's term handling over a fake lock: start after winning, stop on loss,
restart crashed components, report it all on /healthz."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient, TestServer

from codehub.operator.coordinator import Coordinator, LeaderComponent, LeaderTerm
from codehub.operator.leader import LeaderElector
from codehub.operator.settings import Settings


class _Cursor:
    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row

    async def fetchone(self) -> tuple[Any, ...]:
        return self.row


class _Conn:
    """One fake session; ``kill`` makes every later query fail like a dead backend."""

    holder: _Conn | None = None

    def __init__(self) -> None:
        self.dead = False

    async def execute(self, query: Any, params: Any = None) -> _Cursor:
        if self.dead:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if "pg_try_advisory_lock" in str(query):
            if _Conn.holder in (None, self):
                _Conn.holder = self
                return _Cursor((True,))
            return _Cursor((False,))
        if "pg_advisory_unlock" in str(query) and _Conn.holder is self:
            _Conn.holder = None
        return _Cursor((1,))

    async def close(self) -> None:
        if _Conn.holder is self:
            _Conn.holder = None

    def kill(self) -> None:
        self.dead = True
        if _Conn.holder is self:
            _Conn.holder = None


def _setup(
    components: list[LeaderComponent],
    node: str = "unit",
    retry_interval: float = 0.05,
    conns: list[_Conn] | None = None,
) -> tuple[Coordinator, list[_Conn]]:
    if conns is None:
        _Conn.holder = None
        conns = []

    async def connect() -> _Conn:
        conns.append(_Conn())
        return conns[-1]

    elector = LeaderElector(
        "postgresql://unused",
        1,
        node,
        retry_interval=retry_interval,
        check_interval=0.02,
        check_timeout=0.5,
        takeover_delay=0.0,
        connect=connect,
    )

    async def context(*_: Any) -> object:
        return object()

    settings = Settings(
        database_url="postgresql://unused", coordinator_retry_interval=retry_interval
    )
    coordinator = Coordinator(
        settings,
        components=lambda: components,
        context_factory=context,
        elector=elector,
        metrics=object(),
    )
    return coordinator, conns


async def _until(predicate: Any) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_components_run_only_while_leader_and_stop_on_loss() -> None:
    running: list[str] = []
    events: list[str] = []

    async def worker(term: LeaderTerm) -> None:
        term.mark_running("worker")
        running.append("worker")
        events.append("start")
        try:
            await asyncio.Event().wait()
        finally:
            running.remove("worker")
            events.append("stop")

    coordinator, conns = _setup([LeaderComponent("worker", worker)])
    stop = asyncio.Event()
    task = asyncio.create_task(coordinator.run(stop))
    await _until(lambda: running == ["worker"])
    assert coordinator.health()["leader"] is True
    assert coordinator.health()["components"]["worker"]["state"] == "running"

    conns[-1].kill()
    await _until(lambda: "stop" in events)
    # A standby again, and (the lock being free) leader again in a new term.
    await _until(lambda: coordinator.terms == 2 and running == ["worker"])
    assert events == ["start", "stop", "start"]

    stop.set()
    await asyncio.wait_for(task, 10)
    assert running == []
    assert coordinator.health()["leader"] is False
    assert coordinator.health()["components"]["worker"]["state"] == "stopped"
    assert _Conn.holder is None


async def test_a_standby_takes_over_from_a_leader_that_lost_its_session() -> None:
    """The node that lost its session must not win the lock straight back: it stops
    within one probe period, while the standby polls only every 0.3 s, so campaigning
    at once would beat the standby every time."""
    conns: list[_Conn] = []
    _Conn.holder = None
    leaders: list[str] = []

    def component(node: str) -> LeaderComponent:
        async def run(term: LeaderTerm) -> None:
            leaders.append(node)
            term.mark_running("worker")
            await asyncio.Event().wait()

        return LeaderComponent("worker", run)

    a, _ = _setup([component("a")], "a", retry_interval=0.3, conns=conns)
    b, _ = _setup([component("b")], "b", retry_interval=0.3, conns=conns)
    stop = asyncio.Event()
    run_a = asyncio.create_task(a.run(stop))
    await _until(lambda: leaders == ["a"])
    run_b = asyncio.create_task(b.run(stop))
    await asyncio.sleep(0.4)
    for handovers in (1, 2, 3):
        holder = _Conn.holder
        assert holder is not None
        holder.kill()
        await _until(lambda n=handovers: len(leaders) == n + 1)  # type: ignore[misc]
        await asyncio.sleep(0.4)
    assert leaders == ["a", "b", "a", "b"]
    assert a.terms == 2
    assert b.terms == 2
    stop.set()
    await asyncio.wait_for(asyncio.gather(run_a, run_b), 10)


async def test_crashed_component_is_restarted_and_reported() -> None:
    attempts: list[int] = []

    async def flaky(term: LeaderTerm) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        term.mark_running("flaky")
        await asyncio.Event().wait()

    coordinator, _ = _setup([LeaderComponent("flaky", flaky)])
    stop = asyncio.Event()
    task = asyncio.create_task(coordinator.run(stop))
    await _until(
        lambda: coordinator.health()["components"].get("flaky", {}).get("state") == "running"
    )
    state = coordinator.health()["components"]["flaky"]
    assert state["restarts"] == 1
    assert "boom" in state["last_error"]
    assert len(attempts) == 2
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_healthz_and_metrics_endpoints() -> None:
    async def idle(term: LeaderTerm) -> None:
        term.mark_running("idle")
        await asyncio.Event().wait()

    coordinator, _ = _setup([LeaderComponent("idle", idle)])
    stop = asyncio.Event()
    async with TestClient(TestServer(coordinator.app())) as client:
        body = await (await client.get("/healthz")).json()
        assert body == {
            "leader": False,
            "node_id": "unit",
            "terms": 0,
            "components": {},
        }
        assert "codehub_leader 0.0" in await (await client.get("/metrics")).text()
        task = asyncio.create_task(coordinator.run(stop))
        await _until(lambda: coordinator.elector.is_leader)
        body = await (await client.get("/healthz")).json()
        assert body["leader"] is True
        assert "codehub_leader 1.0" in await (await client.get("/metrics")).text()
        stop.set()
        await asyncio.wait_for(task, 10)
