"""The write statements of crd_like/store/pg/writes.py, and their parameters.

Each write is one statement: it allocates the revision (the single-row counter, locked
to commit), writes the object row, the log entry and the NOTIFY. Variants lock the
object row first and write only if it holds an expected revision (``cas``), or only if
the write fits in the running limits (``guarded``: the counter update's WHERE calls
migration 0006's ``running_admits``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from codehub.crd_like.store.interface import Obj
from codehub.crd_like.store.pg.admission import GUARD_SQL, Limits, guard_params
from codehub.crd_like.store.pg.schema import NOTIFY_CHANNEL, columns

Mode = Literal["insert", "update", "delete"]


ROW_SQL: dict[Mode, str] = {
    "insert": (
        "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
        " owner, desired_state, observed_status, operation, deletion_timestamp, body)"
        " SELECT %(kind)s, %(ns)s, %(name)s, %(uid)s, b.rev, %(gen)s, %(ns)s, %(ds)s,"
        " %(os)s, %(op)s, %(dt)s, b.body FROM b"
    ),
    "update": (
        "UPDATE objects SET resource_version = b.rev, generation = %(gen)s,"
        " desired_state = %(ds)s, observed_status = %(os)s, operation = %(op)s,"
        " deletion_timestamp = %(dt)s, body = b.body FROM b"
        " WHERE kind = %(kind)s AND namespace = %(ns)s AND name = %(name)s"
    ),
    "delete": (
        "DELETE FROM objects WHERE kind = %(kind)s AND namespace = %(ns)s AND name = %(name)s"
    ),
}


def write_query(mode: Mode, *, cas: bool = False, guarded: bool = False) -> bytes:
    """``cas``: the compare-and-swap form for a body known from this process's cache.
    The object row is locked first (as a read-modify-write does), and only if it still
    holds the expected revision; otherwise no revision is allocated and no row returns.
    (A batch of them is one statement of its own: ``batch.BATCH_SQL``.) ``guarded``:
    likewise only if the write fits in the running limits (``admission.GUARD_SQL``)."""
    prev = (
        "NULL::jsonb"
        if mode == "insert"
        else (
            "(SELECT body FROM objects WHERE kind = %(kind)s AND namespace = %(ns)s"
            " AND name = %(name)s)"
        )
    )
    lock, only_if = "", ""
    if cas:
        lock = (
            "WITH k AS (SELECT 1 FROM objects WHERE kind = %(kind)s AND namespace = %(ns)s"
            " AND name = %(name)s AND resource_version = %(expected)s FOR UPDATE),"
        )
        only_if = " AND EXISTS (SELECT 1 FROM k)"
    if guarded:
        only_if += f" AND {GUARD_SQL}"
    return (
        f"{lock or 'WITH'} r AS (UPDATE revision_counter SET rev = rev + 1 WHERE id = 1"
        f"{only_if} RETURNING rev),"
        " b AS (SELECT rev, jsonb_set(%(body)s::jsonb, '{metadata,resourceVersion}',"
        " to_jsonb(rev::text)) AS body FROM r),"
        f" o AS ({ROW_SQL[mode]}),"
        " l AS (INSERT INTO event_log (revision, kind, namespace, name, type, body, prev_body)"
        f" SELECT b.rev, %(kind)s, %(ns)s, %(name)s, %(type)s, b.body, {prev} FROM b),"
        f" n AS (SELECT pg_notify('{NOTIFY_CHANNEL}', b.rev::text) FROM b)"
        " SELECT b.rev FROM b, n"
    ).encode()


WRITE_SQL: dict[Mode, bytes] = {m: write_query(m) for m in ("insert", "update", "delete")}
CAS_UPDATE_SQL = write_query("update", cas=True)
GUARDED_SQL: dict[Mode, bytes] = {m: write_query(m, guarded=True) for m in ("insert", "update")}


def statement_for(
    mode: Mode, params: dict[str, Any], limits: Limits | None
) -> tuple[bytes, dict[str, Any]]:
    """The write statement and its parameters: the plain one, or, with ``limits``, the
    one whose revision update also decides admission (no row: refused)."""
    if limits is None:
        return WRITE_SQL[mode], params
    return GUARDED_SQL[mode], {**params, **guard_params(limits)}


def write_params(
    kind: str, ns: str, name: str, type_: str, text: str, obj: Obj, mode: Mode
) -> dict[str, Any]:
    params: dict[str, Any] = {"kind": kind, "ns": ns, "name": name, "type": type_, "body": text}
    if mode != "delete":
        c = columns(obj)
        params.update(
            uid=c.uid,
            gen=c.generation,
            ds=c.desired_state,
            os=c.observed_status,
            op=c.operation,
            dt=c.deletion_timestamp,
        )
    return params


#: ``json.dumps(..., separators=(",", ":"))`` without making an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def encode(obj: Obj) -> str:
    """The body as JSON text: sent as the statement's parameter and kept in ``Recent``."""
    return _COMPACT.encode(obj)
