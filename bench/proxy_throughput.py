"""The workspace proxy against a direct connection, and auto-wake against ``docker run``.

Starts the API server (HTTPS, the proxy included, as in production) on a throwaway
database of the PostgreSQL named by CODEHUB_DATABASE_URL, a coordinator (the operator)
as a subprocess, and a ``codehub/workspace-test:local`` container (busybox httpd and a
websocketd echo) published on 127.0.0.1; services from ``eval "$(scripts/dev-services up)"``.
Then, in one run:

1. HTTP: C concurrent keep-alive clients for S seconds, GET /healthz, directly on the
   published port and through ``/w/bench/direct/`` (bearer): requests/s and the p50 of
   one client's sequential requests. Goals: proxy >= 0.7x the direct throughput and
   p50 at most +2 ms.
2. WebSocket: sequential echo round trips, direct (ws://) and through the proxy (wss://).
3. Wake: a page load (GET, Accept: text/html) of a STANDBY workspace, then polling its
   URL until the workspace itself answers: navigation to first workspace byte. Against
   ``docker run -d`` of the same image until its first byte. The loading page probes
   every 250 ms, so a browser adds at most that.

Everything is printed, ratios included; nothing is asserted (the machine may be shared:
compare ratios of one run, repeat it).

    .venv/bin/python bench/proxy_throughput.py --seconds 4 --clients 16 --wakes 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_write_throughput import cpu_seconds
from watch_latency import Server, free_port

IMAGE = "codehub/workspace-test:local"
NS = "bench"
WS_PATH = f"/apis/codehub.io/v1alpha1/namespaces/{NS}/workspaces"
COORDINATOR_CODE = (
    "import json, sys\n"
    "from codehub.operator.coordinator import run_coordinator\n"
    "from codehub.operator.settings import Settings\n"
    "run_coordinator(Settings.from_env(), '127.0.0.1', int(sys.argv[1]),"
    " scope_labels=json.loads(sys.argv[2]))\n"
)
PAGE = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run_container(labels: dict[str, str]) -> tuple[str, str]:
    """(container id, base URL) of a fresh workspace-test container on 127.0.0.1."""
    flags = [f"--label={k}={v}" for k, v in labels.items()]
    cid = docker("run", "-d", "-p", "127.0.0.1::8080", *flags, IMAGE)
    port = docker("port", cid, "8080/tcp").splitlines()[0].rpartition(":")[2]
    return cid, f"http://127.0.0.1:{port}"


async def first_byte(session: aiohttp.ClientSession, url: str, **kw: Any) -> None:
    """Poll ``url`` every 20 ms until the workspace itself answers 200."""
    while True:
        try:
            async with session.get(url, **kw) as resp:
                await resp.content.read(1)
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.02)


async def throughput(
    session: aiohttp.ClientSession, url: str, clients: int, seconds: float, **kw: Any
) -> float:
    """Requests per second of ``clients`` concurrent keep-alive loops."""
    count = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            async with session.get(url, **kw) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: {resp.status}")
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return count / (time.perf_counter() - started)


async def latency(session: aiohttp.ClientSession, url: str, n: int, **kw: Any) -> float:
    """p50 (ms) of ``n`` sequential GETs on one keep-alive connection."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url, **kw) as resp:
            await resp.read()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def ws_round_trip(session: aiohttp.ClientSession, url: str, n: int, **kw: Any) -> float:
    """p50 (ms) of ``n`` sequential echo round trips on one WebSocket."""
    times = []
    async with session.ws_connect(url, **kw) as ws:
        for i in range(n):
            t0 = time.perf_counter()
            await ws.send_str(f"ping {i}")
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"websocket echo: {msg.type}")
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class Api:
    def __init__(self, session: aiohttp.ClientSession, server: Server, ctx: ssl.SSLContext):
        self.session, self.base, self.ctx = session, server.url, ctx
        self.pid = server.proc.pid if server.proc is not None else None

    async def call(self, method: str, path: str, body: Any = None, merge: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if merge else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers, ssl=self.ctx
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def create(self, name: str, desired: str, image: str = IMAGE) -> None:
        body = {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"desired_state": desired, "image_ref": image},
        }
        await self.call("POST", WS_PATH, body)

    async def wait_display(self, name: str, display: str, limit: float = 240.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status = (await self.call("GET", f"{WS_PATH}/{name}")).get("status") or {}
            if status.get("display") == display and status.get("operation", "NONE") == "NONE":
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} not {display} after {limit:.0f}s")


async def bench_http(
    api: Api, direct: str, args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, float]]:
    await api.create("direct", "RUNNING")
    await api.call(
        "PATCH",
        f"{WS_PATH}/direct/status",
        {"status": {"observed_status": "RUNNING", "endpoint": direct}},
        merge=True,
    )
    proxied = f"{api.base}/w/{NS}/direct"
    kw: dict[str, Any] = {"ssl": api.ctx}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as plain:
        await latency(plain, direct + "/healthz", 50)
        await latency(api.session, proxied + "/healthz", 50, **kw)
        rps = {"direct": await throughput(plain, direct + "/healthz", args.clients, args.seconds)}
        assert api.pid is not None
        cpu0 = cpu_seconds(api.pid)
        rps["proxy"] = await throughput(
            api.session, proxied + "/healthz", args.clients, args.seconds, **kw
        )
        rps["cpu_ms"] = (cpu_seconds(api.pid) - cpu0) * 1000 / (rps["proxy"] * args.seconds)
        p50 = {
            "direct": await latency(plain, direct + "/healthz", args.requests),
            "proxy": await latency(api.session, proxied + "/healthz", args.requests, **kw),
        }
        ws_direct = direct.replace("http://", "ws://") + "/"
        ws_proxy = proxied.replace("https://", "wss://") + "/"
        p50["ws_direct"] = await ws_round_trip(plain, ws_direct, args.requests)
        p50["ws_proxy"] = await ws_round_trip(api.session, ws_proxy, args.requests, **kw)
    return rps, p50


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def bench_wake(api: Api, labels: dict[str, str], rounds: int) -> tuple[list[float], ...]:
    """Seconds from navigation to first workspace byte, and from ``docker run`` to it."""
    await api.create("sleepy", "STANDBY")
    await api.wait_display("sleepy", "STANDBY")
    url = f"{api.base}/w/{NS}/sleepy/healthz"
    woke, raw = [], []
    for _ in range(rounds):

        async def wake() -> None:
            async with api.session.get(url, headers=PAGE, ssl=api.ctx) as resp:
                if resp.headers.get("X-Codehub-Wake") != "woken":
                    raise RuntimeError(f"no wake: {resp.status} {await resp.text()}")
            await first_byte(api.session, url, ssl=api.ctx)

        woke.append(await timed(wake))
        await api.call("PATCH", f"{WS_PATH}/sleepy", {"spec": {"desired_state": "STANDBY"}}, True)
        await api.wait_display("sleepy", "STANDBY")
        t0 = time.perf_counter()
        cid, base = await asyncio.to_thread(run_container, labels)
        async with aiohttp.ClientSession() as plain:
            await first_byte(plain, base + "/healthz")
        raw.append(time.perf_counter() - t0)
        await asyncio.to_thread(docker, "rm", "-f", cid)
    return woke, raw


def start_coordinator(
    server: Server, token: str, labels: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CODEHUB_SERVER": server.url,
        "CODEHUB_TOKEN": token,
        "CODEHUB_CA_FILE": str(server.workdir / "tls" / "server.crt"),
        "CODEHUB_S3_BUCKET": os.environ.get("CODEHUB_S3_BUCKET", "codehub-bench"),
        "RECONCILER_INTERVAL": "1",
        "HEALTH_MONITOR_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    port = str(free_port())
    return subprocess.Popen(
        [sys.executable, "-c", COORDINATOR_CODE, port, json.dumps(labels)],
        env=env,
        stdout=open(server.workdir / "coordinator.log", "wb"),
        stderr=subprocess.STDOUT,
    )


def report(
    rps: dict[str, float], p50: dict[str, float], woke: list[float], raw: list[float]
) -> None:
    ratio = rps["proxy"] / rps["direct"]
    extra = p50["proxy"] - p50["direct"]
    print(f"HTTP GET /healthz   direct {rps['direct']:8.0f} req/s   p50 {p50['direct']:6.2f} ms")
    print(f"                    proxy  {rps['proxy']:8.0f} req/s   p50 {p50['proxy']:6.2f} ms")
    print(f"  throughput ratio {ratio:.2f}x (goal >= 0.70)   p50 {extra:+.2f} ms (goal <= +2 ms)")
    print(f"  server CPU per proxied request {rps['cpu_ms']:.2f} ms (TLS, auth, forward)")
    ws_extra = p50["ws_proxy"] - p50["ws_direct"]
    print(
        f"WebSocket echo p50  direct {p50['ws_direct']:.2f} ms   proxy {p50['ws_proxy']:.2f} ms"
        f"   ({ws_extra:+.2f} ms, {p50['ws_proxy'] / p50['ws_direct']:.2f}x)"
    )
    if woke and raw:
        w, r = statistics.median(woke), statistics.median(raw)
        print(
            f"Wake to first byte  page load {w:.2f} s   docker run {r:.2f} s   ({w / r:.2f}x)"
            f"   rounds: {' '.join(f'{x:.2f}' for x in woke)} / {' '.join(f'{x:.2f}' for x in raw)}"
        )


async def main(args: argparse.Namespace) -> None:
    admin_url = os.environ["CODEHUB_DATABASE_URL"]
    labels = {"codehub.io/bench": uuid.uuid4().hex[:8]}
    with tempfile.TemporaryDirectory(prefix="codehub-bench-") as tmp:
        server = Server(admin_url, Path(tmp) / "server")
        server.start()
        operator_token = uuid.uuid4().hex
        with (server.workdir / "tokens.csv").open("a") as fh:
            fh.write(f'{operator_token},codehub-operator,u2,"codehub:operator"\n')
        coordinator = None
        try:
            await server.wait_ready()
            _, direct = await asyncio.to_thread(run_container, labels)
            headers = {"Authorization": f"Bearer {server.token}"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
                api = Api(session, server, server.ssl())
                await first_byte(session, direct + "/healthz")
                rps, p50 = await bench_http(api, direct, args)
                woke: list[float] = []
                raw: list[float] = []
                if args.wakes:
                    coordinator = start_coordinator(server, operator_token, labels)
                    woke, raw = await bench_wake(api, labels, args.wakes)
            report(rps, p50, woke, raw)
        finally:
            if coordinator is not None:
                coordinator.terminate()
                coordinator.wait(30)
            server.stop()
            selector = f"label=codehub.io/bench={labels['codehub.io/bench']}"
            for kind in ("container", "volume"):
                ids = docker(
                    kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter", selector
                ).split()
                if ids:
                    docker(kind, "rm", "-f", *ids)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--requests", type=int, default=300, help="sequential, for p50")
    parser.add_argument("--wakes", type=int, default=3, help="wake rounds (0: skip)")
    asyncio.run(main(parser.parse_args()))
