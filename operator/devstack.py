"""``codehub dev up`` / ``codehub dev down``: the whole product on one machine, for a newcomer.

``up`` brings up the real services (``scripts/dev-services``), the local images, an API
server and a coordinator as background processes, identities and client configuration,
and a demo workspace; it shows the demo converging and ends by printing how to use the
stack. Everything lives in the state directory (``CODEHUB_STATE_DIR``, default
``.codehub-dev``): tokens, certificate, kubeconfigs, PID files and logs, so ``down`` (and
a second ``up``) find what the first ``up`` started. Both commands are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codehub.operator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "workspace.yaml"
DEMO_NAMESPACE = "dev"
SERVICE_VARS = (
    "CODEHUB_DATABASE_URL",
    "CODEHUB_S3_ENDPOINT",
    "CODEHUB_S3_ACCESS_KEY",
    "CODEHUB_S3_SECRET_KEY",
    "CODEHUB_S3_BUCKET",
    "DOCKER_HOST",
)
#: (user, groups) of the token file; the user name is also the namespace it owns.
IDENTITIES = (
    ("dev", ""),
    ("admin", "codehub:admin"),
    ("operator", "codehub:operator"),
)
READY_TIMEOUT = 90.0
DEMO_TIMEOUT = 300.0


class DevStackError(Exception):
    """A step of ``dev up`` failed; the message says which and where to look."""


def _say(msg: str) -> None:
    print(msg, flush=True)


def _step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


# --- the state directory -------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.csv"

    @property
    def stack(self) -> Path:
        return self.root / "devstack.json"

    @property
    def cli_env(self) -> Path:
        return self.root / "cli.env"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def kubeconfig(self, user: str) -> Path:
        return self.root / f"kubeconfig-{user}"

    def pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def _paths(settings: Settings) -> Paths:
    root = settings.state_dir
    if not root.is_absolute():
        root = (Path.cwd() / root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    return Paths(root)


def _write_private(path: Path, text: str) -> None:
    """Create with mode 600 from the start: these files hold tokens or credentials."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def ensure_tokens(paths: Paths) -> dict[str, str]:
    """user -> token; generated once and kept, so clients configured earlier keep working."""
    tokens: dict[str, str] = {}
    if paths.tokens.exists():
        for line in paths.tokens.read_text().splitlines():
            parts = line.split(",", 2)
            if len(parts) >= 2 and parts[0]:
                tokens[parts[1]] = parts[0]
    if all(user in tokens for user, _ in IDENTITIES):
        os.chmod(paths.tokens, 0o600)
        return tokens
    lines = []
    for user, groups in IDENTITIES:
        token = tokens.get(user) or secrets.token_urlsafe(32)
        tokens[user] = token
        lines.append(f'{token},{user},{user}-uid,"{groups}"')
    _write_private(paths.tokens, "\n".join(lines) + "\n")
    return tokens


# --- processes -------------------------------------------------------------------------


def _pid_alive(pid: int, needle: str = "codehub") -> bool:
    """Alive and still the process we started (PIDs get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = ""
    return needle in cmdline and state != "Z"


def _exited(pid: int) -> bool:
    """True once ``pid`` has ended. Unlike ``_pid_alive`` this ignores the command line:
    a child caught between fork and exec briefly shows an empty or foreign one, and a
    busy machine made `dev up` report a healthy coordinator as dead."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    return not Path(f"/proc/{pid}").exists()


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _running(paths: Paths, name: str) -> int | None:
    pid = _read_pid(paths.pidfile(name))
    return pid if pid and _pid_alive(pid) else None


def _codehub_command() -> list[str]:
    exe = Path(sys.executable).parent / "codehub"
    if exe.exists():
        return [str(exe)]
    return [
        sys.executable,
        "-c",
        "import sys; from codehub.operator.cli import main; sys.exit(main())",
    ]


def _spawn(paths: Paths, name: str, args: list[str], env: Mapping[str, str]) -> int:
    logfile = open(paths.log(name), "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [*_codehub_command(), *args],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=str(paths.root),
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not them
        )
    finally:
        logfile.close()
    paths.pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _stop(paths: Paths, name: str, timeout: float = 20.0) -> bool:
    """SIGTERM by PID, SIGKILL after ``timeout``; True when something was stopped."""
    pidfile = paths.pidfile(name)
    pid = _read_pid(pidfile)
    stopped = False
    if pid and _pid_alive(pid):
        _say(f"    stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
        stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, ca_file: str | None, what: str, pid: int, log: Path) -> None:
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if _exited(pid):
            raise DevStackError(f"{what} exited during startup; see {log}")
        if time.monotonic() > deadline:
            raise DevStackError(
                f"{what} did not answer at {url} in {READY_TIMEOUT:.0f}s; see {log}"
            )
        time.sleep(0.3)


# --- services and images ------------------------------------------------------------------


def _script(name: str) -> Path:
    path = REPO / "scripts" / name
    if not path.exists():
        raise DevStackError(f"{path} not found: `codehub dev` runs from a source checkout")
    return path


def _services_env(paths: Paths) -> dict[str, str]:
    return {**os.environ, "CODEHUB_DEV_STATE": str(paths.root)}


def services_running(paths: Paths) -> bool:
    proc = subprocess.run(
        [str(_script("dev-services")), "status"],
        env=_services_env(paths),
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def services_up(paths: Paths) -> dict[str, str]:
    proc = subprocess.run(
        [str(_script("dev-services")), "up"],
        env=_services_env(paths),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DevStackError(f"scripts/dev-services up failed (exit {proc.returncode})")
    env = parse_exports(proc.stdout)
    missing = [v for v in SERVICE_VARS if v not in env]
    if missing:
        raise DevStackError(f"scripts/dev-services up did not export {', '.join(missing)}")
    return env


def parse_exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def build_images(env: Mapping[str, str]) -> None:
    proc = subprocess.run([str(_script("build-test-images"))], env=dict(env), check=False)
    if proc.returncode != 0:
        raise DevStackError("scripts/build-test-images failed; see its output above")


# --- the demo workspace ----------------------------------------------------------------------


async def apply_demo(server: str, token: str, ca_file: str) -> tuple[str, str]:
    """Create the example workspace unless it exists; (namespace, name)."""
    from codehub.crd_like.client.api import ApiClient, ApiError
    from codehub.crd_like.client.manifests import load_manifests

    manifest = load_manifests([str(EXAMPLE)])[0]
    ns = manifest.namespace or DEMO_NAMESPACE
    async with ApiClient(server, token, ca_file=ca_file) as api:
        try:
            await api.get(ns, manifest.name)
            _say(f"    workspace {ns}/{manifest.name} already exists")
        except ApiError as exc:
            if exc.status != 404:
                raise
            await api.create(ns, manifest.obj)
            _say(f"    created workspace {ns}/{manifest.name} from {EXAMPLE.name}")
    return ns, manifest.name


async def follow(server: str, token: str, ca_file: str, ns: str, name: str) -> dict[str, Any]:
    """Print each change of operation/observed status until display is RUNNING (or ERROR)."""
    from codehub.crd_like.client.api import ApiClient

    start = time.monotonic()
    last: tuple[Any, ...] | None = None
    async with ApiClient(server, token, ca_file=ca_file) as api:
        while True:
            obj = await api.get(ns, name)
            status = obj.get("status") or {}
            spec = obj.get("spec") or {}
            now = (
                spec.get("desired_state"),
                status.get("operation") or "NONE",
                status.get("observed_status") or "PENDING",
                status.get("display") or "PENDING",
            )
            if now != last:
                _say(
                    f"    [{time.monotonic() - start:5.1f}s] desired={now[0]} operation={now[1]}"
                    f" observed={now[2]} display={now[3]}"
                )
                last = now
            if now[3] == "RUNNING" and now[1] == "NONE":
                return obj
            if now[3] == "ERROR":
                info = status.get("error_info") or {}
                raise DevStackError(
                    f"the demo workspace failed: {info.get('reason')}: {info.get('message')}"
                )
            if time.monotonic() - start > DEMO_TIMEOUT:
                raise DevStackError(f"the demo workspace is not RUNNING after {DEMO_TIMEOUT:.0f}s")
            await asyncio.sleep(0.5)


# --- up / down ----------------------------------------------------------------------------------


def up(settings: Settings, detach: bool) -> int:
    """Bring the stack up (reusing what already runs); 0 on success."""
    paths = _paths(settings)
    try:
        return _up(settings, paths, detach)
    except DevStackError as exc:
        print(f"codehub dev up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what was started", file=sys.stderr)
        _down(paths, stop_services=False)
        return 130


def _up(settings: Settings, paths: Paths, detach: bool) -> int:
    from codehub.crd_like.client.kubeconfig import render_kubeconfig
    from codehub.crd_like.server.tls import ensure_certificate

    _step(f"services (PostgreSQL, SeaweedFS S3, Docker) — state in {paths.root}")
    services_were_up = services_running(paths)
    service_env = services_up(paths)
    base_env = {**os.environ, **service_env}

    _step("local images")
    build_images(base_env)

    _step("identities and TLS")
    tokens = ensure_tokens(paths)
    cert, key = ensure_certificate(paths.root)
    ca_pem = Path(cert).read_text()
    _say(f"    tokens for {', '.join(u for u, _ in IDENTITIES)} in {paths.tokens} (mode 600)")

    stack = _load_stack(paths)
    if not stack:  # processes from an earlier run whose ports are unknown
        for name in ("coordinator", "server"):
            _stop(paths, name)
    server_port = stack.get("server_port") or _free_port()
    coord_port = stack.get("coordinator_port") or _free_port()
    server_url = f"https://127.0.0.1:{server_port}"
    common = {
        **base_env,
        "CODEHUB_STATE_DIR": str(paths.root),
        "CODEHUB_TOKEN_FILE": str(paths.tokens),
        "CODEHUB_TLS_CERT": str(cert),
        "CODEHUB_TLS_KEY": str(key),
        "CODEHUB_CA_FILE": str(cert),
        "CODEHUB_SERVER": server_url,
        "CODEHUB_SCOPE_LABELS": ",".join(f"{k}={v}" for k, v in _stack_scope(paths).items()),
        "PYTHONUNBUFFERED": "1",
    }
    common.pop("CODEHUB_TOKEN", None)

    _step("API server")
    migrate = subprocess.run(
        [*_codehub_command(), "db", "migrate"], env=common, capture_output=True, check=False
    )
    if migrate.returncode != 0:
        raise DevStackError(f"codehub db migrate failed: {migrate.stderr.decode()[-500:]}")
    pid = _running(paths, "server")
    if pid is None:
        pid = _spawn(paths, "server", ["server", "--listen", f"127.0.0.1:{server_port}"], common)
    _wait_http(f"{server_url}/healthz", str(cert), "the API server", pid, paths.log("server"))
    _say(f"    {server_url} (pid {pid}, log {paths.log('server')})")

    _step("coordinator")
    coord_env = {**common, "CODEHUB_TOKEN": tokens["operator"]}
    cpid = _running(paths, "coordinator")
    if cpid is None:
        cpid = _spawn(
            paths, "coordinator", ["coordinator", "--listen", f"127.0.0.1:{coord_port}"], coord_env
        )
    coord_url = f"http://127.0.0.1:{coord_port}"
    _wait_http(f"{coord_url}/healthz", None, "the coordinator", cpid, paths.log("coordinator"))
    _say(f"    {coord_url} (pid {cpid}, log {paths.log('coordinator')})")

    _save_stack(
        paths,
        {
            "server_port": server_port,
            "coordinator_port": coord_port,
            "services_were_up": bool(stack.get("services_were_up", services_were_up)),
            "docker_host": base_env.get("DOCKER_HOST", ""),
        },
    )

    _step("client configuration")
    for user, _ in IDENTITIES:
        ns = user if user == DEMO_NAMESPACE else None
        _write_private(
            paths.kubeconfig(user), render_kubeconfig(server_url, tokens[user], ca_pem, ns)
        )
    _write_private(
        paths.cli_env,
        "".join(
            f"export {k}={shlex.quote(v)}\n"
            for k, v in (
                ("CODEHUB_SERVER", server_url),
                ("CODEHUB_TOKEN", tokens[DEMO_NAMESPACE]),
                ("CODEHUB_CA_FILE", str(cert)),
                ("CODEHUB_NAMESPACE", DEMO_NAMESPACE),
                ("KUBECONFIG", str(paths.kubeconfig(DEMO_NAMESPACE))),
            )
        ),
    )

    _step("demo workspace")
    ns, name = asyncio.run(apply_demo(server_url, tokens[DEMO_NAMESPACE], str(cert)))
    obj = asyncio.run(follow(server_url, tokens[DEMO_NAMESPACE], str(cert), ns, name))
    _usage(paths, server_url, coord_url, ns, name, obj, detach)

    if detach:
        return 0
    _say("The stack runs in the foreground; press Ctrl-C to stop it.")
    # Ctrl-C and SIGTERM both end the foreground stack the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while _running(paths, "server") and _running(paths, "coordinator"):
            time.sleep(1)
        print("a background process exited; see the logs above. Stopping.", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    _say("\nstopping the dev stack")
    _down(paths, stop_services=not services_were_up)
    return code


def _usage(
    paths: Paths, server: str, coord: str, ns: str, name: str, obj: dict[str, Any], detach: bool
) -> None:
    env = paths.cli_env
    kc = paths.kubeconfig(DEMO_NAMESPACE)
    akc = paths.kubeconfig("admin")
    _say(
        f"""
codehub dev stack is up. The demo workspace {ns}/{name} is RUNNING.

  Use the CLI as user `dev`:
    source {env}
    codehub get ws
    codehub describe ws {name}
    codehub stop {name}        # RUNNING -> STANDBY (container gone, volume kept)
    codehub archive {name}     # -> ARCHIVED (volume packed into the object store)
    codehub start {name}       # restore and start again
    codehub wait ws {name} --for=display=RUNNING --timeout=300

  kubectl:  kubectl --kubeconfig {kc} get ws
            kubectl --kubeconfig {akc} get ws -A     # administrator
  Metrics:  {server}/metrics   {coord}/metrics
  Health:   {coord}/healthz  (leadership and components)
  Logs:     {paths.logs}/
  Stop:     codehub dev down
"""
    )
    if detach:
        _say("Detached: the server and coordinator keep running in the background.")


def _load_stack(paths: Paths) -> dict[str, Any]:
    try:
        data = json.loads(paths.stack.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stack_scope(paths: Paths) -> dict[str, str]:
    """The label that marks this stack's containers and volumes, so `dev down` stops only
    its own workspaces on an engine that others (tests, another checkout) share."""
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:12]
    return {"codehub.io/stack": f"dev-{digest}"}


def _stop_workspace_containers(paths: Paths, docker_host: str) -> None:
    """Remove this stack's workspace containers (volumes stay, data is safe): with the
    coordinator gone nothing would stop them. The next `dev up` sees them missing and,
    where desired is RUNNING, starts them again."""
    from codehub.adapters.config import DockerConfig
    from codehub.adapters.docker_instance import DockerInstanceController
    from codehub.adapters.errors import CodehubError

    async def go() -> int:
        instances = DockerInstanceController(
            DockerConfig(docker_host=docker_host, scope_labels=_stack_scope(paths))
        )
        try:
            uids = list(await instances.list_instances())
            for uid in uids:
                await instances.delete(uid)
            return len(uids)
        finally:
            await instances.close()

    try:
        count = asyncio.run(go())
    except CodehubError as exc:
        _say(f"    could not stop workspace containers: {exc}")
        return
    if count:
        _say(f"    stopped {count} workspace container(s); their volumes are kept")


def _save_stack(paths: Paths, data: dict[str, Any]) -> None:
    _write_private(paths.stack, json.dumps(data, indent=2) + "\n")


def down(settings: Settings) -> int:
    """Stop coordinator, server and the services of this state directory; 0 on success."""
    paths = _paths(settings)
    try:
        _down(paths, stop_services=True)
    except DevStackError as exc:
        print(f"codehub dev down: {exc}", file=sys.stderr)
        return 1
    return 0


def _down(paths: Paths, stop_services: bool) -> None:
    _step("stopping the coordinator and the API server")
    stopped = [name for name in ("coordinator", "server") if _stop(paths, name)]
    if not stopped:
        _say("    nothing was running")
    stack = _load_stack(paths)
    if stack.get("docker_host"):
        _stop_workspace_containers(paths, str(stack["docker_host"]))
    paths.stack.unlink(missing_ok=True)
    if stop_services:
        _step("stopping the services")
        proc = subprocess.run(
            [str(_script("dev-services")), "down"], env=_services_env(paths), check=False
        )
        if proc.returncode != 0:
            raise DevStackError(f"scripts/dev-services down failed (exit {proc.returncode})")
    _say("done")
