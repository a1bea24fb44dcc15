"""The store's per-object statements stay O(1) however the plans were made (real
PostgreSQL; docs/adr/0011-ten-thousand-workspaces.md, session 5): a prepared statement's
generic plan made while the table was empty, then run with many rows, probes the primary
key -- it used to scan an index on ``kind`` alone, every workspace's entry per write --
and the batch statement probes the primary key per update instead of hashing the batch
against a scan of the whole table."""

from __future__ import annotations

import json
import uuid

import psycopg
from psycopg.types.json import Jsonb

from codehub.crd_like.store.pg import admission, batch, statements
from codehub.crd_like.store.postgres import migrate

NAMES = (
    *("kind", "ns", "name", "uid", "gen", "ds", "os", "op", "dt", "body", "type", "expected"),
    *("lock", "max_per_user", "max_global"),
)
TYPES = (
    "text,text,text,uuid,bigint,text,text,text,timestamptz,text,text,bigint,bigint,bigint,bigint"
)
STATEMENTS = {
    "exists": "SELECT 1 FROM objects WHERE kind = %(kind)s AND namespace = %(ns)s"
    " AND name = %(name)s",
    "locked_body": "SELECT body FROM objects WHERE kind = %(kind)s AND namespace = %(ns)s"
    " AND name = %(name)s FOR UPDATE",
    "counts": admission.COUNTS_SQL.decode().replace("%(owner)s", "%(ns)s"),
    "insert": statements.WRITE_SQL["insert"].decode(),
    "update": statements.WRITE_SQL["update"].decode(),
    "cas": statements.CAS_UPDATE_SQL.decode(),
    "delete": statements.WRITE_SQL["delete"].decode(),
    "guarded insert": statements.GUARDED_SQL["insert"].decode(),
    "guarded update": statements.GUARDED_SQL["update"].decode(),
}


def numbered(query: str) -> str:
    for i, name in enumerate(NAMES, 1):
        query = query.replace(f"%({name})s", f"${i}")
    return query


def body(ns: str, name: str) -> dict[str, object]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4())},
        "spec": {"desired_state": "RUNNING", "image_ref": "img"},
    }


def seed(conn: psycopg.Connection[object], n: int) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
            " owner, desired_state, body) VALUES ('workspaces', %s, %s, %s, 1, 1, %s,"
            " 'RUNNING', %s)",
            [
                (f"u{i % 20}", f"w{i}", str(uuid.uuid4()), f"u{i % 20}", Jsonb(body("x", "y")))
                for i in range(n)
            ],
        )


async def test_generic_plans_made_on_an_empty_table_probe_the_key(database_url: str) -> None:
    await migrate(database_url)
    args = (
        "('workspaces', 'u7', 'w7', gen_random_uuid(), 1, 'RUNNING', NULL, NULL, NULL,"
        f" '{json.dumps(body('u7', 'w7'))}', 'MODIFIED', 1, 1, 100000, 100000)"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        for key, query in STATEMENTS.items():
            conn.execute(f"PREPARE {key.replace(' ', '_')}({TYPES}) AS {numbered(query)}")
            conn.execute(f"EXPLAIN EXECUTE {key.replace(' ', '_')}{args}")  # the generic plan
        seed(conn, 3000)
        for key in STATEMENTS:
            explain = f"EXPLAIN EXECUTE {key.replace(' ', '_')}{args}"
            plan = "\n".join(str(r[0]) for r in conn.execute(explain))
            objects = [
                line for line in plan.splitlines() if "Scan" in line and " on objects" in line
            ]
            assert objects or "insert" in key, (key, plan)
            assert all("objects_pkey" in line for line in objects), (key, plan)


async def test_the_batch_statement_probes_the_key_per_update(database_url: str) -> None:
    await migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed(conn, 3000)
        conn.execute("ANALYZE objects")
        updates = []
        for i in range(8):
            b = body(f"u{i % 20}", f"w{i}")
            params = statements.write_params(
                "workspaces", f"u{i % 20}", f"w{i}", "MODIFIED", statements.encode(b), b, "update"
            )
            updates.append({**params, "expected": 1})
        cur = conn.execute(b"EXPLAIN " + batch.BATCH_SQL, (batch.batch_param(updates),))
        plan = "\n".join(str(r[0]) for r in cur)
    objects = [line for line in plan.splitlines() if "Scan" in line and " on objects" in line]
    assert len(objects) == 3, plan  # lock, update, previous body
    assert all("objects_pkey" in line for line in objects), plan


async def test_bodies_are_compressed_with_lz4_where_the_server_has_it(database_url: str) -> None:
    await migrate(database_url)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT 'lz4' = ANY (enumvals) FROM pg_settings"
            " WHERE name = 'default_toast_compression'"
        ).fetchone()
        columns = conn.execute(
            "SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute"
            " WHERE attname IN ('body', 'prev_body')"
            " AND attrelid IN ('objects'::regclass, 'event_log'::regclass) ORDER BY 1, 2"
        ).fetchall()
    has_lz4 = row is not None and bool(row[0])
    assert [c[:2] for c in columns] == [
        ("event_log", "body"),
        ("event_log", "prev_body"),
        ("objects", "body"),
    ]
    assert all((c[2] == "l") == has_lz4 for c in columns), columns


#: A read of the shape of the watch hub's and the lists' (crd_like/store/pg/watch.py,
#: reads.py): the head from the revision counter, the entries joined laterally.
HUB_READ = (
    "SELECT c.rev, c.compact_rev, e.revision, e.body::text, e.prev_body::text"
    " FROM revision_counter c LEFT JOIN LATERAL (SELECT revision, body, prev_body"
    " FROM event_log WHERE revision > %s AND revision <= c.rev ORDER BY revision LIMIT %s)"
    " e ON true"
)


async def test_reads_joining_the_revision_counter_are_not_compiled(database_url: str) -> None:
    """The counter is one row; never analyzed, it was planned as 1,770, so a read
    joining it was costed 1,770 times over, passed jit_above_cost, and each execution
    spent 40-90 ms compiling with LLVM. Migration 0007 gives it statistics."""
    await migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO event_log (revision, kind, namespace, name, type, body, prev_body)"
            " SELECT g, 'workspaces', 'u', 'w' || g, 'MODIFIED', %s, %s"
            " FROM generate_series(1, 30000) g",
            (Jsonb(body("u", "w")), Jsonb(body("u", "w"))),
        )
        conn.execute("UPDATE revision_counter SET rev = 30000")
        conn.execute("ANALYZE event_log")
        row = conn.execute("SELECT current_setting('jit_above_cost')::float").fetchone()
        assert row is not None
        jit_above = row[0]
        (plan,) = conn.execute(b"EXPLAIN (FORMAT JSON) " + HUB_READ.encode(), (0, 500)).fetchone()
    estimate = plan[0]["Plan"]
    assert estimate["Plans"][0]["Plan Rows"] == 1, estimate  # the counter
    assert estimate["Total Cost"] < jit_above, estimate
