"""scripts/dev-services on a state directory of its own: idempotent up, clean down.

It reuses the session's Docker engine (through DOCKER_HOST), so it starts and stops its
own PostgreSQL and SeaweedFS only, never a second dockerd.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "dev-services"


def _run(state: Path, docker_host: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CODEHUB_") and k != "DOCKER_HOST"
    }
    env["CODEHUB_DEV_STATE"] = str(state)
    if docker_host is not None:
        env["DOCKER_HOST"] = docker_host
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _exports(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export"
        name, _, value = assignment.partition("=")
        out[name] = value
    return out


def _pids(state: Path) -> dict[str, int]:
    files = {
        "postgres": state / "postgres" / "postgres.pid",
        "weed": state / "seaweedfs" / "weed.pid",
    }
    return {name: int(f.read_text()) for name, f in files.items()}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def state_dir(service_env: dict[str, str]) -> Iterator[Path]:
    # Not pytest's tmp_path: it is mode 700, and PostgreSQL runs unprivileged when we are root.
    path = Path(tempfile.mkdtemp(prefix="codehub-devsvc-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        _run(path, service_env["DOCKER_HOST"], "down")
        shutil.rmtree(path, ignore_errors=True)


def test_up_twice_then_down(state_dir: Path, service_env: dict[str, str]) -> None:
    docker_host = service_env["DOCKER_HOST"]
    first = _run(state_dir, docker_host, "up")
    assert first.returncode == 0, first.stderr
    env = _exports(first.stdout)
    assert set(env) == {
        "CODEHUB_DATABASE_URL",
        "CODEHUB_S3_ENDPOINT",
        "CODEHUB_S3_ACCESS_KEY",
        "CODEHUB_S3_SECRET_KEY",
        "CODEHUB_S3_BUCKET",
        "DOCKER_HOST",
    }
    assert env["DOCKER_HOST"] == docker_host
    assert not (state_dir / "docker" / "docker.pid").exists()
    assert "@127.0.0.1:" in env["CODEHUB_DATABASE_URL"]
    assert env["CODEHUB_DATABASE_URL"] != service_env["CODEHUB_DATABASE_URL"]
    assert env["CODEHUB_S3_SECRET_KEY"] not in first.stderr
    creds = state_dir / "seaweedfs" / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    pids = _pids(state_dir)
    assert all(_alive(p) for p in pids.values())

    second = _run(state_dir, docker_host, "up")
    assert second.returncode == 0, second.stderr
    assert _exports(second.stdout) == env
    assert _pids(state_dir) == pids
    assert "starting" not in second.stderr
    assert second.stderr.count("reusing") == 2  # postgres and seaweedfs; docker is shared

    status = _run(state_dir, docker_host, "status")
    assert status.returncode == 0
    assert env["CODEHUB_S3_SECRET_KEY"] not in status.stdout + status.stderr
    if docker_host.startswith("unix://"):
        # Without DOCKER_HOST the engine already running here is found, not a second one.
        found = _run(state_dir, None, "status")
        assert found.returncode == 0, found.stdout
        assert docker_host in found.stdout
        assert not (state_dir / "docker" / "docker.pid").exists()

    down = _run(state_dir, docker_host, "down")
    assert down.returncode == 0, down.stderr
    assert not any(_alive(p) for p in pids.values())
    assert _run(state_dir, docker_host, "status").returncode != 0
