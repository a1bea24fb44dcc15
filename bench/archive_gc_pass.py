#!/usr/bin/env python3
"""Archive GC pass cost at 10,000 and 100,000 objects (docs/archive-gc.md).

The bucket is the in-memory paging fake (adapters/fake_object_store.py), the first-seen
times are in a throwaway database of the real PostgreSQL (``scripts/dev-services up``),
and the workspaces come from an in-memory paged API. 1,000 workspaces each own the same
share of the objects: archive ``op{k}/home.tar.gz`` plus ``.meta`` for every k, the
newest one protected, so 1 object in 5 (at 10 per workspace) or in 50 is protected.

Three passes are measured on one bucket: *mark* (every orphan seen for the first time),
*wait* (nothing due yet) and *delete* (after the delay: all orphans deleted in batches).
Each reports wall time, peak memory growth (tracemalloc, in a second identical run so
tracing does not slow the timed one), database queries and object-store calls, and the
ratio to a baseline measured in the same run: a bare streamed listing of the same
objects. A full in-memory list (``ObjectStore.list``) is shown too, to compare memory.
Prints a table; asserts nothing.

    .venv/bin/python bench/archive_gc_pass.py [--counts 10000 100000] [--workspaces 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from _common import service_env

from codehub.adapters.fake_object_store import MemoryObjectStore
from codehub.operator.archive_gc import ArchiveGC
from codehub.operator.archive_gc_store import FirstSeenStore
from codehub.operator.clock import FakeClock

DELAY = 7200.0


class PagedApi:
    """Workspaces in pages of 500, as the API serves them."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.requests = 0

    async def request(self, method: str, path: str, *, params: dict[str, Any]) -> Any:
        self.requests += 1
        start = int(params.get("continue") or 0)
        end = start + int(params["limit"])
        meta = {"continue": str(end)} if end < len(self.items) else {}
        return {"items": self.items[start:end], "metadata": meta}


def fixture(objects: int, workspaces: int) -> tuple[MemoryObjectStore, PagedApi]:
    per_ws = max(objects // (2 * workspaces), 1)
    bucket = MemoryObjectStore()
    items = []
    for w in range(workspaces):
        uid = f"{w:08x}-{uuid.UUID(int=w).hex[:24]}"
        for k in range(per_ws):
            key = f"archives/{uid}/op{k:05d}/home.tar.gz"
            bucket.put(key, 1_000_000)
            bucket.put(f"{key}.meta", 71)
        newest = f"archives/{uid}/op{per_ws - 1:05d}/home.tar.gz"
        items.append({"metadata": {"uid": uid}, "status": {"archive_key": newest}})
    return bucket, PagedApi(items)


@dataclass
class Row:
    name: str
    seconds: float = 0.0
    peak_bytes: int = 0
    queries: int = 0
    calls: int = 0
    detail: str = ""


async def measure(fn: Callable[[], Awaitable[tuple[int, int, str]]], traced: bool) -> Row:
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    queries, calls, detail = await fn()
    row = Row("", time.perf_counter() - start, 0, queries, calls, detail)
    if traced:
        row.peak_bytes = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return row


async def one_run(url: str, objects: int, workspaces: int, traced: bool) -> list[Row]:
    """Long because it is the benchmark's script: set up, then five measured steps."""
    bucket, api = fixture(objects, workspaces)
    async with FirstSeenStore(url) as store:
        await store.forget_after("")
    clock = FakeClock()
    gc = ArchiveGC(
        api=api, objects=bucket, first_seen=url, interval=3600, orphan_delay=DELAY, clock=clock
    )

    async def bare_listing() -> tuple[int, int, str]:
        before = sum(bucket.calls.values())
        n = 0
        async for page in bucket.iter_objects("archives/"):
            n += len(page)
        return 0, sum(bucket.calls.values()) - before, f"{n} objects"

    async def full_list() -> tuple[int, int, str]:
        before = sum(bucket.calls.values())
        listed = await bucket.list("archives/")
        return 0, sum(bucket.calls.values()) - before, f"{len(listed)} objects held"

    def gc_pass() -> Callable[[], Awaitable[tuple[int, int, str]]]:
        async def run() -> tuple[int, int, str]:
            before = sum(bucket.calls.values())
            r = await gc.pass_once()
            assert r.skipped is None, r.skipped
            detail = f"marked {r.marked}, waiting {r.waiting}, deleted {r.deleted}"
            return r.queries, sum(bucket.calls.values()) - before, detail

        return run

    await bare_listing()  # warm-up: the fake sorts its keys on the first listing
    rows = []
    for name, fn in (
        ("baseline: streamed listing", bare_listing),
        ("full list in memory", full_list),
        ("GC pass 1: mark", gc_pass()),
        ("GC pass 2: wait", gc_pass()),
    ):
        row = await measure(fn, traced)
        row.name = name
        rows.append(row)
    clock.advance(DELAY)
    row = await measure(gc_pass(), traced)
    row.name = "GC pass 3: delete"
    rows.append(row)
    return rows


def report(objects: int, timed: list[Row], traced: list[Row]) -> None:
    base_t, base_m = timed[0].seconds, max(traced[0].peak_bytes, 1)
    print(f"\n{objects} objects")
    print(
        f"{'step':28} {'seconds':>8} {'x base':>7} {'peak MiB':>9} {'x base':>7} "
        f"{'queries':>8} {'S3 calls':>8}  detail"
    )
    for t, m in zip(timed, traced, strict=True):
        print(
            f"{t.name:28} {t.seconds:8.3f} {t.seconds / base_t:7.1f} "
            f"{m.peak_bytes / 2**20:9.2f} {m.peak_bytes / base_m:7.1f} "
            f"{t.queries:8d} {t.calls:8d}  {t.detail}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workspaces", type=int, default=1000)
    args = parser.parse_args()
    admin = service_env()["CODEHUB_DATABASE_URL"]
    name = f"bench_gc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rpartition('/')[0]}/{name}"
    try:
        for objects in args.counts:
            timed = await one_run(url, objects, args.workspaces, traced=False)
            traced = await one_run(url, objects, args.workspaces, traced=True)
            report(objects, timed, traced)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
