#!/usr/bin/env python3
"""Scale benchmark (docs/architecture.md): thousands of workspaces on fake adapters.

The real API server (a subprocess on a throwaway PostgreSQL database) and the real
coordinator (in this process: leader election, kopf, reconciler, HealthMonitor) drive
in-memory adapters, so what is measured is the control plane alone:

- creates/s, and convergence: N workspaces created with desired RUNNING -> all display
  RUNNING with no operation left;
- the coordinator's own API requests per converged workspace, by method and kind (kopf's
  finalizer and annotation patches are apart);
- CPU seconds per workspace during convergence, by process: the API server, the
  PostgreSQL backends serving the bench's database (found by name in /proc), PostgreSQL's
  shared writers, the coordinator (this process's threads but the main one) and the
  bench's client (the main thread: creates, progress, leader election); and the floor
  that total implies on this machine (CPU seconds / cores);
- the coordinator's CPU and RSS while idle afterwards (this process = the coordinator),
  with the product's HealthMonitor and safety-net intervals unless told otherwise;
- engine calls and API requests per HealthMonitor pass (expected constant: one API list,
  one container listing, one volume listing, whatever N; writes only where something
  changed) and per idle second;
- API requests and engine calls of one TTL Manager pass (pages of 500, writes only where
  the idle state changed) and one Archive GC pass (API pages, object-store pages and
  first-seen queries over a bucket with one archive per workspace).

Several sizes (``--workspaces 1000,3000,10000``) run one after the other, each in a
process of its own, and end with the growth table.

Figures are printed, not asserted (docs/adr/0011-ten-thousand-workspaces.md).
Services come from ``scripts/dev-services up``.

    .venv/bin/python bench/scale.py --workspaces 1000 --idle 30
    .venv/bin/python bench/scale.py --workspaces 1000,3000,10000 --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import REPO, free_port, service_env
from _common import cpu_seconds as process_cpu_seconds

CODEHUB = REPO / ".venv" / "bin" / "codehub"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class LocalServer:
    """`codehub server` on a fresh database, with operator/admin/user tokens."""

    env: Mapping[str, str]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    users: tuple[str, ...] = ("bench",)
    url: str = ""
    database_url: str = ""
    ca_file: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    db_name: str = ""
    server_env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> str:
        assert self.tmp is not None
        return self.tmp.name

    def env_for_clients(self) -> dict[str, str]:
        """The server's environment plus what a coordinator or CLI needs to reach it."""
        return {**self.server_env, "CODEHUB_SERVER": self.url, "CODEHUB_CA_FILE": self.ca_file}

    def start(self) -> LocalServer:
        import psycopg

        from codehub.crd_like.server.tls import ensure_certificate

        self.tmp = tempfile.TemporaryDirectory(prefix="codehub-bench-")
        state = Path(self.tmp.name)
        admin_url = self.env["CODEHUB_DATABASE_URL"]
        self.db_name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.database_url = f"{admin_url.rpartition('/')[0]}/{self.db_name}"
        lines = []
        for user, groups in (
            ("operator", "codehub:operator"),
            ("admin", "codehub:admin"),
            *((u, "") for u in self.users),
        ):
            self.tokens[user] = secrets.token_urlsafe(24)
            lines.append(f'{self.tokens[user]},{user},{user}-uid,"{groups}"')
        tokens = state / "tokens.csv"
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)
        cert, key = ensure_certificate(state)
        self.ca_file = str(cert)
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        env = {
            **os.environ,
            **self.env,
            "CODEHUB_DATABASE_URL": self.database_url,
            "CODEHUB_STATE_DIR": str(state),
            "CODEHUB_TOKEN_FILE": str(tokens),
            "CODEHUB_TLS_CERT": str(cert),
            "CODEHUB_TLS_KEY": str(key),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.server_env = env
        subprocess.run([str(CODEHUB), "db", "migrate"], env=env, check=True, capture_output=True)
        logf = open(state / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(CODEHUB), "server", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        ctx = ssl.create_default_context(cafile=self.ca_file)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=ctx):
                    break
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "server did not start: " + (state / "server.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.3)
        return self

    def stop(self) -> None:
        import psycopg

        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.db_name:
            with psycopg.connect(self.env["CODEHUB_DATABASE_URL"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if self.tmp is not None:
            self.tmp.cleanup()


@contextlib.contextmanager
def local_server(env: Mapping[str, str], **kw: Any) -> Iterator[LocalServer]:
    server = LocalServer(env, **kw).start()
    try:
        yield server
    finally:
        server.stop()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu_seconds(tid: int) -> float:
    """User plus system CPU of one thread of this process (from /proc)."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: PostgreSQL's background processes that work for every database (their titles).
PG_SHARED = ("walwriter", "checkpointer", "background writer", "walsummarizer")


class CpuMeter:
    """CPU seconds by process over a window, sampled every ``period`` seconds (a
    PostgreSQL backend that exits between two samples loses at most one period)."""

    def __init__(self, server_pid: int, db_name: str, period: float = 2.0) -> None:
        self.server_pid = server_pid
        self.db_name = db_name
        self.period = period
        self.exclude: set[int] = set()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._role: dict[int, str] = {}
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}

    def _postgres(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                if not title.startswith("postgres: "):
                    continue
                rest = title.removeprefix("postgres: ")
                if f" {self.db_name} " in f" {rest} ":
                    role = "PostgreSQL backends of the bench's database"
                elif rest.startswith(PG_SHARED):
                    role = "PostgreSQL shared writers (WAL, checkpoints; all databases)"
                else:
                    continue
                found[int(entry.name)] = (role, process_cpu_seconds(int(entry.name)))
            except (OSError, ValueError, IndexError):
                continue
        return found

    def _own(self) -> dict[str, float]:
        main = thread_cpu_seconds(os.getpid())
        return {
            "API server": process_cpu_seconds(self.server_pid),
            "coordinator (this process but its main thread)": cpu_seconds() - main,
            "bench client (main thread: creates, progress, election)": main,
        }

    def sample(self) -> None:
        for pid, (role, cpu) in self._postgres().items():
            if pid in self.exclude:
                continue
            self._first.setdefault(pid, 0.0 if self._start else cpu)
            self._last[pid] = cpu
            self._role[pid] = role

    def start(self) -> None:
        self.sample()
        self._start = self._own()

    def stop(self) -> None:
        self.sample()
        self._end = self._own()

    async def run(self) -> None:
        """Sample until cancelled (catches backends opened and closed in the window)."""
        while True:
            await asyncio.sleep(self.period)
            await asyncio.to_thread(self.sample)

    def totals(self) -> dict[str, float]:
        out = {k: self._end.get(k, 0.0) - v for k, v in self._start.items()}
        for pid, last in self._last.items():
            role = self._role[pid]
            out[role] = out.get(role, 0.0) + last - self._first[pid]
        return out


# --- the benchmark ----------------------------------------------------------------------


ADAPTER_METHODS = (
    "provision", "restore", "archive", "delete_volume", "volume_exists", "list_volumes",
    "start", "delete", "is_running", "upstream", "list_instances", "inspect",
)  # fmt: skip


class CountingFakes:
    """The fake adapters, with every adapter call counted by method."""

    def __init__(self) -> None:
        from codehub.adapters.fake_instance import FakeInstanceController
        from codehub.adapters.fake_storage import FakeStorageProvider

        self.storage = FakeStorageProvider()
        self.instances = FakeInstanceController(volume_exists=self.storage.volume_exists)
        self.by_method: Counter[str] = Counter()
        for adapter in (self.storage, self.instances):
            for method in ADAPTER_METHODS:
                if hasattr(adapter, method):
                    setattr(adapter, method, self._counted(method, getattr(adapter, method)))

    def _counted(self, method: str, fn: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.by_method[method] += 1
            return await fn(*args, **kwargs)

        return call

    def snapshot(self) -> Counter[str]:
        return Counter(self.by_method)


class CountingApi:
    """Counts the coordinator's own API requests by method and kind (kopf's are apart)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()

    def wrap(self, api: Any) -> Any:
        request = api.request

        async def counted(method: str, path: str, **kwargs: Any) -> Any:
            self.by_kind[f"{method} {_kind_of(method, path)}"] += 1
            return await request(method, path, **kwargs)

        api.request = counted
        return api

    def snapshot(self) -> Counter[str]:
        return Counter(self.by_kind)


def _settled_running(obj: Mapping[str, Any]) -> bool:
    """Displayed RUNNING with no operation left: the reconciler is done with it too."""
    status = obj.get("status") or {}
    return status.get("display") == "RUNNING" and (status.get("operation") or "NONE") == "NONE"


def _kind_of(method: str, path: str) -> str:
    if "/events" in path:
        return "event"
    if path.endswith("/status"):
        return "status"
    if "/workspaces/" in path:
        return "workspace"
    return "list" if method == "GET" else "other"


def _per(counts: Counter[str], n: float) -> str:
    if n <= 0:
        return "n/a"
    total = sum(counts.values())
    parts = ", ".join(f"{k}={v / n:.2f}" for k, v in sorted(counts.items()))
    return f"{total / n:.2f} ({parts})" if parts else "0"


@dataclass
class Figures:
    """What one size measured; one row of the growth table."""

    n: int
    created_s: float = 0.0
    converged_s: float = 0.0
    running: int = 0
    errors: int = 0
    converge_api: Counter[str] = field(default_factory=Counter)
    idle_s: float = 0.0
    idle_cpu_pct: float = 0.0
    rss_before: float = 0.0
    rss_after: float = 0.0
    health_passes: float = 0.0
    idle_calls: Counter[str] = field(default_factory=Counter)
    idle_api: Counter[str] = field(default_factory=Counter)
    ttl_first_api: Counter[str] = field(default_factory=Counter)
    ttl_api: Counter[str] = field(default_factory=Counter)
    ttl_calls: Counter[str] = field(default_factory=Counter)
    gc_api: Counter[str] = field(default_factory=Counter)
    gc_objects: Counter[str] = field(default_factory=Counter)
    gc_queries: int = 0
    settle_s: float = 0.0
    converge_cpu: dict[str, float] = field(default_factory=dict)
    setup: str = ""
    slots_peak: int = 0
    slots_limit: int = 0
    informer: str = ""
    kopf_skipped: int = 0

    @property
    def kb_per_workspace(self) -> float:
        return 1024 * (self.rss_after - self.rss_before) / max(self.n, 1)


async def measure(args: argparse.Namespace, n: int) -> Figures:
    """One size on a fresh server and database. Long because it is the script of one
    run: start, create, converge, idle, passes; split, it would only pass its locals on."""
    from prometheus_client import CollectorRegistry

    from codehub.adapters.fake_engine_objects import FakeLabelledObjects
    from codehub.adapters.fake_object_store import MemoryObjectStore
    from codehub.crd_like.client.api import ApiClient
    from codehub.operator import kopf_skip
    from codehub.operator.clock import SystemClock
    from codehub.operator.context import OperatorContext
    from codehub.operator.coordinator import Coordinator
    from codehub.operator.metrics import Metrics
    from codehub.operator.settings import Settings

    env = service_env()
    users = tuple(f"u{i:03d}" for i in range(args.namespaces))
    limits = {"MAX_RUNNING_PER_USER": "1000000", "MAX_RUNNING_GLOBAL": "1000000"}
    if args.finalizer_on_create:  # as `codehub dev up` and docs/api.md recommend
        limits["CODEHUB_FINALIZER_ON_CREATE"] = "1"
    fig = Figures(n)
    fig.setup = (
        f"finalizer on create: {'yes' if args.finalizer_on_create else 'no (kopf PATCHes it)'}"
    )
    with local_server(env, extra_env=limits, users=users) as server:
        settings = Settings(
            database_url=server.database_url,
            server=server.url,
            token=server.tokens["operator"],
            ca_file=server.ca_file,
            reconciler_interval=args.reconciler_interval,
            health_monitor_interval=args.health_interval,
            coordinator_retry_interval=1,
            reconcile_concurrency=args.reconcile_concurrency,
            max_running_per_user=1_000_000,
            max_running_global=1_000_000,
            # Nobody uses the workspaces: the standby TTL must not act while a big size
            # converges (it still writes each new workspace's idle_action once).
            default_standby_ttl=7 * 86400,
            node_id="bench",
        )
        fakes = CountingFakes()
        api_calls = CountingApi()
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        contexts: list[OperatorContext] = []

        async def context(s: Settings, labels: Mapping[str, str], m: Any) -> Any:
            ctx = OperatorContext(
                settings=s,
                api=api_calls.wrap(ApiClient(s.server, s.token, ca_file=s.ca_file)),
                instances=fakes.instances,
                storage=fakes.storage,
                # the leader's own GC sweeps an empty bucket; the measured pass is apart
                objects=MemoryObjectStore(),
                engine_objects=FakeLabelledObjects(fakes.instances, fakes.storage),
                clock=SystemClock(),
                metrics=m,
            )
            contexts.append(ctx)
            return ctx

        coordinator = Coordinator(
            settings, context_factory=context, registry=registry, metrics=metrics
        )
        stop = asyncio.Event()
        runner = asyncio.create_task(coordinator.run(stop))
        while not coordinator.elector.is_leader:  # noqa: ASYNC110 - polling another loop
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # kopf connected and watching
        fig.rss_before = rss_mb()
        api0 = api_calls.snapshot()

        admin = ApiClient(server.url, server.tokens["admin"], ca_file=server.ca_file)
        progress = await Progress.connect(server.database_url)
        assert server.proc is not None
        meter = CpuMeter(server.proc.pid, server.db_name)
        meter.exclude.add(progress.backend_pid)
        log(f"creating {n} workspaces in {len(users)} namespaces")
        t0 = time.monotonic()
        meter.start()
        sampler = asyncio.create_task(meter.run())
        sem = asyncio.Semaphore(args.concurrency)
        skipped0 = kopf_skip.skipped()

        async def create(i: int) -> None:
            ns = users[i % len(users)]
            body = {
                "apiVersion": "codehub.io/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": f"ws-{i:05d}", "namespace": ns},
                # Nobody uses them: no standby TTL, or it acts during a long run's idle window.
                "spec": {
                    "desired_state": "RUNNING",
                    "image_ref": "bench:latest",
                    "standby_ttl_seconds": 0,
                },
            }
            async with sem:
                await admin.create(ns, body)
            if i % 1000 == 999:
                log(f"  {i + 1} creates sent ({time.monotonic() - t0:.0f}s, RSS {rss_mb():.0f} MB)")

        await asyncio.gather(*(create(i) for i in range(n)))
        fig.created_s = time.monotonic() - t0
        log(f"created in {fig.created_s:.1f}s; waiting for convergence")
        await converge(fig, admin, progress, t0, args.max_wait, coordinator)
        meter.stop()
        sampler.cancel()
        fig.converged_s = time.monotonic() - t0
        fig.converge_api = api_calls.snapshot() - api0
        fig.converge_cpu = meter.totals()
        fig.kopf_skipped = kopf_skip.skipped() - skipped0
        await admin.close()
        await progress.close()

        # The TTL Manager's first pass over new workspaces writes each one's idle_action
        # (once): done here, so the idle window below is idle.
        await ttl_first_pass(fig, contexts[-1])
        fig.settle_s = await settle(api_calls, args.max_wait)

        # Idle: nothing changes; only the periodic passes run.
        passes0 = registry.get_sample_value("codehub_health_pass_seconds_count") or 0.0
        calls0 = fakes.snapshot()
        idle_api0 = api_calls.snapshot()
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.idle)
        cpu1, wall1 = cpu_seconds(), time.monotonic()
        passes1 = registry.get_sample_value("codehub_health_pass_seconds_count") or 0.0
        fig.idle_calls = fakes.snapshot() - calls0
        fig.idle_api = api_calls.snapshot() - idle_api0
        fig.rss_after = rss_mb()
        if args.tracemalloc:
            print_allocations()
        log(f"RSS {fig.rss_after:.0f} MB; after gc and malloc_trim: {trimmed_rss():.0f} MB")
        fig.idle_s = wall1 - wall0
        fig.idle_cpu_pct = 100 * (cpu1 - cpu0) / fig.idle_s
        fig.health_passes = passes1 - passes0
        informer = getattr(getattr(coordinator, "_term", None), "_informer", None)
        if informer is not None:  # the leader's workspace cache, over the whole run
            fig.informer = (
                f"{len(informer)} cached; {informer.relists} Lists ({informer.list_requests} "
                f"requests), {informer.watches} watches, {informer.events} events, "
                f"{informer.errors} errors"
            )
        await ttl_and_gc_passes(fig, contexts[-1], fakes)
        stop.set()
        await asyncio.wait_for(runner, 60)
    return fig


class Progress:
    """How many workspaces are settled RUNNING or ERROR, counted by PostgreSQL from the
    store's typed columns: listing 10,000 bodies every 2 s through the API would cost
    the API server and this process more than the coordinator's own work."""

    def __init__(self, conn: Any, backend_pid: int) -> None:
        self.conn = conn
        self.backend_pid = backend_pid

    @classmethod
    async def connect(cls, database_url: str) -> Progress:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return cls(conn, int(row[0]))

    async def counts(self) -> tuple[int, int]:
        row = await (
            await self.conn.execute(
                "SELECT count(*) FILTER (WHERE observed_status = 'RUNNING'"
                " AND coalesce(operation, 'NONE') = 'NONE'),"
                " count(*) FILTER (WHERE observed_status = 'ERROR')"
                " FROM objects WHERE kind = 'workspaces'"
            )
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def close(self) -> None:
        await self.conn.close()


async def converge(
    fig: Figures, admin: Any, progress: Progress, t0: float, max_wait: float, coordinator: Any
) -> None:
    """Wait until every workspace is settled RUNNING (or ERROR), then confirm it with one
    listing through the API (display and operation, as a user sees them)."""
    n = fig.n
    while True:
        await asyncio.sleep(2)
        running, errors = await progress.counts()
        term = coordinator._term
        slots = term.gate.slots if term is not None and term.ctx is not None else None
        if slots is not None:
            fig.slots_peak, fig.slots_limit = slots.peak, slots.limit
        held = f", slots {slots.in_use}/{slots.limit} +{slots.waiting} waiting" if slots else ""
        log(
            f"  {running}/{n} RUNNING, {errors} ERROR ({time.monotonic() - t0:.0f}s,"
            f" RSS {rss_mb():.0f} MB{held})"
        )
        if running + errors >= n:
            break
        if time.monotonic() - t0 > max_wait:
            log("giving up waiting")
            break
    items = (await admin.list())["items"]
    fig.running = sum(1 for o in items if _settled_running(o))
    fig.errors = sum(1 for o in items if (o.get("status") or {}).get("display") == "ERROR")


async def settle(api_calls: CountingApi, max_wait: float, window: float = 3.0) -> float:
    """Wait until the coordinator sends only listings for two windows in a row (a pass
    that began during convergence may still be working through its listing)."""
    t0 = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - t0 < max_wait:
        before = api_calls.snapshot()
        await asyncio.sleep(window)
        busy = sum(n for k, n in (api_calls.snapshot() - before).items() if k != "GET list")
        quiet = quiet + 1 if busy == 0 else 0
    log(f"settled {time.monotonic() - t0:.0f}s after the TTL Manager's first pass")
    return time.monotonic() - t0


def _own_client(leader: Any) -> tuple[CountingApi, Any, Any]:
    """A counted client and a context of its own, with the leader's settings and fakes:
    kopf runs the leader's loop in another thread, whose client cannot be used here."""
    from dataclasses import replace

    from codehub.crd_like.client.api import ApiClient

    s = leader.settings
    api_calls = CountingApi()
    api = api_calls.wrap(ApiClient(s.server, s.token, ca_file=s.ca_file))
    return api_calls, api, replace(leader, api=api)


async def ttl_first_pass(fig: Figures, leader: Any) -> None:
    from codehub.operator.ttl_manager import TtlManager

    api_calls, api, ctx = _own_client(leader)
    await TtlManager(ctx).pass_once()
    fig.ttl_first_api = api_calls.snapshot()
    await api.close()


async def ttl_and_gc_passes(fig: Figures, leader: Any, fakes: CountingFakes) -> None:
    """One TTL Manager pass and one Archive GC pass over the N workspaces, counted apart
    from the coordinator's own traffic.

    The GC's bucket holds one unprotected archive per workspace (first seen now, so
    nothing is deleted): the listing and first-seen work of a full bucket."""
    from codehub.adapters.fake_object_store import MemoryObjectStore
    from codehub.operator.archive_gc import ArchiveGC
    from codehub.operator.archive_gc_store import MemoryFirstSeen
    from codehub.operator.ttl_manager import TtlManager

    api_calls, api, ctx = _own_client(leader)
    api0, calls0 = api_calls.snapshot(), fakes.snapshot()
    await TtlManager(ctx).pass_once()
    fig.ttl_api = api_calls.snapshot() - api0
    fig.ttl_calls = fakes.snapshot() - calls0

    objects = MemoryObjectStore()
    for i in range(fig.n):
        objects.put(f"archives/{uuid.UUID(int=i)}/op-{i}/home.tar.zst")
    first_seen = MemoryFirstSeen()
    gc = ArchiveGC(
        api=ctx.api, objects=objects, first_seen=lambda: first_seen, interval=3600,
        orphan_delay=7200,
    )  # fmt: skip
    api0 = api_calls.snapshot()
    report = await gc.pass_once()
    fig.gc_api = api_calls.snapshot() - api0
    fig.gc_objects = Counter(objects.calls)
    fig.gc_queries = report.queries
    await api.close()


def trimmed_rss() -> float:
    """RSS once freed memory is handed back (glibc only): how much of RSS is live."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def print_allocations() -> None:
    """Where the coordinator's live memory was allocated (``--tracemalloc``)."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    for key in ("filename", "lineno"):
        stats = snapshot.statistics(key)
        total = sum(st.size for st in stats)
        print(f"  live allocations by {key} (total {total / 2**20:.1f} MB):")
        for st in stats[:15]:
            print(f"    {st.size / 2**20:7.1f} MB {st.count:8d}  {st.traceback[0]}")


def print_figures(fig: Figures) -> None:
    n = fig.n
    print()
    print(f"scale benchmark: {n} workspaces, fake adapters, real API + PostgreSQL + kopf")
    print(f"  reconcile slots:              {fig.slots_limit}; {fig.setup}")
    print(f"  create requests:              {fig.created_s:8.1f} s  ({n / fig.created_s:.0f}/s)")
    print(
        f"  PENDING -> RUNNING ({fig.running}/{n}, {fig.errors} ERROR): {fig.converged_s:8.1f} s  "
        f"({fig.running / fig.converged_s:.1f} workspaces/s)"
    )
    print(f"  coordinator API requests per workspace to converge: {_per(fig.converge_api, n)}")
    print(f"  status-only events kopf passed over, per workspace: {fig.kopf_skipped / n:.2f}")
    if fig.slots_limit:
        print(f"  reconciles in flight at most:  {fig.slots_peak} of {fig.slots_limit} slots")
    print_cpu(fig)
    print(
        f"  idle window:                  {fig.idle_s:8.1f} s  (after {fig.settle_s:.0f} s "
        "for the passes begun during convergence to finish)"
    )
    print(f"  coordinator idle CPU:         {fig.idle_cpu_pct:8.2f} % of one core")
    print(
        f"  coordinator RSS:              {fig.rss_after:8.1f} MB  (before: "
        f"{fig.rss_before:.1f} MB, {fig.kb_per_workspace:.1f} KB per workspace)"
    )
    idle, passes = fig.idle_calls, fig.health_passes
    listings = idle["list_instances"] + idle["list_volumes"]
    if passes > 0:
        print(f"  HealthMonitor passes:         {passes:8.0f}")
        print(
            f"  engine calls per pass:        {listings / passes:8.2f}"
            "  (list_instances + list_volumes)"
        )
        print(f"  API requests per pass (idle requests / passes): {_per(fig.idle_api, passes)}")
    else:
        print("  HealthMonitor passes:         none in the idle window (interval too long?)")
    print(f"  API requests per idle second: {_per(fig.idle_api, fig.idle_s)}")
    if fig.informer:
        print(f"  coordinator informer:         {fig.informer}")
    per_method = ", ".join(f"{m}={c}" for m, c in sorted(idle.items())) or "none"
    print(f"  all adapter calls while idle: {per_method}")
    print(
        f"  TTL pass: API requests {_per(fig.ttl_api, 1)}; engine calls "
        f"{sum(fig.ttl_calls.values())} (while the coordinator idles alongside); the first "
        f"pass over new workspaces: {_per(fig.ttl_first_api, 1)}"
    )
    print("    (one-off passes on a client of their own, listing; the leader's read its informer)")
    print(
        f"  GC pass: API requests {_per(fig.gc_api, 1)}; object-store calls "
        f"{_per(fig.gc_objects, 1)}; first-seen queries {fig.gc_queries}; engine calls 0"
    )


def print_cpu(fig: Figures) -> None:
    """CPU per workspace by process during convergence, and the floor it implies."""
    cpu = fig.converge_cpu
    if not cpu:
        return
    n, cores = fig.n, os.cpu_count() or 1
    total = sum(cpu.values())
    print(f"  CPU during convergence ({fig.converged_s:.0f} s wall), per workspace:")
    for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"    {1000 * seconds / n:7.1f} ms  {seconds:7.1f} s  {role}")
    per = total / n
    print(
        f"    {1000 * per:7.1f} ms  {total:7.1f} s  total; floor on {cores} cores: "
        f"{total / cores:.0f} s for {n:,} ({10_000 * per / cores:.0f} s for 10,000 at this "
        f"cost; 120 s for 10,000 needs <= {1000 * 120 * cores / 10_000:.0f} ms per workspace)"
    )


def print_growth(figs: list[Figures]) -> None:
    print()
    print("growth (one row per size, same run):")
    head = (
        "| workspaces | create/s | all RUNNING s | RSS MB | KB/workspace | idle CPU % "
        "| HM pass: API, engine | TTL pass: API, engine | GC pass: API, S3, DB |"
    )
    print(head)
    print("|---" * 9 + "|")
    for f in figs:
        passes = max(f.health_passes, 1)
        hm_api = sum(f.idle_api.values()) / passes
        hm_engine = (f.idle_calls["list_instances"] + f.idle_calls["list_volumes"]) / passes
        print(
            f"| {f.n:,} | {f.n / f.created_s:.0f} | {f.converged_s:.1f} | {f.rss_after:.0f} "
            f"| {f.kb_per_workspace:.0f} | {f.idle_cpu_pct:.2f} | {hm_api:.1f}, {hm_engine:.1f} "
            f"| {sum(f.ttl_api.values())}, {sum(f.ttl_calls.values())} "
            f"| {sum(f.gc_api.values())}, {sum(f.gc_objects.values())}, {f.gc_queries} |"
        )


def _figures_json(fig: Figures) -> str:
    data = {
        k: {str(key): n for key, n in v.items()} if isinstance(v, Counter) else v
        for k, v in vars(fig).items()
    }
    return json.dumps(data)


def _figures_of(line: str) -> Figures:
    data = json.loads(line)
    for key, value in data.items():
        if isinstance(value, dict):
            data[key] = Counter(value)
    return Figures(**data)


def growth(args: argparse.Namespace, argv: list[str]) -> None:
    """Each size in a process of its own, so one size's memory is not the next one's
    starting point; the table at the end."""
    figs = []
    for n in args.workspaces:
        cmd = [sys.executable, __file__, *argv, "--workspaces", str(n), "--json-out"]
        with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
            subprocess.run([*cmd, out.name], check=True)
            figs.append(_figures_of(out.read()))
    print_growth(figs)


async def bench(args: argparse.Namespace) -> Figures:
    fig = await measure(args, args.workspaces[0])
    print_figures(fig)
    return fig


def main() -> None:
    from codehub.operator.settings import Settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workspaces",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[2000],
        help="sizes, comma-separated (each on a fresh server and database)",
    )
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--idle", type=float, default=30.0, help="idle measurement window (s)")
    # The product's intervals (docs/settings.md), so the idle figure is the product's.
    p.add_argument("--health-interval", type=float, default=Settings().health_monitor_interval)
    p.add_argument("--reconciler-interval", type=float, default=Settings().reconciler_interval)
    p.add_argument("--max-wait", type=float, default=1800.0)
    p.add_argument(
        "--finalizer-on-create",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the API server puts the operator's finalizer on at create (kopf skips a PATCH)",
    )
    p.add_argument(
        "--reconcile-concurrency",
        type=int,
        default=Settings().reconcile_concurrency,
        help="the coordinator's CODEHUB_RECONCILE_CONCURRENCY (a huge value: unbounded)",
    )
    p.add_argument("--json-out", default="", help=argparse.SUPPRESS)
    p.add_argument(
        "--tracemalloc", action="store_true", help="print where live memory was allocated (slow)"
    )
    args = p.parse_args()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(1)
    if len(args.workspaces) > 1:
        rest = sys.argv[1:]
        at = rest.index("--workspaces") if "--workspaces" in rest else -1
        growth(args, rest[:at] + rest[at + 2 :] if at >= 0 else rest)
        return
    import logging
    import signal

    # SIGTERM unwinds like Ctrl-C, so the server subprocess and the database are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    fig = asyncio.run(bench(args))
    if args.json_out:
        Path(args.json_out).write_text(_figures_json(fig))


if __name__ == "__main__":
    main()
