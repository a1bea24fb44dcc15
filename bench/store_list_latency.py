#!/usr/bin/env python3
"""List latency of PostgresStore with many workspaces (issue 4: 10,000 workspaces).

Brings up the dev services (``scripts/dev-services up``), creates a throwaway database,
inserts N workspaces through the store (so every row has its log entry), then times
full lists and paginated lists (limit=500), both fresh and continued after concurrent
writes (the "as of the first page's revision" path). Prints p50/p99; asserts nothing.

    .venv/bin/python bench/store_list_latency.py [--count 10000] [--reps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from _common import service_env

from codehub.crd_like.store.postgres import PostgresStore


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(label: str, samples: list[float]) -> None:
    if not samples:
        print(f"{label:<44} n=0 (fewer objects than a page)")
        return
    ms = [s * 1000 for s in samples]
    print(
        f"{label:<44} n={len(ms):<4} p50={pct(ms, 50):8.2f} ms  p99={pct(ms, 99):8.2f} ms"
        f"  mean={statistics.fmean(ms):8.2f} ms"
    )


def workspace(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": f"ws-{i:05d}",
            "namespace": f"user-{i % 100:03d}",
            "labels": {"team": f"t{i % 10}"},
        },
        "spec": {
            "desired_state": ["PENDING", "STANDBY", "RUNNING"][i % 3],
            "image_ref": "codehub/workspace-test:local",
            "standby_ttl_seconds": 300,
            "archive_ttl_seconds": 86400,
            "display_name": f"Workspace {i}",
        },
        "status": {"observed_status": "PENDING", "operation": "NONE", "display": "PENDING"},
    }


async def paginate(store: PostgresStore, limit: int) -> tuple[int, list[float]]:
    pages: list[float] = []
    token: str | None = None
    count = 0
    while True:
        t0 = time.perf_counter()
        res = await store.list("workspaces", limit=limit, continue_token=token)
        pages.append(time.perf_counter() - t0)
        count += len(res.items)
        token = res.continue_token
        if not token:
            return count, pages


async def bench(url: str, count: int, reps: int) -> None:
    store = await PostgresStore.open(url, max_size=8)
    try:
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with sem:
                await store.create("workspaces", workspace(i))

        await asyncio.gather(*(one(i) for i in range(count)))
        load = time.perf_counter() - t0
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("ANALYZE")  # steady state: autovacuum would do this soon
        print(
            f"inserted {count} workspaces through the store in {load:.1f} s "
            f"({count / load:.0f} creates/s, 8 concurrent)"
        )

        full: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res = await store.list("workspaces")
            full.append(time.perf_counter() - t0)
            assert len(res.items) == count
        report("full list (all items)", full)

        raw: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res_raw = await store.list_raw("workspaces")
            raw.append(time.perf_counter() - t0)
            assert len(res_raw.items) == count
        report("full list_raw (JSON texts, no decode)", raw)

        ns_list: list[float] = []
        for r in range(reps):
            t0 = time.perf_counter()
            await store.list("workspaces", namespace=f"user-{r % 100:03d}")
            ns_list.append(time.perf_counter() - t0)
        report(f"namespaced list (~{count // 100} items)", ns_list)

        pages: list[float] = []
        walks: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            seen, per_page = await paginate(store, 500)
            walks.append(time.perf_counter() - t0)
            pages += per_page
            assert seen == count
        report("paginated limit=500: one page", pages)
        report("paginated limit=500: whole traversal", walks)

        # Continued pages served "as of" the first page's revision while writes go on.
        cont_pages: list[float] = []
        for r in range(max(1, reps // 4)):
            first = await store.list("workspaces", limit=500)
            for i in range(200):
                j = (r * 200 + i) % count

                def mutate(o: dict[str, Any], v: int = i) -> dict[str, Any]:
                    o["spec"]["memo"] = f"m{v}"
                    return o

                await store.update("workspaces", f"user-{j % 100:03d}", f"ws-{j:05d}", mutate)
            token = first.continue_token
            n = len(first.items)
            while token:
                t0 = time.perf_counter()
                res = await store.list("workspaces", limit=500, continue_token=token)
                cont_pages.append(time.perf_counter() - t0)
                n += len(res.items)
                token = res.continue_token
            assert n == count
        report("continued page after 200 writes (as-of rev)", cont_pages)

        running: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            await store.list_by("workspaces", observed_status="RUNNING")
            running.append(time.perf_counter() - t0)
        report("typed-column query (observed RUNNING)", running)
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    admin = service_env()["CODEHUB_DATABASE_URL"]
    name = f"bench_list_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        asyncio.run(bench(admin.rpartition("/")[0] + "/" + name, args.count, args.reps))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
