"""Write -> watch-event latency and write throughput through the API, plus list latency.

Starts its own API server subprocess (HTTPS, as in production) on a throwaway database
of the PostgreSQL named by CODEHUB_DATABASE_URL (``eval "$(scripts/dev-services up)"``),
opens several watchers (8, in a process of their own), lets several writers (8) patch
workspaces, each at ``--rate`` writes per second (0: as fast as they can, which measures
queueing more than delivery), and prints p50/p99 of the time from *sending* a write to each watcher
receiving its event (conservative: it includes the write request itself), next to the
goals of docs/adr/0007-api-write-path-performance.md (p50 <= 10 ms, p99 <= 50 ms), and
the server's CPU per write. Then optionally creates N workspaces and times full and
paginated lists. Printed, not asserted; the goals line names the write rate reached and
the machine's load average, since on a shared machine the load decides the tail.

    .venv/bin/python bench/watch_latency.py --watchers 8 --writers 8 --writes 100 \
        --rate 20 [--list-objects 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from _common import REPO, admin_database_url, cpu_seconds, free_port

NS_PATH = "/apis/codehub.io/v1alpha1/namespaces/bench/workspaces"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Server:
    def __init__(self, admin_url: str, workdir: Path) -> None:
        self.admin_url = admin_url
        self.db = f"bench_{uuid.uuid4().hex[:8]}"
        self.url_db = admin_url.rpartition("/")[0] + "/" + self.db
        self.token = secrets.token_urlsafe(16)
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.owns_db = True

    def replica(self, workdir: Path) -> Server:
        """Another server process on the same database and token (the API is stateless:
        several may share one PostgreSQL); start it after this one is ready."""
        other = Server(self.admin_url, workdir)
        other.db, other.url_db, other.token = self.db, self.url_db, self.token
        other.owns_db = False
        return other

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.owns_db:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},bench-admin,u1,"codehub:admin"\n')
        env = {
            **os.environ,
            "CODEHUB_DATABASE_URL": self.url_db,
            "CODEHUB_TOKEN_FILE": str(tokens),
            "CODEHUB_STATE_DIR": str(self.workdir),
            "MAX_RUNNING_PER_USER": "100000",
            "MAX_RUNNING_GLOBAL": "100000",
        }
        self.proc = subprocess.Popen(
            [
                str(REPO / ".venv/bin/python"),
                "-m",
                "codehub.crd_like.server",
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            env=env,
            stdout=open(self.workdir / "server.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.workdir / "tls" / "server.crt"))

    async def wait_ready(self) -> None:
        for _ in range(600):
            if (self.workdir / "tls" / "server.crt").exists():
                try:
                    async with (
                        aiohttp.ClientSession() as s,
                        s.get(f"{self.url}/readyz", ssl=self.ssl()) as r,
                    ):
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.owns_db:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


async def watcher(
    session: aiohttp.ClientSession,
    url: str,
    ctx: ssl.SSLContext,
    rv: str,
    arrivals: dict[str, float],
    ready: asyncio.Event,
) -> None:
    async with session.get(
        f"{url}{NS_PATH}",
        params={"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"},
        ssl=ctx,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    ) as resp:
        ready.set()
        async for line in resp.content:
            if not line.strip():
                continue
            event = json.loads(line)
            if event["type"] != "BOOKMARK":
                arrivals[event["object"]["metadata"]["resourceVersion"]] = time.perf_counter()


async def _watch_all(url: str, cafile: str, token: str, rv: str, n: int, conn: Connection) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    arrivals: list[dict[str, float]] = [{} for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"}, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        tasks = [
            asyncio.create_task(watcher(session, url, ctx, rv, arrivals[i], readies[i]))
            for i in range(n)
        ]
        await asyncio.gather(*(e.wait() for e in readies))
        conn.send("ready")
        expected: set[str] = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the watchers fill plain dicts; poll them
            if all(expected <= set(a) for a in arrivals):
                break
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(arrivals)


def watch_process(url: str, cafile: str, token: str, rv: str, n: int, conn: Connection) -> None:
    """The watchers, in a process of their own: parsing 8 streams in the writers'
    process would delay the writers and the clock that timestamps the events (both
    processes read the same system-wide monotonic clock)."""
    asyncio.run(_watch_all(url, cafile, token, rv, n, conn))


async def run(args: argparse.Namespace, server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        ctx = server.ssl()
        for w in range(args.writers):
            body = {"metadata": {"name": f"w{w}"}, "spec": {"desired_state": "PENDING"}}
            async with session.post(f"{server.url}{NS_PATH}", json=body, ssl=ctx) as r:
                assert r.status == 201, await r.text()
        async with session.get(f"{server.url}{NS_PATH}", ssl=ctx) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        loop = asyncio.get_running_loop()
        mp = multiprocessing.get_context("spawn")
        here, there = mp.Pipe()
        cafile = str(server.workdir / "tls" / "server.crt")
        proc = mp.Process(
            target=watch_process,
            args=(server.url, cafile, server.token, rv, args.watchers, there),
        )
        proc.start()
        assert await loop.run_in_executor(None, here.recv) == "ready"
        await asyncio.sleep(0.5)
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}

        async def writer(w: int) -> None:
            period = 1 / args.rate if args.rate > 0 else 0.0
            # Writers start spread over one period, so they do not all write at once.
            next_at = time.perf_counter() + period * w / max(1, args.writers)
            for i in range(args.writes):
                if period:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += period
                t0 = time.perf_counter()
                async with session.patch(
                    f"{server.url}{NS_PATH}/w{w}",
                    data=json.dumps({"spec": {"memo": f"{i}"}}),
                    headers={"Content-Type": "application/merge-patch+json"},
                    ssl=ctx,
                ) as r:
                    rv_ = (await r.json())["metadata"]["resourceVersion"]
                    answered[rv_] = time.perf_counter()
                    sent[rv_] = t0

        assert server.proc is not None
        cpu0, own0 = cpu_seconds(server.proc.pid), time.process_time()
        load0 = os.getloadavg()[0]
        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(args.writers)))
        elapsed = time.perf_counter() - started
        here.send(set(sent))
        arrivals: list[dict[str, float]] = await loop.run_in_executor(None, here.recv)
        cpu = cpu_seconds(server.proc.pid) - cpu0
        own = time.process_time() - own0
        proc.join(10)
        latencies = [(a[rv_] - t0) * 1000 for a in arrivals for rv_, t0 in sent.items() if rv_ in a]
        after_answer = [
            (a[rv_] - t1) * 1000 for a in arrivals for rv_, t1 in answered.items() if rv_ in a
        ]
        write_ms = [(answered[rv_] - t0) * 1000 for rv_, t0 in sent.items()]
        missing = sum(1 for a in arrivals for rv_ in sent if rv_ not in a)
        total = len(sent)
        pace = f"{args.rate:g}/s each" if args.rate > 0 else "unpaced"
        print(
            f"writes: {total} by {args.writers} writers ({pace}) in {elapsed:.2f} s "
            f"= {total / elapsed:.0f} writes/s (each a PATCH over HTTPS); server CPU "
            f"{cpu / total * 1000:.2f} ms per write with {args.watchers} watchers, the "
            f"writers' process {own / total * 1000:.2f} ms"
        )
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(
            f"watch delivery to {args.watchers} watchers: {len(latencies)} events, "
            f"missing {missing}; write->event latency ms: "
            f"p50 {p50:.1f}  p99 {p99:.1f}  "
            f"max {max(latencies):.1f}  mean {statistics.mean(latencies):.1f}"
        )
        print(
            f"  at {total / elapsed:.0f} writes/s, {args.writers} writers x {args.watchers} "
            f"watchers, load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs: p50 {p50:.1f} ms (goal <= 10 ms: "
            f"{'met' if p50 <= 10 else 'NOT met'}), p99 {p99:.1f} ms (goal <= 50 ms: "
            f"{'met' if p99 <= 50 else 'NOT met'})"
        )
        print(
            f"  the write request itself (send->response) ms: "
            f"p50 {percentile(write_ms, 0.5):.1f}  p99 {percentile(write_ms, 0.99):.1f}; "
            f"response->event ms (negative: event first): "
            f"p50 {percentile(after_answer, 0.5):.1f}  p99 {percentile(after_answer, 0.99):.1f}"
        )

        if args.list_objects:
            sem = asyncio.Semaphore(16)

            async def create(i: int) -> None:
                body = {"metadata": {"name": f"l{i:05d}"}, "spec": {"desired_state": "PENDING"}}
                async with sem, session.post(f"{server.url}{NS_PATH}", json=body, ssl=ctx) as r:
                    assert r.status == 201, await r.text()

            t1 = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(args.list_objects)))
            print(f"created {args.list_objects} workspaces in {time.perf_counter() - t1:.1f} s")
            for label, params in (("full list", {}), ("first page limit=500", {"limit": "500"})):
                times = []
                for _ in range(5):
                    t1 = time.perf_counter()
                    async with session.get(f"{server.url}{NS_PATH}", params=params, ssl=ctx) as r:
                        payload = await r.read()
                    times.append((time.perf_counter() - t1) * 1000)
                print(
                    f"{label} ({args.list_objects + args.writers} objects, "
                    f"{len(payload) / 1e6:.1f} MB): median {statistics.median(times):.0f} ms, "
                    f"min {min(times):.0f} ms"
                )
            t1 = time.perf_counter()
            pages, token = 0, None
            while True:
                params = {"limit": "500", **({"continue": token} if token else {})}
                async with session.get(f"{server.url}{NS_PATH}", params=params, ssl=ctx) as r:
                    page = await r.json()
                pages += 1
                token = page["metadata"].get("continue")
                if not token:
                    break
            print(
                f"paginated list, {pages} pages of 500: {(time.perf_counter() - t1) * 1000:.0f} ms"
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=8)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--writes", type=int, default=100, help="per writer")
    parser.add_argument("--rate", type=float, default=20.0, help="writes/s per writer; 0: flat out")
    parser.add_argument("--list-objects", type=int, default=0)
    args = parser.parse_args()
    return run_with_server(run, args)


def run_with_server(
    bench: Callable[[argparse.Namespace, Server], Coroutine[Any, Any, None]],
    args: argparse.Namespace,
) -> int:
    """Start an API server on a throwaway database, run ``bench(args, server)`` and stop
    the server whatever happens: the frame of a benchmark that needs one server. Answers
    the exit status (2 without a PostgreSQL to create the database in)."""
    admin_url = admin_database_url()
    if admin_url is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="codehub-bench-") as tmp:
        server = Server(admin_url, Path(tmp))
        try:
            server.start()
            asyncio.run(server.wait_ready())
            asyncio.run(bench(args, server))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
