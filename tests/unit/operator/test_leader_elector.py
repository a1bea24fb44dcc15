"""The elector's decisions over a fake lock connection: who leads, when loss fires."""

from __future__ import annotations

from typing import Any

import psycopg

from codehub.operator.clock import FakeClock
from codehub.operator.leader import LeaderElector


class _Cursor:
    def __init__(self, row: tuple[Any, ...]) -> None:
        self._row = row

    async def fetchone(self) -> tuple[Any, ...]:
        return self._row


class _FakeServer:
    """One advisory lock shared by fake sessions; a session can be killed."""

    def __init__(self) -> None:
        self.holder: _FakeConn | None = None
        self.unlocked: list[int] = []

    def connect(self) -> _FakeConn:
        return _FakeConn(self)


class _FakeConn:
    def __init__(self, server: _FakeServer) -> None:
        self.server = server
        self.dead = False
        self.closed = False
        self.queries: list[str] = []

    def kill(self) -> None:
        self.dead = True
        if self.server.holder is self:
            self.server.holder = None

    async def execute(self, query: Any, params: Any = None) -> _Cursor:
        self.queries.append(str(query))
        if self.dead or self.closed:
            raise psycopg.OperationalError("the connection is lost")
        if "pg_try_advisory_lock" in str(query):
            if self.server.holder is None or self.server.holder is self:
                self.server.holder = self
                return _Cursor((True,))
            return _Cursor((False,))
        if "pg_advisory_unlock" in str(query):
            if self.server.holder is self:
                self.server.holder = None
            return _Cursor((True,))
        return _Cursor((1,))

    async def close(self) -> None:
        self.closed = True
        if self.server.holder is self:
            self.server.holder = None


def _elector(server: _FakeServer, clock: FakeClock, node: str) -> tuple[LeaderElector, list]:
    conns: list[_FakeConn] = []

    async def connect() -> _FakeConn:
        conn = server.connect()
        conns.append(conn)
        return conn

    elector = LeaderElector(
        "postgresql://unused", 42, node, retry_interval=5, clock=clock, connect=connect
    )
    return elector, conns


async def test_first_wins_second_does_not() -> None:
    server, clock = _FakeServer(), FakeClock()
    a, _ = _elector(server, clock, "a")
    b, _ = _elector(server, clock, "b")
    await a.campaign()
    assert a.is_leader
    assert await b.try_acquire() is False
    assert not b.is_leader


async def test_new_leader_waits_the_takeover_delay_before_acting() -> None:
    server, clock = _FakeServer(), FakeClock()
    a, _ = _elector(server, clock, "a")
    before = clock.monotonic()
    await a.campaign()
    assert clock.monotonic() - before >= a.takeover_delay
    assert a.takeover_delay > a.check_interval + a.check_timeout


async def test_lost_connection_fires_lost_and_callbacks() -> None:
    server, clock = _FakeServer(), FakeClock()
    a, conns = _elector(server, clock, "a")
    fired: list[str] = []
    a.on_lost(lambda: fired.append("stop"))
    await a.campaign()
    conns[0].kill()
    await a.hold()
    assert not a.is_leader
    assert a.lost.is_set()
    assert fired == ["stop"]
    assert conns[0].closed


async def test_standby_retries_and_wins_after_the_leader_dies() -> None:
    server, clock = _FakeServer(), FakeClock()
    a, conns_a = _elector(server, clock, "a")
    b, conns_b = _elector(server, clock, "b")
    await a.campaign()
    assert await b.try_acquire() is False
    conns_a[0].kill()
    await b.campaign()
    assert b.is_leader
    assert server.holder is conns_b[0]


async def test_cannot_connect_is_a_failed_attempt_not_a_crash() -> None:
    clock = FakeClock()

    async def connect() -> Any:
        raise psycopg.OperationalError("connection refused")

    e = LeaderElector("postgresql://unused", 1, "x", 5, clock, connect=connect)
    assert await e.try_acquire() is False
    assert not e.is_leader


async def test_lock_lost_during_takeover_delay_is_not_leadership() -> None:
    server, clock = _FakeServer(), FakeClock()
    a, conns = _elector(server, clock, "a")
    assert await a.try_acquire()
    conns[0].kill()
    assert await a._probe() is False


async def test_release_unlocks_and_fires_lost() -> None:
    server, clock = _FakeServer(), FakeClock()
    a, conns = _elector(server, clock, "a")
    await a.campaign()
    await a.release()
    assert server.holder is None
    assert a.lost.is_set()
    assert not a.is_leader
    assert any("pg_advisory_unlock" in q for q in conns[0].queries)


def test_node_id_defaults_to_host_and_pid() -> None:
    import os

    assert LeaderElector("postgresql://unused").node_id.endswith(f"-{os.getpid()}")
    assert LeaderElector("postgresql://unused", node_id="given").node_id == "given"
