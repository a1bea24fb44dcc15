"""The README's first command, ``codehub dev up``, as a newcomer runs it (here on a state
directory of its own, with the session's Docker engine): it brings up its own PostgreSQL
and object store, the server, the edge and the coordinator, and a RUNNING demo whose
printed sign-in link opens it. Run again after the demo's idle TTL sent it to sleep, it
starts the demo again. ``codehub dev down`` stops what it started and removes the demo's
container, keeping its volume (docs/development.md)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest

pytestmark = pytest.mark.e2e

CODEHUB = [str(Path(sys.executable).parent / "codehub")]


@pytest.fixture
def state_dir(service_env: dict[str, str], test_images: dict[str, str]) -> Iterator[Path]:
    # Not under pytest's tmp_path: PostgreSQL runs as its own user and must traverse it.
    root = Path(tempfile.mkdtemp(prefix="codehub-devstack-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        _codehub(root, "dev", "down")
        _remove_stack_objects(root)
        shutil.rmtree(root, ignore_errors=True)


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEHUB_")}
    env["CODEHUB_STATE_DIR"] = str(root)
    env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return env


def _codehub(
    root: Path, *args: str, env: dict[str, str] | None = None, stdout_only: bool = False
) -> str:
    proc = subprocess.run(
        [*CODEHUB, *args],
        env=env or _env(root),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"codehub {' '.join(args)} failed:\n{output[-3000:]}"
    return proc.stdout if stdout_only else output


def _as_dev(root: Path, *args: str, stdout_only: bool = False) -> str:
    """The CLI as the demo user, configured by sourcing cli.env as the README says."""
    env = _env(root)
    for line in (root / "cli.env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return _codehub(root, *args, env=env, stdout_only=stdout_only)


def _stack_label(root: Path) -> dict[str, str]:
    from codehub.operator.cli.dev.state import Paths, stack_scope

    return stack_scope(Paths(root))


def _remove_stack_objects(root: Path) -> None:
    client = docker.from_env()
    try:
        selector = [f"{k}={v}" for k, v in _stack_label(root).items()]
        for container in client.containers.list(all=True, filters={"label": selector}):
            container.remove(force=True)
        for volume in client.volumes.list(filters={"label": selector}):
            volume.remove(force=True)
    finally:
        client.close()


def _open_link(link: str, ca_file: Path) -> tuple[int, str, str]:
    """GET the sign-in link, then the page it redirects to with the cookie it set."""
    parts = urlsplit(link)
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context)
    try:
        conn.request("GET", parts.path, headers={"Accept": "text/html"})
        resp = conn.getresponse()
        resp.read()
        location = resp.headers.get("Location", "")
        cookie = (resp.headers.get("Set-Cookie") or "").split(";", 1)[0]
        assert resp.status in (302, 303), resp.status
        assert cookie, "the link set no session cookie"
        conn.request("GET", location, headers={"Cookie": cookie, "Accept": "text/html"})
        page = conn.getresponse()
        body = page.read().decode(errors="replace")
        return page.status, location, body
    finally:
        conn.close()


def _ca_file(root: Path) -> Path:
    from codehub.crd_like.server.tls import CERT_NAME

    return root / "tls" / CERT_NAME


def _demo(root: Path) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        _as_dev(root, "get", "ws", "demo", "-o", "json", stdout_only=True)
    )
    return obj


def test_dev_up_opens_a_running_demo_wakes_it_next_time_and_dev_down_stops_it(
    state_dir: Path,
) -> None:
    first = _codehub(state_dir, "dev", "up", "--detach")
    assert "The demo workspace dev/demo is RUNNING." in first
    assert "created workspace dev/demo" in first
    demo = _demo(state_dir)
    assert demo["status"]["display"] == "RUNNING"
    link = re.search(r"sign-in link \(works once, within a minute\): (\S+)", first)
    assert link is not None, first
    status, location, body = _open_link(link.group(1), _ca_file(state_dir))
    assert location == "/w/dev/demo/"
    assert status == 200, body[:500]

    # Asleep as its idle TTL leaves it (a stack brought up again days later).
    _as_dev(state_dir, "stop", "demo", "--wait", "--timeout", "120")
    assert _demo(state_dir)["status"]["display"] == "STANDBY"
    again = _codehub(state_dir, "dev", "up", "--detach")
    assert "workspace dev/demo already exists" in again
    assert "desired_state is STANDBY, set by api: starting it" in again
    assert "The demo workspace dev/demo is RUNNING." in again
    assert _demo(state_dir)["status"]["display"] == "RUNNING"

    pids = {
        name: int((state_dir / f"{name}.pid").read_text())
        for name in ("server", "coordinator", "edge", "edge-app")
        if (state_dir / f"{name}.pid").exists()
    }
    assert {"server", "coordinator"} <= set(pids)
    down = _codehub(state_dir, "dev", "down")
    assert "stopped 1 workspace container(s); their volumes are kept" in down
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still runs"
    client = docker.from_env()
    try:
        selector = [f"{k}={v}" for k, v in _stack_label(state_dir).items()]
        assert client.containers.list(all=True, filters={"label": selector}) == []
        assert len(client.volumes.list(filters={"label": selector})) == 1
    finally:
        client.close()
