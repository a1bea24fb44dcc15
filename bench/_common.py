"""What the benchmarks share: the dev services' settings, a free local port, and the CPU
time a server process has used (the cost of a run hardly depends on what else the
machine is running, unlike its rate)."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def service_env() -> dict[str, str]:
    """The exports of ``scripts/dev-services up`` (idempotent: reuses running services)."""
    out = subprocess.run(
        [str(REPO / "scripts" / "dev-services"), "up"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admin_database_url() -> str | None:
    """CODEHUB_DATABASE_URL (the server's admin database), or None after saying how to
    set it."""
    url = os.environ.get("CODEHUB_DATABASE_URL")
    if not url:
        print('set CODEHUB_DATABASE_URL (eval "$(scripts/dev-services up)")', file=sys.stderr)
    return url or None


async def insert_running_rows(conn: Any, rows: list[tuple[str, str, str, str, str]]) -> None:
    """Seed RUNNING workspaces straight into the store's ``objects`` table, with the typed
    columns the store keeps beside the body: ``(namespace, name, uid, owner, body_json)``.
    Thousands in a second, where creating them through the API would take minutes."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation,"
            " owner, desired_state, observed_status, operation, body) VALUES"
            " ('workspaces', %s, %s, %s, 1, 1, %s, 'RUNNING', 'RUNNING', 'NONE', %s)",
            rows,
        )
