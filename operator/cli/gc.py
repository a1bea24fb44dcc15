"""``codehub gc preview``: what the Archive GC would delete, and when (docs/archive-gc.md).

It runs the GC's own decision over the live bucket, the live workspaces (through the API,
as the configured identity: an administrator's token sees every namespace) and the
stored first-seen times, and prints one line per orphan. It deletes nothing and stores
no first-seen time, so running it changes no timer. Needs what the coordinator needs:
``CODEHUB_DATABASE_URL`` and the ``CODEHUB_S3_*`` settings.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from codehub.operator.cli.connection import resolve_connection, run
from codehub.operator.cli.console import CliError, out
from codehub.operator.cli.output import render_rows
from codehub.operator.cli.services import load_settings
from codehub.vocabulary.timestamps import format_rfc3339, human_duration, utc_now

if TYPE_CHECKING:
    from codehub.operator.archive_gc import PreviewRow

HEADERS = ["KEY", "SIZE", "ORPHAN FOR", "DELETED"]


def cmd_gc_preview(args: argparse.Namespace) -> int:
    # Imported here: client commands never load psycopg or minio
    # (docs/adr/0004-composition-root.md).
    from codehub.adapters.s3_object_store import S3ObjectStore
    from codehub.operator.archive_gc import ArchiveGC

    settings = load_settings()
    if not settings.database_url:
        raise CliError("CODEHUB_DATABASE_URL is not set: the first-seen times live there")
    conn = resolve_connection(args, os.environ)

    async def go() -> list[PreviewRow]:
        async with conn.client() as api:
            gc = ArchiveGC(
                api=api,
                objects=S3ObjectStore(settings.s3_config()),
                first_seen=settings.database_url,
                interval=settings.gc_interval,
                orphan_delay=settings.gc_orphan_delay,
            )
            return [row async for row in gc.preview()]

    rows = run(go)
    out(render_preview(rows, utc_now(), settings.gc_orphan_delay))
    return 0


def render_preview(rows: Sequence[PreviewRow], now: datetime, delay: float) -> str:
    """The table, then a summary; "next pass" when an orphan is already due."""
    if not rows:
        return "no orphaned archives: the GC would delete nothing\n"
    table = [HEADERS]
    due = 0
    for row in sorted(rows, key=lambda r: (r.due, r.key)):
        seen = "not seen yet" if row.first_seen is None else human_duration(now - row.first_seen)
        if row.due <= now:
            when = "next pass"
            due += 1
        else:
            when = f"in {human_duration(row.due - now)} ({format_rfc3339(row.due)})"
        table.append([row.key, _size(row.size), seen, when])
    total = sum(r.size for r in rows)
    summary = (
        f"{len(rows)} orphan(s), {_size(total)}; {due} due at the next pass; the others go "
        f"once orphaned for {human_duration(delay)} (GC_ORPHAN_DELAY)\n"
    )
    return render_rows(table) + summary


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
