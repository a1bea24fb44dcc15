"""The workspace proxy against a direct connection, and auto-wake against ``docker run``.

Starts the API server (HTTPS, the proxy included, as in production) on a throwaway
database of the PostgreSQL named by CODEHUB_DATABASE_URL, a coordinator (the operator)
as a subprocess, and a ``codehub/workspace-test:local`` container (busybox httpd and a
websocketd echo) published on 127.0.0.1; services from ``eval "$(scripts/dev-services up)"``.
Then, in one run:

1. HTTP: C concurrent keep-alive clients, GET /healthz, directly on the published port
   (plain HTTP) and through ``/w/bench/direct/`` (bearer) on the API's HTTPS listener, as
   in production: requests/s, the CPU per request of the client, the Python server and
   nginx, and the p50 of one client's sequential requests. The load generator
   (``--client``, printed first) is ``wrk`` (C) when installed, else aiohttp (Python,
   this process: it spends about as much CPU per request as the workspace, which blurs
   the ratios; ``proxy_clients.py``). The same client and concurrency serve every side, in
   R rounds; each round passes over the sides ``--slices`` times (seconds/slices each),
   and ratios are taken within a round, so a change of machine load does not favour
   either side. The extra line "proxy, plain HTTP" is a second replica started with
   ``--insecure-http`` on the same database: the same proxy without TLS, to tell TLS cost
   from the proxy's own. Goals: proxy >= 0.7x the direct throughput and p50 at most +2 ms.
   ``--workspace code-server`` puts the real IDE image behind the published port instead
   of the minimal test server (``--path`` picks what is fetched; the WebSocket echo is
   then skipped): the same ratios for the product's actual upstream.
   The native edge (docs/adr/0012-native-edge.md) in the same rounds: nginx on HTTPS in
   front of that replica, asking it who may pass and moving the bytes itself over a
   keep-alive pool to the container: "edge" asks on every request, "cached" reuses the
   answer for 1 s (the ``codehub edge`` default); extra lines: "cached_http" without TLS,
   "unpooled" with a new upstream connection per request. ``--sides`` picks a subset.
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
    .venv/bin/python bench/proxy_throughput.py --client wrk --sides cached,cached_http \
        --seconds 6 --slices 6 --rounds 5 --wakes 0
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
from _common import REPO, cpu_seconds, free_port
from proxy_clients import AiohttpClient, Target, WrkClient, wrk_binary
from watch_latency import Server

from codehub.crd_like.proxy.edge_conf import EdgeConfig
from codehub.crd_like.proxy.edge_run import EdgeProcess, nginx_binary

IMAGE = "codehub/workspace-test:local"
#: ``--workspace``: what answers behind the published port. "test" is the minimal
#: workspace-test image (busybox and websocketd: next to no work per request, so the
#: proxy's share is the largest it can be); "code-server" is the real IDE image
#: (opt-in: ``scripts/images/code-server/build``), the product's actual upstream.
WORKSPACES = {"test": IMAGE, "code-server": "codehub/code-server:local"}
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


def run_container(labels: dict[str, str], image: str = IMAGE) -> tuple[str, str]:
    """(container id, base URL) of a fresh workspace container on 127.0.0.1."""
    flags = [f"--label={k}={v}" for k, v in labels.items()]
    cid = docker("run", "-d", "-p", "127.0.0.1::8080", *flags, image)
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


async def latency(session: aiohttp.ClientSession, target: Target, n: int) -> float:
    """p50 (ms) of ``n`` sequential GETs on one keep-alive connection (always aiohttp: the
    added latency is a difference, and one client's sequential requests do not load it)."""
    times = []
    kw = target.aiohttp_kw()
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(target.url, **kw) as resp:  # type: ignore[arg-type]
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
    def __init__(
        self, session: aiohttp.ClientSession, server: Server, ctx: ssl.SSLContext, path: str
    ):
        self.session, self.base, self.ctx = session, server.url, ctx
        self.pid = server.proc.pid if server.proc is not None else None
        self.path = path  # what the HTTP rounds GET from the workspace

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


class FloorProcess(EdgeProcess):
    """The edge's nginx plus ``/floor/``: straight to the first pool, no ``auth_request``
    (benchmark only). What any TLS proxy hop costs here, whoever decides who may pass."""

    def _write(self) -> None:
        super()._write()
        floor = (
            "    location /floor/ {\n      proxy_pass http://codehub_w0/;\n"
            '      proxy_set_header Connection "";\n    }\n'
        )
        at = "    location @app {"
        self.conf_path.write_text(self.conf_path.read_text().replace(at, floor + at))


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
        workers: int = 0,
        floor: bool = False,
    ) -> None:
        self.tls = tls
        self.process = (FloorProcess if floor else EdgeProcess)(
            EdgeConfig(
                listen=f"127.0.0.1:{free_port()}",
                app=f"127.0.0.1:{app.port}",
                cert=primary.workdir / "tls" / "server.crt" if tls else None,
                key=primary.workdir / "tls" / "server.key" if tls else None,
                secret=app.edge_secret,
                workdir=workdir,
                auth_cache=cache,
                workers=workers,
                upstreams=pools,
            )
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.process.cfg.listen}"

    def start(self) -> None:
        self.process.start()

    def cpu(self) -> float:
        """CPU seconds of nginx's workers so far (the master only supervises)."""
        pid = self.process.pid
        if pid is None:
            return 0.0
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sum(cpu_seconds(int(child)) for child in children)

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
    ("floor", "nginx alone, TLS and the pool, no auth_request (extra line: any proxy's floor)"),
)
EDGE_SIDES = ("edge", "cached", "cached_http", "unpooled", "floor")
LABELS = (
    ("proxy", "proxy (HTTPS) "),
    ("plain", "plain-HTTP proxy"),
    ("edge", "native edge (HTTPS)"),
    ("cached", "native edge, 1 s auth cache"),
    ("cached_http", "native edge, 1 s cache, plain HTTP"),
    ("unpooled", "native edge, 1 s cache, no upstream pool"),
    ("floor", "nginx alone (TLS, pool, no auth)"),
)


def http_targets(
    api: Api, plain_server: Server, edges: dict[str, Edge], direct: str, sides: list[str]
) -> dict[str, Target]:
    """Each side's URL and headers, in the order of ``SIDES`` (``sides`` chosen)."""
    auth = {"Authorization": f"Bearer {api.session.headers['Authorization'].split()[1]}"}
    path = f"/w/{NS}/direct{api.path}"
    every = {
        "direct": Target(direct + api.path, {}),
        "proxy": Target(api.base + path, auth, api.ctx),
        "plain": Target(plain_server.url + path, auth),
        **{
            side: Target(edge.url + path, auth, api.ctx if edge.tls else None)
            for side, edge in edges.items()
        },
    }
    if "floor" in edges:
        every["floor"] = Target(edges["floor"].url + "/floor" + api.path, {}, api.ctx)
    return {side: every[side] for side, _ in SIDES if side in every and side in sides}


def workspace_pids(direct: str) -> list[int]:
    """The processes behind the published port: docker's userland proxy (when docker runs
    one) and every process of the container (websocketd for the test image; tini and
    code-server's node processes for the real one)."""
    port = direct.rpartition(":")[2]
    found = subprocess.run(
        ["pgrep", "-f", f"docker-proxy .*-host-port {port} "], capture_output=True, text=True
    ).stdout.split()
    cid = docker("ps", "-q", "--filter", f"publish={port}").split()[0]
    inside = docker("top", cid, "-o", "pid").splitlines()[1:]
    return [*map(int, found), *(int(line) for line in inside if line.strip().isdigit())]


class Meter:
    """CPU seconds so far of what serves a side besides the client: the Python server it
    asks (all but direct), nginx's workers (the edge sides) and the workspace (every side:
    docker-proxy and websocketd)."""

    def __init__(self, api: Api, plain_server: Server, edges: dict[str, Edge], direct: str) -> None:
        self.api, self.edges = api, edges
        self.plain_pid = plain_server.proc.pid if plain_server.proc else None
        self.workspace_pids = workspace_pids(direct)

    def workspace(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.workspace_pids)

    def python(self, side: str) -> float:
        pid = self.api.pid if side == "proxy" else self.plain_pid
        return cpu_seconds(pid) if pid and side != "direct" else 0.0

    def nginx(self, side: str) -> float:
        return self.edges[side].cpu() if side in self.edges else 0.0


async def http_round(
    client: AiohttpClient | WrkClient,
    targets: dict[str, Target],
    meter: Meter,
    args: argparse.Namespace,
    out: dict[str, list[float]],
) -> None:
    """One round: ``args.slices`` passes over every side, each ``seconds / slices`` long,
    so that the machine's load swings within the round fall on every side alike."""
    total: dict[str, list[float]] = {side: [0.0] * 6 for side in targets}
    for _ in range(args.slices):
        for side, target in targets.items():
            py0, ngx0, ws0 = meter.python(side), meter.nginx(side), meter.workspace()
            load = await client.run(target, args.seconds / args.slices)
            acc = total[side]
            acc[0] += load.requests
            acc[1] += load.seconds
            acc[2] += load.client_cpu
            acc[3] += meter.python(side) - py0
            acc[4] += meter.nginx(side) - ngx0
            acc[5] += meter.workspace() - ws0
    for side, (requests, seconds, *cpus) in total.items():
        out.setdefault(f"{side}_rps", []).append(requests / seconds)
        for key, cpu in zip(("client", "cpu", "nginx", "workspace"), cpus, strict=True):
            out.setdefault(f"{side}_{key}_ms", []).append(cpu * 1000 / requests)


async def bench_http(
    api: Api, plain_server: Server, edges: dict[str, Edge], direct: str, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Per-round figures of every side; one load generator and concurrency for all."""
    await api.create("direct", "RUNNING")
    await api.call(
        "PATCH",
        f"{WS_PATH}/direct/status",
        {"status": {"observed_status": "RUNNING", "endpoint": direct}},
        merge=True,
    )
    targets = http_targets(api, plain_server, edges, direct, args.sides)
    meter = Meter(api, plain_server, edges, direct)
    out: dict[str, list[float]] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        client: AiohttpClient | WrkClient = (
            WrkClient(args.clients, args.threads)
            if args.client == "wrk"
            else AiohttpClient(session, args.clients)
        )
        args.client_name = client.name
        print(f"load generator: {client.name}", flush=True)
        for target in targets.values():
            await latency(session, target, 50)  # warm: connections, endpoint cache
        for _ in range(args.rounds):
            await http_round(client, targets, meter, args, out)
            for side, target in targets.items():
                out.setdefault(f"{side}_p50", []).append(
                    await latency(session, target, args.requests)
                )
        if {"proxy", "plain"} <= targets.keys() and args.workspace == "test":  # the echo
            await bench_ws(session, api, plain_server, edges, direct, targets, args, out)
    return out


async def bench_ws(
    session: aiohttp.ClientSession,
    api: Api,
    plain_server: Server,
    edges: dict[str, Edge],
    direct: str,
    targets: dict[str, Target],
    args: argparse.Namespace,
    out: dict[str, list[float]],
) -> None:
    """Sequential echo round trips: direct (ws), proxy (wss), plain replica (ws), edge."""
    root = f"/w/{NS}/direct/"
    kw = targets["proxy"].aiohttp_kw()
    plain_kw = {"headers": kw["headers"]}
    ws: dict[str, tuple[str, dict[str, Any]]] = {
        "direct": (direct.replace("http://", "ws://") + "/", {}),
        "proxy": (api.base.replace("https://", "wss://") + root, kw),
        "plain": (plain_server.url.replace("http://", "ws://") + root, plain_kw),
    }
    if "edge" in edges:
        ws["edge"] = (edges["edge"].url.replace("https://", "wss://") + root, kw)
    for side, (url, side_kw) in ws.items():
        out[f"{side}_ws"] = [await ws_round_trip(session, url, args.requests, **side_kw)]


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


def host_ms(fig: dict[str, list[float]], side: str, i: int) -> float:
    """CPU per request of everything but the client in round ``i``: what a host serving
    remote clients would spend (its capacity when CPU-bound is the inverse)."""
    keys = ("workspace", "cpu", "nginx")
    return sum(fig[f"{side}_{k}_ms"][i] for k in keys if f"{side}_{k}_ms" in fig)


def report_http(fig: dict[str, list[float]], client: str, path: str) -> None:
    med = statistics.median
    rounds = len(fig["direct_rps"])
    print(f"HTTP GET {path}, {rounds} alternating rounds, same client and concurrency ({client}):")
    for side, what in SIDES:
        if side + "_rps" not in fig:  # no nginx here, or not chosen with --sides
            continue
        cpu = f" Python {med(fig[side + '_cpu_ms']):.3f}" if side != "direct" else ""
        if side in EDGE_SIDES:
            cpu += f" nginx {med(fig[side + '_nginx_ms']):.3f}"
        rps, p50 = med(fig[side + "_rps"]), med(fig[side + "_p50"])
        print(
            f"  {side:11} {rps:7.0f} req/s   p50 {p50:5.2f} ms   CPU ms/req: client"
            f" {med(fig[side + '_client_ms']):.3f} workspace"
            f" {med(fig[side + '_workspace_ms']):.3f}{cpu}   ({what})"
        )
    for side, label in LABELS:
        if side + "_rps" not in fig:
            continue
        ratios = [p / d for p, d in zip(fig[side + "_rps"], fig["direct_rps"], strict=True)]
        extras = [p - d for p, d in zip(fig[side + "_p50"], fig["direct_p50"], strict=True)]
        hosts = [host_ms(fig, "direct", i) / host_ms(fig, side, i) for i in range(len(ratios))]
        print(
            f"  {label} vs direct: throughput {med(ratios):.2f}x (goal >= 0.70;"
            f" rounds {' '.join(f'{r:.2f}' for r in ratios)})"
            f"   p50 {med(extras):+.2f} ms (goal <= +2 ms)"
            f"   capacity by host CPU {med(hosts):.2f}x"
        )


def report(
    fig: dict[str, list[float]], client: str, path: str, woke: list[float], raw: list[float]
) -> None:
    med = statistics.median
    report_http(fig, client, path)
    if "direct_ws" in fig:
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


def make_edges(
    server: Server, plain_server: PlainServer, direct: str, work: Path, args: argparse.Namespace
) -> dict[str, Edge]:
    """The chosen edge sides (none without nginx), each its own nginx."""
    if nginx_binary() is None:
        print("nginx is not installed: no native-edge sides", file=sys.stderr)
        return {}
    pool = (direct.removeprefix("http://"),)
    shapes: dict[str, tuple[int, bool, tuple[str, ...]]] = {
        "edge": (0, True, pool),
        "cached": (1, True, pool),
        "cached_http": (1, False, pool),
        "unpooled": (1, True, ()),
        "floor": (1, True, pool),
    }
    return {
        side: Edge(
            server, plain_server, work / side, cache, tls, pools, args.edge_workers, side == "floor"
        )
        for side, (cache, tls, pools) in shapes.items()
        if side in args.sides
    }


async def main(args: argparse.Namespace) -> None:
    """Long because it owns every process of the run (server, replica, container, nginx,
    coordinator) and must stop them all whatever fails."""
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
            image = WORKSPACES[args.workspace]
            _, direct = await asyncio.to_thread(run_container, labels, image)
            edges = make_edges(server, plain_server, direct, Path(tmp), args)
            for edge in edges.values():
                edge.start()
            headers = {"Authorization": f"Bearer {server.token}"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
                api = Api(session, server, server.ssl(), args.path)
                await first_byte(session, direct + "/healthz")
                await first_byte(session, direct + args.path)
                fig = await bench_http(api, plain_server, edges, direct, args)
                woke: list[float] = []
                raw: list[float] = []
                if args.wakes:
                    coordinator = start_coordinator(server, operator_token, labels)
                    woke, raw = await bench_wake(api, labels, args.wakes)
            report(fig, args.client_name, f"{args.workspace} {args.path}", woke, raw)
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per side and round")
    parser.add_argument(
        "--slices", type=int, default=1, help="passes over the sides per round (seconds each)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator (auto: wrk when installed, else aiohttp)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument(
        "--sides",
        default=",".join(side for side, _ in SIDES),
        help="comma-separated sides to measure (direct is always measured)",
    )
    parser.add_argument(
        "--edge-workers", type=int, default=0, help="nginx workers (0: auto, codehub edge's)"
    )
    parser.add_argument(
        "--workspace",
        choices=sorted(WORKSPACES),
        default="test",
        help="the upstream: the minimal test image, or the real IDE (opt-in image)",
    )
    parser.add_argument("--path", default="/healthz", help="what the HTTP rounds GET")
    parser.add_argument("--requests", type=int, default=300, help="sequential, for p50")
    parser.add_argument("--rounds", type=int, default=3, help="alternating HTTP rounds")
    parser.add_argument("--wakes", type=int, default=3, help="wake rounds (0: skip)")
    args = parser.parse_args()
    if args.client == "auto":
        args.client = "wrk" if wrk_binary() else "aiohttp"
    args.sides = ["direct", *(s for s in args.sides.split(",") if s and s != "direct")]
    unknown = set(args.sides) - {side for side, _ in SIDES}
    if unknown:
        parser.error(f"unknown sides: {', '.join(sorted(unknown))}")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
