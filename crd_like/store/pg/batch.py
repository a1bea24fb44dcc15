"""A batch of compare-and-swap updates as one statement (group commit,
docs/adr/0007-api-write-path-performance.md).

The batch goes out as **one** prepared statement whose one parameter is a JSON array,
one element per update: one ``send()``, one round trip, one plan, one NOTIFY. A pipeline of
one statement per update cost a socket wait, a ``send()`` and a result to process per
update in this process, and a message to parse per update in the backend.

What the statement does, in order, all in its one implicit transaction:

1. locks the rows that still hold the expected revision, ``FOR UPDATE SKIP LOCKED``: a
   row another transaction holds counts as changed (that update goes the locked way)
   rather than waiting while this statement may already be queued for the counter;
   rows are locked before the counter, the lock order of every other write. One
   primary-key probe per update (a LATERAL subquery): as a join, the planner guessed
   100 updates for the JSON array and hashed them against a scan of the whole table,
   O(N) per batch;
2. of several updates of one row with the same expected revision, keeps the first (in
   arrival order): the later ones would have failed their swap after it, as they did
   one statement after another;
3. allocates one revision per update that holds its lock (none when no row did), in
   arrival order, then writes the rows, the log entries (``prev_body`` read in SQL from
   the statement's snapshot, i.e. the row as locked) and one NOTIFY with the highest
   revision (the listeners only advance to the newest one).

Returns, per update in arrival order, its new revision or None (the row changed, or is
locked by someone else: do it the locked way).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from codehub.crd_like.store.pg.schema import NOTIFY_CHANNEL

#: The keys of each update's parameters (as ``statements.write_params`` builds them) that the
#: statement reads, in the order of each element of the batch's JSON array.
_FIELDS = ("kind", "ns", "name", "expected", "gen", "ds", "os", "op")

BATCH_SQL = (
    'WITH i AS (SELECT (e.v->>0) COLLATE "C" AS kind, (e.v->>1) COLLATE "C" AS ns,'
    ' (e.v->>2) COLLATE "C" AS name, (e.v->>3)::bigint AS expected,'
    " (e.v->>4)::bigint AS gen, e.v->>5 AS ds, e.v->>6 AS os, e.v->>7 AS op,"
    " (e.v->>8)::timestamptz AS dt, e.v->9 AS body, e.i"
    " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(v, i)),"
    " x AS (SELECT DISTINCT o.* FROM i CROSS JOIN LATERAL (SELECT o.kind, o.namespace,"
    " o.name, o.resource_version FROM objects o WHERE o.kind = i.kind"
    " AND o.namespace = i.ns AND o.name = i.name AND o.resource_version = i.expected"
    " FOR UPDATE SKIP LOCKED) o),"
    " k AS (SELECT DISTINCT ON (i.kind, i.ns, i.name) i.* FROM i JOIN x"
    " ON x.kind = i.kind AND x.namespace = i.ns AND x.name = i.name"
    " AND x.resource_version = i.expected ORDER BY i.kind, i.ns, i.name, i.i),"
    " c AS (SELECT count(*) AS n FROM k),"
    " r AS (UPDATE revision_counter SET rev = rev + c.n FROM c WHERE id = 1 AND c.n > 0"
    " RETURNING rev - c.n AS base),"
    " v AS (SELECT k.*, r.base + row_number() OVER (ORDER BY k.i) AS rev FROM k, r),"
    " d AS (SELECT v.*, jsonb_set(v.body, '{metadata,resourceVersion}',"
    " to_jsonb(v.rev::text)) AS doc FROM v),"
    " o AS (UPDATE objects SET resource_version = d.rev, generation = d.gen,"
    " desired_state = d.ds, observed_status = d.os, operation = d.op,"
    " deletion_timestamp = d.dt, body = d.doc FROM d"
    " WHERE objects.kind = d.kind AND objects.namespace = d.ns AND objects.name = d.name),"
    " l AS (INSERT INTO event_log (revision, kind, namespace, name, type, body, prev_body)"
    " SELECT d.rev, d.kind, d.ns, d.name, 'MODIFIED', d.doc, p.body FROM d JOIN objects p"
    " ON p.kind = d.kind AND p.namespace = d.ns AND p.name = d.name),"
    f" n AS (SELECT pg_notify('{NOTIFY_CHANNEL}', max(d.rev)::text) FROM d"
    " HAVING count(*) > 0)"
    " SELECT d.i, d.rev FROM d, n"
).encode()


def batch_param(batch: Sequence[dict[str, Any]]) -> str:
    """The batch as the statement's one parameter: a JSON array with one array per
    update, its columns then its body. The bodies are JSON text already, so they go in
    as they are: no Python-level adaptation per value (ten array parameters cost ~3 %
    of the server's CPU per PATCH in psycopg's dumpers), and PostgreSQL parses each
    body once, as it parsed the text it was cast from before."""
    parts = []
    for p in batch:
        dt = p["dt"]
        head = [*(p[key] for key in _FIELDS), None if dt is None else dt.isoformat()]
        parts.append(f"{json.dumps(head)[:-1]},{p['body']}]")
    return f"[{','.join(parts)}]"


def revisions(batch_size: int, rows: Sequence[tuple[int, int]]) -> list[int | None]:
    """Each update's revision (in arrival order) from the statement's ``(i, rev)`` rows."""
    out: list[int | None] = [None] * batch_size
    for i, rev in rows:
        out[int(i) - 1] = int(rev)
    return out


async def swap_batch(
    conn: psycopg.AsyncConnection[Any], batch: Sequence[dict[str, Any]]
) -> list[int | None]:
    """Run the batch's statement on ``conn`` (in autocommit: its own transaction)."""
    cur = await conn.execute(BATCH_SQL, (batch_param(batch),), prepare=True)
    return revisions(len(batch), await cur.fetchall())
