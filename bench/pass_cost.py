#!/usr/bin/env python3
"""What one leader pass costs over N settled workspaces (ADR 0011), without converging
them first: N RUNNING workspaces are written straight into a fresh database behind the
real API server, the fake engine holds a running container and a volume for each, and
each pass runs once, counted: the HealthMonitor, the safety net, the TTL Manager (its
first pass writes every new workspace's idle_action, so the second is the steady one),
first listing afresh as one-off passes do, then reading a synced workspace cache as the
leader's passes do (docs/coordinator.md, "The workspace cache"); and the Archive GC over
a bucket with one archive per workspace.

Prints, per pass: API requests by kind, engine calls, object-store calls and first-seen
queries (GC), wall time and this process's CPU time; then the idle CPU those passes imply
at the default intervals, and RSS. Services from ``scripts/dev-services up``.

    .venv/bin/python bench/pass_cost.py --workspaces 1000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any, cast

from _common import insert_running_rows, service_env
from scale import CountingApi, CountingFakes, cpu_seconds, local_server, rss_mb, trimmed_rss


async def seed(database_url: str, n: int, fakes: CountingFakes) -> None:
    import psycopg

    from codehub.adapters.interfaces import InstanceSpec
    from codehub.vocabulary.timestamps import now_rfc3339

    now = now_rfc3339()
    rows = []
    for i in range(n):
        ns, name, uid = f"u{i % 20:03d}", f"ws-{i:06d}", str(uuid.uuid4())
        body: dict[str, Any] = {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {
                "name": name, "namespace": ns, "uid": uid, "resourceVersion": "1",
                "generation": 1, "creationTimestamp": now,
                "finalizers": ["codehub.io/cleanup"],
            },
            "spec": {"desired_state": "RUNNING", "image_ref": "bench:latest"},
            "status": {
                "observed_status": "RUNNING", "display": "RUNNING", "operation": "NONE",
                "observed_at": now,
            },
        }  # fmt: skip
        await fakes.storage.provision(uid)
        await fakes.instances.start(InstanceSpec(uid, "bench:latest"))
        body["status"]["endpoint"] = f"http://127.0.0.1:{fakes.instances.containers[uid].port}"
        rows.append((ns, name, uid, ns, json.dumps(body)))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await insert_running_rows(conn, rows)
        await conn.execute("UPDATE revision_counter SET rev = 1")


async def timed(name: str, api_calls: CountingApi, fakes: CountingFakes, fn: Any) -> Any:
    api0, calls0 = api_calls.snapshot(), fakes.snapshot()
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    result = await fn()
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
    api = api_calls.snapshot() - api0
    calls = fakes.snapshot() - calls0
    print(
        f"  {name:22s} {wall:6.2f} s wall, {cpu:6.2f} s CPU; API {sum(api.values())} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(api.items()))}); engine "
        f"{sum(calls.values())} ({', '.join(f'{k}={v}' for k, v in sorted(calls.items()))})"
    )
    return result, cpu


class _Gate:
    """Counts what a pass hands to the reconcile gate."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, str]] = []

    def add(self, ns: str, name: str) -> None:
        self.queued.append((ns, name))

    def nudge(self, ns: str, name: str) -> bool:
        self.queued.append((ns, name))
        return True


async def passes(ctx: Any, api_calls: CountingApi, fakes: CountingFakes, source: Any) -> float:
    """The HealthMonitor (twice: the first may write), safety-net and TTL passes reading
    ``source`` (None: each lists afresh); answers the idle CPU they imply (% of a core)."""
    from codehub.operator.health_monitor import HealthMonitor
    from codehub.operator.safety_net import SafetyNet
    from codehub.operator.ttl_manager import TtlManager

    monitor = HealthMonitor(ctx, None, source)
    report, hm_cpu = await timed("HealthMonitor pass", api_calls, fakes, monitor.pass_once)
    print(f"    written {report.written}, refreshed {report.refreshed}, unwritten "
          f"{report.unwritten}, failures {report.failures}")  # fmt: skip
    report, hm_cpu = await timed("HealthMonitor pass 2", api_calls, fakes, monitor.pass_once)
    gate = _Gate()
    net = SafetyNet(ctx, cast(Any, gate), source)
    _, sn_cpu = await timed("safety net pass", api_calls, fakes, net.pass_once)
    print(f"    unsettled queued: {len(gate.queued)}")
    ttl = TtlManager(ctx, source=source)
    await timed("TTL pass (first)", api_calls, fakes, ttl.pass_once)
    _, ttl_cpu = await timed("TTL pass", api_calls, fakes, ttl.pass_once)
    s = ctx.settings
    idle: float = 100 * (
        hm_cpu / s.health_monitor_interval
        + sn_cpu / s.reconciler_interval
        + ttl_cpu / s.ttl_manager_interval
    )
    print(
        "  implied idle CPU at the default intervals (HealthMonitor "
        f"{s.health_monitor_interval:g} s, safety net {s.reconciler_interval:g} s, "
        f"TTL {s.ttl_manager_interval:g} s): {idle:.1f} % of a core"
    )
    return idle


async def gc_pass(api: Any, api_calls: CountingApi, fakes: CountingFakes, n: int) -> None:
    """The Archive GC over a bucket with one unprotected archive per workspace."""
    from codehub.adapters.fake_object_store import MemoryObjectStore
    from codehub.operator.archive_gc import ArchiveGC
    from codehub.operator.archive_gc_store import MemoryFirstSeen

    objects = MemoryObjectStore()
    for i in range(n):
        objects.put(f"archives/{uuid.UUID(int=i)}/op-{i}/home.tar.zst")
    first_seen = MemoryFirstSeen()
    gc = ArchiveGC(
        api=api, objects=objects, first_seen=lambda: first_seen, interval=3600,
        orphan_delay=7200,
    )  # fmt: skip
    gc_report, _ = await timed("Archive GC pass", api_calls, fakes, gc.pass_once)
    print(f"    object-store calls {dict(Counter(objects.calls))}, first-seen queries "
          f"{gc_report.queries}, pages {gc_report.pages}")  # fmt: skip


async def measure(n: int, profile: bool = False) -> None:
    """The passes listing afresh (one-off passes, tests), then reading a synced workspace
    cache as the leader's do (``components.build_informer``), then the Archive GC."""
    from prometheus_client import CollectorRegistry

    from codehub.crd_like.client.api import ApiClient
    from codehub.operator.clock import SystemClock
    from codehub.operator.components import build_informer
    from codehub.operator.context import OperatorContext
    from codehub.operator.metrics import Metrics
    from codehub.operator.settings import Settings

    with local_server(service_env()) as server:
        fakes = CountingFakes()
        await seed(server.database_url, n, fakes)
        settings = Settings(
            database_url=server.database_url, server=server.url,
            token=server.tokens["operator"], ca_file=server.ca_file,
            default_standby_ttl=7 * 86400,
        )  # fmt: skip
        api_calls = CountingApi()
        api = api_calls.wrap(ApiClient(settings.server, settings.token, ca_file=server.ca_file))
        ctx = OperatorContext(
            settings=settings, api=api, instances=fakes.instances, storage=fakes.storage,
            clock=SystemClock(), metrics=Metrics(CollectorRegistry()),
        )  # fmt: skip
        print(f"\n{n:,} settled RUNNING workspaces (RSS {rss_mb():.0f} MB before the passes)")
        print(" each pass listing afresh (no cache):")
        await passes(ctx, api_calls, fakes, None)
        informer = build_informer(ctx)
        filling = asyncio.create_task(informer.run())
        await timed("cache filled (one List)", api_calls, fakes, informer.wait_synced)
        print(" each pass reading the leader's cache, as the coordinator does:")
        await passes(ctx, api_calls, fakes, informer)
        if profile:
            await profile_pass(ctx, informer)
        filling.cancel()
        await gc_pass(api, api_calls, fakes, n)
        print(f"  RSS after the passes {rss_mb():.0f} MB; after gc and malloc_trim "
              f"{trimmed_rss():.0f} MB")  # fmt: skip
        await api.close()


async def profile_pass(ctx: Any, source: Any) -> None:
    """cProfile of a steady HealthMonitor pass over the cache (``--profile``)."""
    import cProfile
    import pstats

    from codehub.operator.health_monitor import HealthMonitor

    monitor = HealthMonitor(ctx, None, source)
    await monitor.pass_once()
    prof = cProfile.Profile()
    prof.enable()
    await monitor.pass_once()
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workspaces", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 10000]
    )
    p.add_argument(
        "--profile", action="store_true", help="cProfile a steady HealthMonitor pass over the cache"
    )
    args = p.parse_args()
    for n in args.workspaces:
        asyncio.run(measure(n, args.profile))


if __name__ == "__main__":
    main()
