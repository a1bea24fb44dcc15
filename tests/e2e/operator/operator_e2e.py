"""Helpers for the operator e2e tests: the stack, coordinator subprocesses, history.

Each test gets its own database (so its own leader lock and workspaces), its own scope
label on everything Docker-side, and coordinators started as real subprocesses that can
be SIGKILLed. Tests act only through the CLI or the API; Docker and S3 are used to check
reality (and to break it behind the operator's back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[3]
CODEHUB = REPO / ".venv" / "bin" / "codehub"
USER = "alice"
TEST_LABEL = "codehub.io/test-case"
#: Generous upper bounds so a slow shared machine does not fail a correct run; they are
#: hang guards, not performance assertions.
LONG = 240.0

COORDINATOR_CODE = (
    "import json, sys\n"
    "from codehub.operator.coordinator import run_coordinator\n"
    "from codehub.operator.settings import Settings\n"
    "run_coordinator(Settings.from_env(), '127.0.0.1', int(sys.argv[1]),"
    " scope_labels=json.loads(sys.argv[2]))\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- coordinators ------------------------------------------------------------------------


@dataclass
class CoordinatorProcess:
    node_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def is_leader(self) -> bool:
        h = self.health()
        return bool(h and h.get("leader"))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stack:
    """One test's stack; helpers act through the API or the CLI only."""

    server: Any  # tests/e2e/conftest.py ApiServer
    settings_env: dict[str, str]
    scope_labels: dict[str, str]
    state: Path
    docker: Any
    s3: Any
    bucket: str
    image: str
    coordinators: list[CoordinatorProcess] = field(default_factory=list)

    # -- coordinators ------------------------------------------------------------------

    def start_coordinator(
        self, node_id: str | None = None, env: Mapping[str, str] | None = None
    ) -> CoordinatorProcess:
        node_id = node_id or f"node-{len(self.coordinators) + 1}"
        port = free_port()
        log = self.state / f"coordinator-{node_id}-{len(self.coordinators)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-c", COORDINATOR_CODE, str(port), json.dumps(self.scope_labels)],
            env={**self.settings_env, "CODEHUB_NODE_ID": node_id, **(env or {})},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        coord = CoordinatorProcess(node_id, port, proc, log)
        self.coordinators.append(coord)
        deadline = time.monotonic() + 60
        while coord.health() is None:
            if not coord.alive() or time.monotonic() > deadline:
                pytest.fail(f"coordinator {node_id} did not start:\n{coord.log_text()[-3000:]}")
            time.sleep(0.2)
        return coord

    def wait_leader(self, coord: CoordinatorProcess, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while not coord.is_leader():
            if not coord.alive() or time.monotonic() > deadline:
                pytest.fail(f"{coord.node_id} did not become leader:\n{coord.log_text()[-3000:]}")
            time.sleep(0.1)

    def coordinator_logs(self) -> str:
        return "\n".join(
            f"----- {c.node_id} -----\n{c.log_text()[-4000:]}" for c in self.coordinators
        )

    # -- API ---------------------------------------------------------------------------

    def api(self, user: str = USER) -> Any:
        from codehub.crd_like.client.api import ApiClient

        return ApiClient(self.server.url, self.server.tokens[user], ca_file=self.server.ca_file)

    async def create(self, name: str, desired: str = "RUNNING", image: str | None = None) -> Any:
        body = {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": USER},
            "spec": {"desired_state": desired, "image_ref": image or self.image},
        }
        async with self.api() as api:
            return await api.create(USER, body)

    async def get(self, name: str) -> dict[str, Any]:
        async with self.api() as api:
            obj: dict[str, Any] = await api.get(USER, name)
            return obj

    async def set_desired(self, name: str, desired: str) -> None:
        async with self.api() as api:
            await api.patch_merge(USER, name, {"spec": {"desired_state": desired}})

    async def events(self, name: str | None = None) -> list[dict[str, Any]]:
        async with self.api("admin") as api:
            events: list[dict[str, Any]] = await api.list_events(USER, name)
            return events

    def cli(
        self, *args: str, user: str = USER, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "CODEHUB_SERVER": self.server.url,
            "CODEHUB_TOKEN": self.server.tokens[user],
            "CODEHUB_CA_FILE": self.server.ca_file,
            "CODEHUB_NAMESPACE": USER,
        }
        proc = subprocess.run(
            [str(CODEHUB), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.state,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"codehub {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        limit: float = LONG,
    ) -> dict[str, Any]:
        """Poll the workspace until ``predicate(obj)``; fail with the last state and logs."""
        deadline = time.monotonic() + limit
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                obj = await self.get(name)
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
                obj = {}
            if predicate(obj):
                return obj
            await asyncio.sleep(0.25)
        pytest.fail(
            f"{name}: not {what} after {limit:.0f}s; last status {obj.get('status')}\n"
            f"{self.coordinator_logs()}"
        )

    async def wait_display(self, name: str, display: str, limit: float = LONG) -> dict[str, Any]:
        return await self.wait_for(
            name,
            lambda o: (
                status(o).get("display") == display and status(o).get("operation", "NONE") == "NONE"
            ),
            f"display={display} with no operation",
            limit,
        )

    async def wait_error(self, name: str, limit: float = LONG) -> dict[str, Any]:
        """ERROR keeps the failed operation in ``status.operation`` until recovered."""
        return await self.wait_for(
            name, lambda o: status(o).get("display") == "ERROR", "display=ERROR", limit
        )

    async def wait_gone(self, name: str, limit: float = LONG) -> None:
        await self.wait_for(name, lambda o: not o, "deleted", limit)

    # -- reality -------------------------------------------------------------------------

    def container(self, uid: str) -> Any | None:
        import docker.errors

        try:
            return self.docker.containers.get(f"ws-{uid}")
        except docker.errors.NotFound:
            return None

    def volume_exists(self, uid: str) -> bool:
        import docker.errors

        try:
            self.docker.volumes.get(f"ws-{uid}-home")
            return True
        except docker.errors.NotFound:
            return False

    def exec(self, uid: str, script: str) -> str:
        c = self.container(uid)
        assert c is not None, f"no container ws-{uid}"
        code, out = c.exec_run(["sh", "-c", script], user="1000", workdir="/home/coder")
        text = out.decode(errors="replace")
        assert code == 0, f"exec failed ({code}): {text}"
        return str(text)

    def objects(self, prefix: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for o in self.s3.list_objects(self.bucket, prefix=prefix, recursive=True):
            resp = self.s3.get_object(self.bucket, o.object_name)
            try:
                out[o.object_name] = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        return out


@contextlib.contextmanager
def open_stack(
    request: pytest.FixtureRequest,
    server: Any,
    s3: Any = None,
    *,
    docker: Any = None,
    bucket: str | None = None,
) -> Iterator[Stack]:
    """A Stack over ``server`` with a scope label of its own (coordinators on demand,
    polling every second), built from the session's fixtures (``run_id``, ``s3_bucket``,
    ``test_images``, ``docker_client``; ``docker`` and ``bucket`` replace the last two
    for a stack on private services) and the test's ``tmp_path``; on exit its
    coordinators are stopped and the containers and volumes carrying its label removed."""
    run_id: str = request.getfixturevalue("run_id")
    bucket = bucket or request.getfixturevalue("s3_bucket")
    images: Mapping[str, str] = request.getfixturevalue("test_images")
    docker = docker or request.getfixturevalue("docker_client")
    state: Path = request.getfixturevalue("tmp_path")
    case = uuid.uuid4().hex[:10]
    settings_env = {
        **server.env,
        "CODEHUB_SERVER": server.url,
        "CODEHUB_TOKEN": server.tokens["operator"],
        "CODEHUB_CA_FILE": server.ca_file,
        "CODEHUB_S3_BUCKET": bucket,
        "PYTHONUNBUFFERED": "1",
        "RECONCILER_INTERVAL": "1",
        "RECONCILER_RETRY_BACKOFF": "1",
        "HEALTH_MONITOR_INTERVAL": "1",
        "COORDINATOR_RETRY_INTERVAL": "1",
    }
    st = Stack(
        server=server,
        settings_env=settings_env,
        scope_labels={"codehub.io/test-run": run_id, TEST_LABEL: case},
        state=state,
        docker=docker,
        s3=s3,
        bucket=bucket,
        image=images.get("workspace-test", "codehub/workspace-test:local"),
    )
    try:
        yield st
    finally:
        for c in st.coordinators:
            with contextlib.suppress(Exception):
                c.terminate()
        selector = {"label": f"{TEST_LABEL}={case}"}
        for c in docker.containers.list(all=True, filters=selector):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for v in docker.volumes.list(filters=selector):
            with contextlib.suppress(Exception):
                v.remove(force=True)


@contextlib.asynccontextmanager
async def sse_stream(
    stack: Stack, on_event: Callable[[str, dict[str, Any]], None], name: str | None = None
) -> AsyncIterator[None]:
    """Feed ``on_event(event, data)`` every SSE event of the user's namespace (of workspace
    ``name`` if given), read in the background while the block runs."""
    path = f"/api/v1/namespaces/{USER}/workspaces" + (f"/{name}" if name else "") + "/events"
    ctx = ssl.create_default_context(cafile=stack.server.ca_file)
    headers = {"Authorization": f"Bearer {stack.server.tokens[USER]}"}
    async with aiohttp.ClientSession() as session:
        resp = await session.get(stack.server.url + path, headers=headers, ssl=ctx)
        assert resp.status == 200

        async def read() -> None:
            event = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    on_event(event, json.loads(line[6:]))

        task = asyncio.create_task(read())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
            resp.close()


def status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["uid"])


class History:
    """Every (desired, operation, observed, display) a workspace went through (via watch)."""

    def __init__(self) -> None:
        self.states: dict[str, list[tuple[str, str, str, str]]] = {}
        self.op_ids: dict[str, list[tuple[str, str]]] = {}

    def record(self, obj: Mapping[str, Any]) -> None:
        name = obj["metadata"]["name"]
        st = status(obj)
        row = (
            str((obj.get("spec") or {}).get("desired_state")),
            str(st.get("operation") or "NONE"),
            str(st.get("observed_status") or "-"),
            str(st.get("display") or "-"),
        )
        rows = self.states.setdefault(name, [])
        if not rows or rows[-1] != row:
            rows.append(row)
        op = (str(st.get("operation") or "NONE"), str(st.get("op_id")))
        ops = self.op_ids.setdefault(name, [])
        if op[0] != "NONE" and (not ops or ops[-1] != op):
            ops.append(op)

    def operations(self, name: str) -> list[str]:
        """Distinct operations in order (consecutive repeats collapsed)."""
        seen: list[str] = []
        for _, op, _, _ in self.states.get(name, []):
            if op != "NONE" and (not seen or seen[-1] != op):
                seen.append(op)
        return seen

    def observed(self, name: str) -> list[str]:
        seen: list[str] = []
        for _, _, obs, _ in self.states.get(name, []):
            if not seen or seen[-1] != obs:
                seen.append(obs)
        return seen


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
