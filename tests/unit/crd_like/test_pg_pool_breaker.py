"""The store's breaker (crd_like/store/pg/pool.py): during a database outage a request is
refused at once instead of waiting the acquisition timeout, and exactly one probe per
interval re-checks. Deterministic: a hand-moved clock, probes counted, no database (the
pool is never opened: a refused request never reaches it)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from support.api import ApiFactory, Identity

from codehub.crd_like.store.pg.pool import Admission, Breaker, DatabaseUnavailable, GuardedPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_admits_everything_and_overload_alone_does_not_open() -> None:
    clock = Clock()
    b = Breaker(interval=1.0, clock=clock)
    assert [b.admit() for _ in range(3)] == [Admission.PASS] * 3
    assert b.timed_out() is True  # busy or down? one probe finds out
    assert b.timed_out() is False  # ... only one
    assert b.admit() is Admission.PASS  # still closed while it runs
    b.probed(True)  # connecting works: the pool was merely busy
    assert (b.is_open, b.probing) == (False, False)
    assert b.admit() is Admission.PASS


def test_a_failed_connection_opens_and_one_probe_per_interval_rechecks() -> None:
    clock = Clock()
    b = Breaker(interval=1.0, clock=clock)
    b.failed()
    assert [b.admit() for _ in range(5)] == [Admission.REFUSE] * 5  # within the interval
    clock.now += 1.0
    assert b.admit() is Admission.PROBE
    assert [b.admit() for _ in range(5)] == [Admission.REFUSE] * 5  # the probe runs
    clock.now += 10.0
    assert b.admit() is Admission.REFUSE  # still the one probe, however long it takes
    b.probed(False)
    assert b.admit() is Admission.REFUSE  # a fresh interval from the failed probe
    clock.now += 1.0
    assert b.admit() is Admission.PROBE
    b.probed(True)
    assert [b.admit() for _ in range(3)] == [Admission.PASS] * 3


def test_the_pools_own_reconnect_closes_it() -> None:
    b = Breaker(interval=1.0, clock=Clock())
    b.failed()
    assert b.admit() is Admission.REFUSE
    b.succeeded()
    assert b.admit() is Admission.PASS


async def test_refused_requests_wait_for_nothing_and_start_one_probe_per_interval() -> None:
    clock = Clock()
    attempts: list[float] = []
    database_up = False

    async def probe() -> None:
        attempts.append(clock.now)
        if not database_up:
            raise psycopg.OperationalError("connection refused")

    breaker = Breaker(interval=1.0, clock=clock)
    pool = GuardedPool("postgresql://127.0.0.1:1/none", breaker=breaker, probe=probe, open=False)
    try:
        breaker.failed()  # what the pool's connection attempt reports in an outage

        async def request() -> None:
            async with pool.connection():
                raise AssertionError("a refused request reached the pool")

        for _ in range(10):
            with pytest.raises(DatabaseUnavailable):
                await request()
        assert attempts == []  # within the interval: no probe at all
        clock.now += 1.0
        for _ in range(10):
            with pytest.raises(DatabaseUnavailable) as refused:
                await request()
        assert isinstance(refused.value, psycopg.OperationalError)  # the server's 503
        await asyncio.sleep(0)  # let the background probe run
        assert attempts == [101.0]  # ten requests, one probe
        assert (breaker.is_open, breaker.probing) == (True, False)

        database_up = True
        clock.now += 1.0
        with pytest.raises(DatabaseUnavailable):
            await request()  # this one started the probe; it is not kept waiting on it
        await asyncio.sleep(0)
        assert attempts == [101.0, 102.0]
        assert breaker.admit() is Admission.PASS
    finally:
        await pool.close()


async def test_a_refusal_is_the_servers_503_status_with_retry_after(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(identities=[Identity("a", "alice", "1")])

    async def refused(*args: object, **kwargs: object) -> None:
        raise DatabaseUnavailable("the database is unavailable (connecting failed)")

    for method in ("get", "list", "list_raw", "create"):
        monkeypatch.setattr(api.store, method, refused)
    path = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
    body = {"metadata": {"name": "w"}, "spec": {}}
    for r in (
        await api.http.get(path, headers=api.headers("alice")),
        await api.http.get(f"{path}/w", headers=api.headers("alice")),
        await api.http.post(path, json=body, headers=api.headers("alice")),
    ):
        doc = await r.json()
        assert r.status == 503, doc
        assert (doc["kind"], doc["code"], doc["reason"]) == ("Status", 503, "ServiceUnavailable")
        assert r.headers["Retry-After"] == "1"
        assert "connecting" not in doc["message"]  # no database detail leaks to clients
