"""The load generators of ``proxy_throughput.py``: the same keep-alive GET loop, in Python
(aiohttp) or in C (``wrk``).

A load generator on the measured machine takes CPU from what it measures. What it spends
on every side flattens the ratio between a cheap side (direct) and a dearer one (through
a proxy), and what it spends on TLS weighs on the HTTPS sides only: the Python client
spends about as much per request as the workspace itself, and 0.07 ms more with TLS;
``wrk`` about a tenth of that. Both report the CPU they used.
"""

from __future__ import annotations

import asyncio
import re
import resource
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Target:
    """What one side's client talks to: URL, headers, TLS context (None: plain or unverified)."""

    url: str
    headers: dict[str, str]
    tls: ssl.SSLContext | None = None

    def aiohttp_kw(self) -> dict[str, object]:
        kw: dict[str, object] = {"headers": self.headers} if self.headers else {}
        if self.tls is not None:
            kw["ssl"] = self.tls
        return kw


@dataclass(frozen=True)
class Load:
    """One measured stretch: requests answered, wall seconds, the client's CPU seconds."""

    requests: int
    seconds: float
    client_cpu: float


class AiohttpClient:
    """``clients`` concurrent keep-alive loops on one asyncio loop (this process)."""

    def __init__(self, session: aiohttp.ClientSession, clients: int) -> None:
        self.session, self.clients = session, clients
        self.name = f"aiohttp (Python, one event loop, {clients} concurrent loops)"

    async def run(self, target: Target, seconds: float) -> Load:
        count = 0
        kw = target.aiohttp_kw()
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal count
            while time.perf_counter() < stop:
                async with self.session.get(target.url, **kw) as resp:  # type: ignore[arg-type]
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{target.url}: {resp.status}")
                count += 1

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(self.clients)))
        return Load(count, time.perf_counter() - t0, time.process_time() - cpu0)


class WrkClient:
    """``wrk -t THREADS -c CLIENTS``: keep-alive connections, opened anew for every stretch
    (a TLS handshake per connection per stretch, well under 1 % of a second's requests).
    wrk counts whole seconds, so a stretch lasts at least one."""

    def __init__(self, clients: int, threads: int) -> None:
        binary = wrk_binary()
        if binary is None:
            raise RuntimeError("wrk is not installed (scripts/install-system-packages)")
        self.binary, self.clients, self.threads = binary, clients, threads
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout
        found = re.search(r"wrk (\S+)", version)
        self.name = (
            f"wrk {found.group(1) if found else ''} (C, {threads} threads, {clients} connections)"
        )

    def _run(self, target: Target, seconds: int) -> Load:
        cmd = [self.binary, f"-t{self.threads}", f"-c{self.clients}", f"-d{seconds}s"]
        for name, value in target.headers.items():
            cmd += ["-H", f"{name}: {value}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([*cmd, target.url], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = done.stdout
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        if bad or errors:
            raise RuntimeError(f"{target.url}: {out}")
        found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        if found is None:
            raise RuntimeError(f"wrk: unexpected output {out!r}")
        took = float(found.group(2)) / (1000 if found.group(3) == "ms" else 1)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return Load(int(found.group(1)), took or wall, cpu)

    async def run(self, target: Target, seconds: float) -> Load:
        return await asyncio.to_thread(self._run, target, max(1, round(seconds)))


def wrk_binary() -> str | None:
    return shutil.which("wrk")
