"""Slow and greedy clients against the real ``serve`` (PostgreSQL store, plain HTTP on
127.0.0.1): slowloris headers on the API and on the proxy path, a thousand idle sockets,
a trickled body, huge label selectors. Each is bounded and answered, and another user
stays served meanwhile; that user's latency is printed (not asserted: no timed checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.api import IDENTITIES
from support.private_services import ServerThread

from codehub.crd_like.config import ApiConfig

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
IDLE_SOCKETS = 1000
SLOWLORIS = 50
#: Liveness bound only (a hang must fail, not block CI).
PATIENCE = 60.0
LIST = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"


@dataclasses.dataclass
class Served:
    url: str
    port: int


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("".join(i.csv() + "\n" for i in IDENTITIES.values()))
    config = ApiConfig(
        database_url=database_url,
        token_file=str(tokens),
        state_dir=tmp_path / "state",
        header_timeout=HEADER_TIMEOUT,
        body_timeout=BODY_TIMEOUT,
    )
    server = ServerThread(config)
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/healthz") as r:
                    if r.status < 500:
                        break
            await asyncio.sleep(0.1)
    try:
        yield Served(url, server.port)
    finally:
        server.close()


def auth(who: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {IDENTITIES[who].token}"}


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset)."""
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await asyncio.wait_for(reader.read(), PATIENCE)
    return True


async def slowloris(port: int, path: str) -> bool:
    """Request headers one line at a time, never finished; True once the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            for i in range(int(PATIENCE * 4)):
                writer.write(f"X-Slow-{i}: y\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.25)

    dripping = asyncio.create_task(trickle())
    try:
        return await closed_by_server(reader)
    finally:
        dripping.cancel()
        writer.close()


async def idle(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await closed_by_server(reader)
    finally:
        writer.close()


async def user_latencies(url: str, until: asyncio.Event | None) -> list[float]:
    """Another user listing workspaces (20 times, or until ``until`` with at least 5);
    every answer must be 200."""
    out: list[float] = []
    async with aiohttp.ClientSession(headers=auth("bob")) as http:
        while (len(out) < 20) if until is None else (not until.is_set() or len(out) < 5):
            start = time.perf_counter()
            async with http.get(url + LIST.replace("alice", "bob")) as r:
                assert r.status == 200
                await r.read()
            out.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
    return out


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[int(len(ms) * 0.95) - 1] if len(ms) >= 20 else ms[-1]
    median = statistics.median(ms)
    return f"{name}: n={len(ms)} median={median:.1f}ms p95={p95:.1f}ms max={ms[-1]:.1f}ms"


async def test_slowloris_and_idle_sockets_are_cut_others_served(served: Served) -> None:
    baseline = await user_latencies(served.url, None)
    attack_done = asyncio.Event()
    user = asyncio.create_task(user_latencies(served.url, attack_done))
    attackers = [slowloris(served.port, LIST) for _ in range(SLOWLORIS // 2)]
    attackers += [slowloris(served.port, "/w/alice/dev/") for _ in range(SLOWLORIS // 2)]
    attackers += [idle(served.port) for _ in range(IDLE_SOCKETS)]
    results = await asyncio.gather(*attackers)
    attack_done.set()
    during = await user
    assert all(results)
    assert len(results) == SLOWLORIS + IDLE_SOCKETS
    print()
    print(summary("other user, before", baseline))
    print(summary(f"other user, {SLOWLORIS} slowloris + {IDLE_SOCKETS} idle sockets", during))


async def test_a_trickled_body_is_answered_408(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    token = IDENTITIES["alice"].token
    writer.write(
        (
            f"POST {LIST} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        ).encode()
    )
    await writer.drain()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            for _ in range(int(PATIENCE * 2)):
                await asyncio.sleep(0.5)
                writer.write(b" ")
                await writer.drain()

    dripping = asyncio.create_task(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readline(), PATIENCE)
    finally:
        dripping.cancel()
        writer.close()
    assert status_line.split()[1] == b"408"


@pytest.mark.parametrize("terms", [50, 400, 5000])
async def test_huge_label_selectors_are_answered(served: Served, terms: int) -> None:
    selector = ",".join(f"k{i}=v{i}" for i in range(terms))
    async with aiohttp.ClientSession(headers=auth()) as http:
        async with http.get(served.url + LIST, params={"labelSelector": selector}) as r:
            status = r.status
            await r.read()
        # Still serving afterwards.
        async with http.get(served.url + LIST) as r:
            assert r.status == 200
    assert status == 200 or 400 <= status < 500
    if len(selector) > 8190:  # beyond the request-line limit
        assert status in (400, 414)
