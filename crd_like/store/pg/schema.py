"""Schema, migrations and the SQL shared by reads and writes (docs/storage.md).

Typed columns (namespace, name, uid, desired_state, observed_status, operation,
deletion time, owner) sit beside the JSON body, so limits, TTL scans and GC are indexed
queries; ``columns`` derives them from a body, ``body_filters`` turns selectors into SQL.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from codehub.crd_like.store.interface import Obj, Selectors
from codehub.vocabulary.timestamps import parse_rfc3339

log = logging.getLogger("codehub.crd_like.store.postgres")

NOTIFY_CHANNEL = "codehub_events"
#: Distinct from the leader-election key (operator/leader.py) so they never collide.
ADMISSION_LOCK_KEY = 0x636F6465687501
MIGRATION_LOCK_KEY = 0x636F6465687502
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Log entries read per query, by the watch cache and by a watcher catching up.
WATCH_BATCH = 500


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        m = _MIGRATION_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path.read_text()))
    return found


async def migrate(database_url: str, *, up_to: int | None = None) -> None:
    """Apply pending migrations, each once, under an advisory lock so concurrent
    starters (several servers, ``codehub db migrate``) never race. ``up_to``: stop after
    that version (a test of a later migration starts from an older schema)."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in await cur.fetchall()}
        for version, name, text in _migrations():
            if version in applied or (up_to is not None and version > up_to):
                continue
            log.info("applying migration %04d_%s", version, name)
            await conn.execute(text.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )


@dataclass(frozen=True)
class Columns:
    """The typed columns of an object row."""

    uid: str
    generation: int
    desired_state: str | None
    observed_status: str | None
    operation: str | None
    deletion_timestamp: datetime | None


def columns(obj: Obj) -> Columns:
    m = obj.get("metadata") or {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}

    def text(v: Any) -> str | None:
        return v if isinstance(v, str) else None

    return Columns(
        uid=str(m["uid"]),
        generation=int(m.get("generation") or 1),
        desired_state=text((spec or {}).get("desired_state")),
        observed_status=text((status or {}).get("observed_status")),
        operation=text((status or {}).get("operation")),
        deletion_timestamp=parse_rfc3339(m.get("deletionTimestamp")),
    )


def body_filters(
    selectors: Selectors | None, column: str = "body"
) -> tuple[sql.Composable, list[Any]]:
    """SQL conditions (ANDed, leading ``AND``) equivalent to ``semantics.matches``."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    if selectors is None:
        return sql.SQL(""), params
    body = sql.Identifier(column)
    if selectors.labels:
        parts.append(sql.SQL(" AND {} -> 'metadata' -> 'labels' @> %s").format(body))
        params.append(Jsonb(dict(selectors.labels)))
    for key, value in selectors.not_labels.items():
        parts.append(
            sql.SQL(" AND NOT coalesce({} -> 'metadata' -> 'labels', '{{}}') @> %s").format(body)
        )
        params.append(Jsonb({key: value}))
    for path, value in selectors.fields.items():
        if path == "metadata.namespace":
            parts.append(sql.SQL(" AND namespace = %s"))
        elif path == "metadata.name":
            parts.append(sql.SQL(" AND name = %s"))
        else:
            parts.append(sql.SQL(" AND {} #>> %s = %s").format(body))
            params.append(path.split("."))
        params.append(value)
    return sql.Composed(parts), params
