"""End-to-end fixtures: a real ``codehub`` API server subprocess over HTTPS.

``api_server`` (session) is one server on a fresh PostgreSQL database with a generated
token file (alice, bob, an administrator and the operator) and its own state directory,
so its self-signed certificate is this run's. ``api_server_factory`` starts extra
servers (own database, own limits) for tests that need them; both can be restarted on
the same port and database to test "resume after a restart". Servers are stopped by
PID at the end; their databases are dropped by the session cleanup (named with the run
id).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"

USERS: dict[str, str] = {
    "alice": "",
    "bob": "",
    "admin": "codehub:admin",
    "operator": "codehub:operator",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_database(admin_url: str, run_id: str, tag: str) -> str:
    import psycopg

    name = f"{run_id}_{tag}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def drop_database(admin_url: str, database_url: str) -> None:
    import psycopg

    name = database_url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ApiServer:
    """A running ``python -m codehub.crd_like.server`` and what clients need to reach it."""

    url: str
    port: int
    ca_file: str
    tokens: dict[str, str] = field(repr=False)
    database_url: str = field(repr=False)
    token_file: str = ""
    state_dir: Path = Path()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path = Path()

    def kubeconfig(self, user: str, path: Path | None = None) -> Path:
        """Write a kubeconfig for ``user`` (namespace = the user for plain users)."""
        from codehub.crd_like.client.kubeconfig import render_kubeconfig

        namespace = user if not USERS.get(user) else "default"
        target = path or self.state_dir / f"kubeconfig-{user}"
        ca_pem = Path(self.ca_file).read_text()
        target.write_text(render_kubeconfig(self.url, self.tokens[user], ca_pem, namespace))
        target.chmod(0o600)
        return target

    def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [
                    str(PYTHON),
                    "-m",
                    "codehub.crd_like.server",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
            )
        finally:
            log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = ssl.create_default_context(cafile=None)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"API server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if Path(self.ca_file).exists():
                ctx = ssl.create_default_context(cafile=self.ca_file)
                try:
                    with urllib.request.urlopen(
                        f"{self.url}/readyz", context=ctx, timeout=2
                    ) as resp:
                        if resp.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"API server not ready in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit promptly."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def make_server(
    base_dir: Path,
    service_env: Mapping[str, str],
    run_id: str,
    *,
    tag: str = "api",
    extra_env: Mapping[str, str] | None = None,
) -> ApiServer:
    """Prepare (not start) a server with its own database, tokens and state directory."""
    state_dir = base_dir / f"{tag}-{uuid.uuid4().hex[:6]}"
    state_dir.mkdir(parents=True)
    tokens = {user: secrets.token_urlsafe(24) for user in USERS}
    token_file = state_dir / "tokens.csv"
    token_file.write_text(
        "".join(
            f'{tokens[u]},{u},uid-{u},"{groups}"\n' if groups else f"{tokens[u]},{u},uid-{u}\n"
            for u, groups in USERS.items()
        )
    )
    token_file.chmod(0o600)
    database_url = create_database(service_env["CODEHUB_DATABASE_URL"], run_id, tag)
    port = free_port()
    env = {
        **os.environ,
        **service_env,
        "CODEHUB_DATABASE_URL": database_url,
        "CODEHUB_TOKEN_FILE": str(token_file),
        "CODEHUB_STATE_DIR": str(state_dir),
        "CODEHUB_BOOKMARK_INTERVAL": "5",
        "CODEHUB_SSE_HEARTBEAT_INTERVAL": "5",
        **dict(extra_env or {}),
    }
    env.pop("CODEHUB_TLS_CERT", None)
    env.pop("CODEHUB_TLS_KEY", None)
    return ApiServer(
        url=f"https://127.0.0.1:{port}",
        port=port,
        ca_file=str(state_dir / "tls" / "server.crt"),
        tokens=tokens,
        database_url=database_url,
        token_file=str(token_file),
        state_dir=state_dir,
        env=env,
        log_path=state_dir / "server.log",
    )


@pytest.fixture(scope="session")
def api_server(
    tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str], run_id: str
) -> Iterator[ApiServer]:
    """One shared server for the session (limits: the defaults of docs/settings.md)."""
    server = make_server(tmp_path_factory.mktemp("api"), service_env, run_id)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        drop_database(service_env["CODEHUB_DATABASE_URL"], server.database_url)


@pytest.fixture
def api_server_factory(
    tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str], run_id: str
) -> Iterator[Callable[..., ApiServer]]:
    """``factory(extra_env=None, tag="api")`` starts a private server; stopped after the test."""
    started: list[ApiServer] = []

    def factory(extra_env: Mapping[str, str] | None = None, tag: str = "api") -> ApiServer:
        server = make_server(
            tmp_path_factory.mktemp(tag), service_env, run_id, tag=tag, extra_env=extra_env
        )
        started.append(server)
        server.start()
        return server

    yield factory
    for server in started:
        server.stop()
        drop_database(service_env["CODEHUB_DATABASE_URL"], server.database_url)
