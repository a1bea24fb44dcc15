"""The workspace proxy against a direct connection, and auto-wake against ``docker run``.

Starts the API server (HTTPS, the proxy included, as in production) on a throwaway
database of the PostgreSQL named by CODEHUB_DATABASE_URL, a coordinator (the operator)
as a subprocess, and a ``codehub/workspace-test:local`` container (busybox httpd and a
websocketd echo) published on 127.0.0.1; services from ``eval "$(scripts/dev-services up)"``.
Then, in one run:

1. HTTP: C concurrent keep-alive clients for S seconds, GET /healthz, directly on the
   published port (plain HTTP) and through ``/w/bench/direct/`` (bearer) on the API's
   HTTPS listener, as in production: requests/s, the server's CPU per proxied request
   and the p50 of one client's sequential requests. The same client session and
   concurrency serve every side, in R alternating rounds (direct, proxy, proxy over
   plain HTTP), and ratios are taken within a round, so a change of machine load
   between rounds does not favour either side. The extra line "proxy, plain HTTP" is a
   second replica started with ``--insecure-http`` on the same database: the same proxy
   without TLS, to tell TLS cost from the proxy's own. Goals: proxy >= 0.7x the direct
   throughput and p50 at most +2 ms.
   The native edge (docs/adr/0012-native-edge.md) in the same rounds: nginx on HTTPS in
   front of that replica, asking it who may pass and moving the bytes itself over a
   keep-alive pool to the container: "edge" asks on every request, "cached" reuses the
   answer for 1 s (the ``codehub edge`` default); extra lines: "cached_http" without TLS,
   "unpooled" with a new upstream connection per request. Their CPU figure is the
   Python replica's only (nginx not counted).
2. WebSocket: sequential echo round trips, direct (ws://) and through the proxy (wss://,
   and ws:// on the plain-HTTP replica; wss:// through the edge, which hands WebSockets
   to the Python proxy).
3. Wake: a page load (GET, Accept: text/html) of a STANDBY workspace, then polling its
   URL until the workspace itself answers: navigation to first workspace byte. Against
   ``docker run -d`` of the same image until its first byte. The loading page probes
   every 250 ms, so a browser adds at most that.

Everything is printed, ratios included; nothing is asserted (the machine may be shared:
compare ratios of one run, repeat it).

    .venv/bin/python bench/proxy_throughput.py --seconds 4 --clients 16 --rounds 3 --wakes 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
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
from watch_latency import REPO, Server, free_port

from codehub.crd_like.proxy.edge_conf import EdgeConfig
from codehub.crd_like.proxy.edge_run import EdgeProcess, nginx_binary

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


class PlainServer(Server):
    """A replica of ``primary`` (same database and token) serving plain HTTP."""

    def __init__(self, primary: Server, workdir: Path) -> None:
        super().__init__(primary.admin_url, workdir)
        self.db, self.url_db, self.token = primary.db, primary.url_db, primary.token
        self.owns_db = False
        self.edge_secret = secrets.token_urlsafe(24)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},bench-admin,u1,"codehub:admin"\n')
        env = {
            **os.environ,
            "CODEHUB_DATABASE_URL": self.url_db,
            "CODEHUB_TOKEN_FILE": str(tokens),
            "CODEHUB_STATE_DIR": str(self.workdir),
            "CODEHUB_EDGE_SECRET": self.edge_secret,
        }
        self.proc = subprocess.Popen(
            [
                str(REPO / ".venv/bin/python"),
                *("-m", "codehub.crd_like.server", "--listen", f"127.0.0.1:{self.port}"),
                "--insecure-http",
            ],
            env=env,
            stdout=open(self.workdir / "server.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                try:
                    async with s.get(f"{self.url}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("plain-HTTP replica did not become ready")


class Edge:
    """nginx (the native edge, ``crd_like/proxy/edge_run.py``) on HTTPS in front of
    ``app`` (the plain-HTTP replica), with the primary server's certificate."""

    def __init__(
        self,
        primary: Server,
        app: PlainServer,
        workdir: Path,
        cache: int,
        tls: bool = True,
        pools: tuple[str, ...] = (),
    ) -> None:
        self.tls = tls
        self.process = EdgeProcess(
            EdgeConfig(
                listen=f"127.0.0.1:{free_port()}",
                app=f"127.0.0.1:{app.port}",
                cert=primary.workdir / "tls" / "server.crt" if tls else None,
                key=primary.workdir / "tls" / "server.key" if tls else None,
                secret=app.edge_secret,
                workdir=workdir,
                auth_cache=cache,
                workers=int(os.environ.get("EDGE_WORKERS", "1")),
                upstreams=pools,
            )
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.process.cfg.listen}"

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()
        errors = self.process.error_log.read_text().splitlines()
        if errors:
            print(
                f"nginx {self.process.cfg.workdir.name}: {len(errors)} error lines:", *errors[-3:]
            )


#: (label, what the client talks to) of the measured sides, in each round's order.
SIDES = (
    ("direct", "published port, plain HTTP"),
    ("proxy", "the API's HTTPS listener (production)"),
    ("plain", "a --insecure-http replica: the proxy without TLS (extra line)"),
    ("edge", "native edge: nginx (HTTPS) asks the plain replica, then moves the bytes"),
    ("cached", "native edge, its 'may pass' answers reused for up to 1 s"),
    ("cached_http", "the same without TLS (extra line: TLS cost at the edge)"),
    ("unpooled", "cached, but a new upstream connection per request (extra line)"),
)


async def bench_http(
    api: Api, plain_server: Server, edges: dict[str, Edge], direct: str, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Per-round figures of every side; one client session and concurrency for all."""
    await api.create("direct", "RUNNING")
    await api.call(
        "PATCH",
        f"{WS_PATH}/direct/status",
        {"status": {"observed_status": "RUNNING", "endpoint": direct}},
        merge=True,
    )
    auth = {"Authorization": f"Bearer {api.session.headers['Authorization'].split()[1]}"}
    urls: dict[str, tuple[str, dict[str, Any]]] = {
        "direct": (direct + "/healthz", {}),
        "proxy": (f"{api.base}/w/{NS}/direct/healthz", {"ssl": api.ctx, "headers": auth}),
        "plain": (f"{plain_server.url}/w/{NS}/direct/healthz", {"headers": auth}),
        **{
            side: (
                f"{edge.url}/w/{NS}/direct/healthz",
                {"ssl": api.ctx, "headers": auth} if edge.tls else {"headers": auth},
            )
            for side, edge in edges.items()
        },
    }
    plain_pid = plain_server.proc.pid if plain_server.proc else None
    pids = {"proxy": api.pid, "plain": plain_pid}
    pids.update((side, plain_pid) for side in edges)
    out: dict[str, list[float]] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        for url, kw in urls.values():
            await latency(client, url, 50, **kw)  # warm: connections, endpoint cache
        for _ in range(args.rounds):
            for side, (url, kw) in urls.items():
                pid = pids.get(side)
                cpu0 = cpu_seconds(pid) if pid else 0.0
                t0 = time.perf_counter()
                rps = await throughput(client, url, args.clients, args.seconds, **kw)
                served = rps * (time.perf_counter() - t0)
                out.setdefault(f"{side}_rps", []).append(rps)
                if pid:
                    cpu = (cpu_seconds(pid) - cpu0) * 1000 / served
                    out.setdefault(f"{side}_cpu_ms", []).append(cpu)
                out.setdefault(f"{side}_p50", []).append(
                    await latency(client, url, args.requests, **kw)
                )
        root = f"/w/{NS}/direct/"
        ws: dict[str, tuple[str, dict[str, Any]]] = {
            "direct": (direct.replace("http://", "ws://") + "/", {}),
            "proxy": (api.base.replace("https://", "wss://") + root, urls["proxy"][1]),
            "plain": (plain_server.url.replace("http://", "ws://") + root, urls["plain"][1]),
        }
        if "edge" in edges:
            ws["edge"] = (edges["edge"].url.replace("https://", "wss://") + root, urls["edge"][1])
        for side, (url, kw) in ws.items():
            out[f"{side}_ws"] = [await ws_round_trip(client, url, args.requests, **kw)]
    return out


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


def report(fig: dict[str, list[float]], woke: list[float], raw: list[float]) -> None:
    med = statistics.median
    rounds = len(fig["direct_rps"])
    print(f"HTTP GET /healthz, {rounds} alternating rounds, same client and concurrency:")
    for side, what in SIDES:
        if side + "_rps" not in fig:  # no nginx here: no edge sides
            continue
        cpu = f"   server CPU {med(fig[side + '_cpu_ms']):.2f} ms/req" if side != "direct" else ""
        if side in ("edge", "cached", "cached_http", "unpooled"):
            cpu = f"   Python CPU {med(fig[side + '_cpu_ms']):.2f} ms/req (nginx not counted)"
        rps, p50 = med(fig[side + "_rps"]), med(fig[side + "_p50"])
        print(f"  {side:6} {rps:7.0f} req/s   p50 {p50:5.2f} ms{cpu}   ({what})")
    labels = (
        ("proxy", "proxy (HTTPS) "),
        ("plain", "plain-HTTP proxy"),
        ("edge", "native edge (HTTPS)"),
        ("cached", "native edge, 1 s auth cache"),
        ("cached_http", "native edge, 1 s cache, plain HTTP"),
        ("unpooled", "native edge, 1 s cache, no upstream pool"),
    )
    for side, label in labels:
        if side + "_rps" not in fig:
            continue
        ratios = [p / d for p, d in zip(fig[side + "_rps"], fig["direct_rps"], strict=True)]
        extras = [p - d for p, d in zip(fig[side + "_p50"], fig["direct_p50"], strict=True)]
        print(
            f"  {label} vs direct: throughput {med(ratios):.2f}x (goal >= 0.70;"
            f" rounds {' '.join(f'{r:.2f}' for r in ratios)})"
            f"   p50 {med(extras):+.2f} ms (goal <= +2 ms)"
        )
    d = fig["direct_ws"][0]
    edge = ""
    if "edge_ws" in fig:
        e = fig["edge_ws"][0]
        edge = f"   edge (wss, Python behind) {e:.2f} ms ({e - d:+.2f} ms)"
    print(
        f"WebSocket echo p50  direct {d:.2f} ms   proxy (wss) {fig['proxy_ws'][0]:.2f} ms"
        f" ({fig['proxy_ws'][0] - d:+.2f} ms)   plain-HTTP proxy (ws)"
        f" {fig['plain_ws'][0]:.2f} ms ({fig['plain_ws'][0] - d:+.2f} ms){edge}"
    )
    if woke and raw:
        w, r = med(woke), med(raw)
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
        plain_server = PlainServer(server, Path(tmp) / "plain")
        operator_token = uuid.uuid4().hex
        with (server.workdir / "tokens.csv").open("a") as fh:
            fh.write(f'{operator_token},codehub-operator,u2,"codehub:operator"\n')
        coordinator = None
        edges: dict[str, Edge] = {}
        try:
            await server.wait_ready()
            plain_server.start()
            await plain_server.wait_ready()
            _, direct = await asyncio.to_thread(run_container, labels)
            pool = (direct.removeprefix("http://"),)
            work = Path(tmp)
            if nginx_binary() is None:
                print("nginx is not installed: no native-edge sides", file=sys.stderr)
            else:
                edges.update(
                    edge=Edge(server, plain_server, work / "edge", 0, pools=pool),
                    cached=Edge(server, plain_server, work / "cached", 1, pools=pool),
                    cached_http=Edge(server, plain_server, work / "cached_http", 1, False, pool),
                    unpooled=Edge(server, plain_server, work / "unpooled", 1),
                )
            for edge in edges.values():
                edge.start()
            headers = {"Authorization": f"Bearer {server.token}"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
                api = Api(session, server, server.ssl())
                await first_byte(session, direct + "/healthz")
                fig = await bench_http(api, plain_server, edges, direct, args)
                woke: list[float] = []
                raw: list[float] = []
                if args.wakes:
                    coordinator = start_coordinator(server, operator_token, labels)
                    woke, raw = await bench_wake(api, labels, args.wakes)
            report(fig, woke, raw)
        finally:
            if coordinator is not None:
                coordinator.terminate()
                coordinator.wait(30)
            for edge in edges.values():
                edge.stop()
            plain_server.stop()
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
    parser.add_argument("--rounds", type=int, default=3, help="alternating HTTP rounds")
    parser.add_argument("--wakes", type=int, default=3, help="wake rounds (0: skip)")
    asyncio.run(main(parser.parse_args()))
