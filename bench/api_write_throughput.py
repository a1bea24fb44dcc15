"""API merge-patch throughput against raw PostgreSQL doing the same kine-style write.

Starts the API server as a subprocess (HTTPS, as in production) on a throwaway database
of the PostgreSQL named by CODEHUB_DATABASE_URL (``eval "$(scripts/dev-services up)"``),
then measures, in one run on one server:

1. raw: N writers, each on its own psycopg connection, doing the kine write the store
   does (revision counter, object row update and event log insert in one transaction,
   one statement, so one round trip) on copies of the server's tables (so the server
   does not spend CPU following the raw writes);
2. API: N writers sending merge PATCHes over HTTPS keep-alive to N objects;
3. one writer sending PATCHes one after another: p50 and p99 of the request.

``--servers N`` runs N API server processes on the one database (the API is stateless)
and spreads the writers over them; CPU per PATCH is then the sum over the servers.

It prints both throughputs, their ratio and the goals (docs/adr/0007). Nothing is
asserted; the machine may be shared, so compare ratios of one run and repeat it.

    .venv/bin/python bench/api_write_throughput.py --writers 8 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import admin_database_url, cpu_seconds
from watch_latency import NS_PATH, Server, percentile

#: The store's write, minus the server: counter, row, log entry in one statement, on
#: copies of the store's tables (same columns, indexes and constraints, same database):
#: on the real tables the API server would read back and fan out every raw write (its
#: hub and the proxy's endpoint watch), taking CPU from PostgreSQL during the raw phase.
RAW_TABLES = (
    "CREATE TABLE raw_counter (LIKE revision_counter INCLUDING ALL);"
    " INSERT INTO raw_counter SELECT * FROM revision_counter;"
    " CREATE TABLE raw_objects (LIKE objects INCLUDING ALL);"
    " INSERT INTO raw_objects SELECT * FROM objects;"
    " CREATE TABLE raw_log (LIKE event_log INCLUDING ALL)"
)
RAW_WRITE = (
    "WITH r AS (UPDATE raw_counter SET rev = rev + 1 WHERE id = 1 RETURNING rev),"
    " b AS (SELECT rev, jsonb_set(%(body)s::jsonb, '{metadata,resourceVersion}',"
    " to_jsonb(rev::text)) AS body FROM r),"
    " o AS (UPDATE raw_objects SET resource_version = b.rev, body = b.body FROM b"
    " WHERE kind = 'workspaces' AND namespace = 'bench' AND name = %(name)s),"
    " l AS (INSERT INTO raw_log (revision, kind, namespace, name, type, body, prev_body)"
    " SELECT b.rev, 'workspaces', 'bench', %(name)s, 'MODIFIED', b.body, %(prev)s FROM b)"
    " SELECT b.rev FROM b"
)


async def raw_writer(url: str, name: str, body: dict[str, object], until: float) -> int:
    done = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.perf_counter() < until:
            body["spec"]["memo"] = str(done)  # type: ignore[index]
            await conn.execute(RAW_WRITE, {"body": Jsonb(body), "name": name, "prev": Jsonb(body)})
            done += 1
    return done


async def raw_phase(server: Server, bodies: list[dict[str, object]], seconds: float) -> float:
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(raw_writer(server.url_db, f"w{i}", b, until) for i, b in enumerate(bodies))
    )
    return sum(counts) / (time.perf_counter() - started)


async def api_writer(
    session: aiohttp.ClientSession,
    server: Server,
    name: str,
    until: float,
    latencies: list[float],
) -> int:
    done = 0
    ctx = server.ssl()  # one per writer: several servers have several certificates
    headers = {"Content-Type": "application/merge-patch+json"}
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        async with session.patch(
            f"{server.url}{NS_PATH}/{name}",
            data=json.dumps({"spec": {"memo": str(done)}}),
            headers=headers,
            ssl=ctx,
        ) as r:
            await r.read()
            assert r.status == 200, r.status
        latencies.append((time.perf_counter() - t0) * 1000)
        done += 1
    return done


def cpu_of(servers: list[Server]) -> float:
    return sum(cpu_seconds(s.proc.pid) for s in servers if s.proc is not None)


async def run(args: argparse.Namespace, servers: list[Server]) -> None:
    server = servers[0]
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        bodies = []
        for w in range(args.writers):
            body = {"metadata": {"name": f"w{w}"}, "spec": {"desired_state": "PENDING"}}
            async with session.post(f"{server.url}{NS_PATH}", json=body, ssl=server.ssl()) as r:
                assert r.status == 201, await r.text()
                bodies.append(await r.json())
        async with await psycopg.AsyncConnection.connect(server.url_db, autocommit=True) as c:
            await c.execute(RAW_TABLES)
        # Warm both paths (connections, caches) before timing.
        await api_writer(session, server, "w0", time.perf_counter() + 0.5, [])
        await raw_phase(server, bodies, 0.3)

        results: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            raw = await raw_phase(server, bodies, args.seconds)
            until = time.perf_counter() + args.seconds
            started = time.perf_counter()
            cpu0, own0 = cpu_of(servers), time.process_time()
            counts = await asyncio.gather(
                *(
                    api_writer(session, servers[i % len(servers)], f"w{i}", until, [])
                    for i in range(args.writers)
                )
            )
            api = sum(counts) / (time.perf_counter() - started)
            cpu = (cpu_of(servers) - cpu0) / sum(counts) * 1000
            own = (time.process_time() - own0) / sum(counts) * 1000
            results.append((raw, api))
            print(
                f"{args.writers} writers, {len(servers)} server(s): "
                f"raw PostgreSQL {raw:7.0f} writes/s | "
                f"API merge PATCH over HTTPS {api:6.0f} writes/s | ratio {api / raw:.3f} | "
                f"CPU per PATCH: server {cpu:.2f} ms, this client {own:.2f} ms"
            )
        single: list[float] = []
        await api_writer(session, server, "w0", time.perf_counter() + args.seconds, single)
        p50, p99 = percentile(single, 0.5), percentile(single, 0.99)
        ratio = statistics.median(api / raw for raw, api in results)
        print(f"single writer PATCH: {len(single)} requests, p50 {p50:.2f} ms  p99 {p99:.2f} ms")
        print(
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
            f"goals: ratio >= 0.25 (median of rounds {ratio:.3f}: "
            f"{'met' if ratio >= 0.25 else 'NOT met'}); single-writer p50 <= 5 ms "
            f"({'met' if p50 <= 5 else 'NOT met'})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2, help="raw/API pairs")
    parser.add_argument(
        "--servers",
        type=int,
        default=1,
        help="API server processes on the one database, writers spread over them",
    )
    args = parser.parse_args()
    admin_url = admin_database_url()
    if admin_url is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="codehub-bench-") as tmp:
        server = Server(admin_url, Path(tmp))
        servers = [server]
        try:
            server.start()
            asyncio.run(server.wait_ready())
            for i in range(1, args.servers):
                servers.append(server.replica(Path(tmp) / f"replica{i}"))
                servers[-1].start()
                asyncio.run(servers[-1].wait_ready())
            asyncio.run(run(args, servers))
        finally:
            for s in reversed(servers):
                s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
