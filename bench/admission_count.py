#!/usr/bin/env python3
"""Running-limit admission with N workspaces already running (docs/limits.md, ADR 0011).

Creates through the real PostgreSQL store, each asking to run, so each takes the global
admission lock, against a table that already holds N running workspaces. Two checks
alternate in rounds, on the same database, in the same minutes:

- ``list``: the check before ADR 0011, listing every running workspace (per user, then
  globally) under the lock and comparing the lengths;
- ``count``: the check of ADR 0011's finding 1, a ``count(*)`` over the partial index
  under the lock (O(N): a scan of every running row globally), one round trip per count;
- ``counter``: ``running_limit_check`` decided in Python on the store's view (wrapped
  so the store cannot see its limits): two counter rows kept by a trigger (migration
  0003), both counts in one round trip under the lock, O(1); then the insert, and the
  commit;
- ``sql``: ``running_limit_check`` as it is: the store decides it inside the insert
  statement (migration 0006), one statement, no round trip under the lock.

Names are listed only on a refusal in the last three. Prints creates/s for each and the
ratios. Services from ``scripts/dev-services up``.

    .venv/bin/python bench/admission_count.py --running 10000 --creates 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from _common import insert_running_rows, service_env

Obj = dict[str, Any]


async def seed(database_url: str, n: int, namespaces: int) -> None:
    """N running workspaces, written straight into the objects table (fast), the same
    columns and body shape the store writes."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        rows = []
        for i in range(n):
            ns, name, uid = f"u{i % namespaces:03d}", f"seed-{i:06d}", str(uuid.uuid4())
            body = {
                "apiVersion": "codehub.io/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": "1"},
                "spec": {"desired_state": "RUNNING", "image_ref": "bench:latest"},
                "status": {"observed_status": "RUNNING", "operation": "NONE"},
            }
            rows.append((ns, name, uid, ns, json.dumps(body)))
        await insert_running_rows(conn, rows)
        await conn.execute("VACUUM ANALYZE objects")


def listing_check(max_per_user: int, max_global: int) -> Any:
    """The check before ADR 0011: every running name, per user and globally."""
    from codehub.crd_like.server.admission import LimitExceeded, asks_to_run
    from codehub.crd_like.store import RunningRef

    async def check(view: Any, old: Obj | None, new: Obj) -> None:
        if not asks_to_run(old, new):
            return
        meta = new.get("metadata") or {}
        me = RunningRef(meta.get("namespace") or "", meta.get("name") or "")
        mine = [r for r in await view.running_workspaces(me.namespace) if r != me]
        if len(mine) + 1 > max_per_user:
            raise LimitExceeded("per_user", len(mine), max_per_user, mine)
        everyone = [r for r in await view.running_workspaces() if r != me]
        if len(everyone) + 1 > max_global:
            raise LimitExceeded("global", len(everyone), max_global, everyone)

    return check


#: The running-candidate rule, as the ``count`` check's SQL spelled it.
_RULE = (
    "kind = 'workspaces' AND deletion_timestamp IS NULL AND (desired_state = 'RUNNING'"
    " OR observed_status = 'RUNNING' OR operation = 'STARTING')"
)


def counting_check(max_per_user: int, max_global: int) -> Any:
    """The check of ADR 0011's finding 1: lock, then ``count(*)`` per user and globally
    (each minus a probe of the object written), each its own round trip."""
    from codehub.crd_like.server.admission import asks_to_run
    from codehub.crd_like.store.pg.schema import ADMISSION_LOCK_KEY

    async def count(conn: Any, ns: str | None, name: str, me_ns: str) -> int:
        scope = " AND owner = %(owner)s" if ns is not None else ""
        query = (
            f"SELECT (SELECT count(*) FROM objects WHERE {_RULE}{scope}) - (SELECT count(*)"
            f" FROM objects WHERE {_RULE}{scope} AND namespace = %(ns)s AND name = %(name)s)"
        )
        cur = await conn.execute(query, {"owner": ns, "ns": me_ns, "name": name})
        row = await cur.fetchone()
        return int(row[0])

    async def check(view: Any, old: Obj | None, new: Obj) -> None:
        if not asks_to_run(old, new):
            return
        meta = new.get("metadata") or {}
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        conn = view._conn
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_KEY,))
        if await count(conn, ns, name, ns) + 1 > max_per_user:
            raise AssertionError("the bench's limits are never reached")
        if await count(conn, None, name, ns) + 1 > max_global:
            raise AssertionError("the bench's limits are never reached")

    return check


def opaque(check: Any) -> Any:
    """``check`` as a plain function: the store cannot ask it for its limits."""

    async def wrapped(view: Any, old: Obj | None, new: Obj) -> None:
        await check(view, old, new)

    return wrapped


async def creates_per_second(store: Any, admit: Any, tag: str, n: int, conc: int) -> float:
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        ns = f"u{i % 20:03d}"
        body = {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": f"{tag}-{i:06d}", "namespace": ns},
            "spec": {"desired_state": "RUNNING", "image_ref": "bench:latest"},
        }
        async with sem:
            await store.create("workspaces", body, admit=admit)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.monotonic() - t0)


async def bench(args: argparse.Namespace) -> None:
    import psycopg

    from codehub.crd_like.server.admission import running_limit_check
    from codehub.crd_like.store.postgres import PostgresStore, migrate

    admin_url = service_env()["CODEHUB_DATABASE_URL"]
    db = f"bench_adm_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{db}"')
    url = f"{admin_url.rpartition('/')[0]}/{db}"
    try:
        await migrate(url)
        await seed(url, args.running, 20)
        store = await PostgresStore.open(url, max_size=8)
        limits = (10**9, 10**9)
        checks = {
            "list": listing_check(*limits),
            "count": counting_check(*limits),
            "counter": opaque(running_limit_check(*limits)),
            "sql": running_limit_check(*limits),
        }
        rates: dict[str, list[float]] = {k: [] for k in checks}
        per_round = max(args.creates // args.rounds, 1)
        for r in range(args.rounds):
            for tag, check in checks.items():
                rate = await creates_per_second(
                    store, check, f"{tag}{r}", per_round, args.concurrency
                )
                rates[tag].append(rate)
        await store.close()
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print(f"admission with {args.running:,} running workspaces ({args.rounds} rounds alternating,")
    print(f"{per_round} creates each, {args.concurrency} concurrent); creates/s, median of rounds:")
    for tag, values in rates.items():
        print(f"  {tag:8s} {statistics.median(values):8.1f}   rounds: "
              + ", ".join(f"{v:.1f}" for v in values))  # fmt: skip
    median = {tag: statistics.median(values) for tag, values in rates.items()}
    print(f"  count / list: {median['count'] / median['list']:.2f}x")
    print(f"  counter / count: {median['counter'] / median['count']:.2f}x")
    print(f"  sql / counter: {median['sql'] / median['counter']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--running", type=int, default=10_000)
    p.add_argument("--creates", type=int, default=300, help="per check, over all rounds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
