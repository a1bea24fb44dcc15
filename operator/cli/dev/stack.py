"""``dev up`` and ``dev down``: bring the stack up step by step (reusing what already runs),
and take it down again. Both are idempotent."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from codehub.crd_like.client.kubeconfig import render_kubeconfig
from codehub.crd_like.server.tls import ensure_certificate
from codehub.operator.cli.dev import processes as proc
from codehub.operator.cli.dev.demo import Freshness, apply_demo, demo_link, follow, usage
from codehub.operator.cli.dev.state import (
    DEMO_NAMESPACE,
    IDENTITIES,
    DevStackError,
    Paths,
    ensure_tokens,
    load_stack,
    save_stack,
    say,
    stack_scope,
    state_paths,
    step,
    write_private,
)
from codehub.operator.settings import Settings
from codehub.vocabulary.timestamps import utc_now


@dataclass(frozen=True)
class _Base:
    """What the first steps establish: the services' environment, tokens and TLS files."""

    env: dict[str, str]
    services_were_up: bool
    tokens: dict[str, str]
    cert: Path
    key: Path


def up(settings: Settings, detach: bool) -> int:
    """Bring the stack up (reusing what already runs); 0 on success."""
    paths = state_paths(settings)
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
    base = _prepare(paths)
    stack = load_stack(paths)
    if not stack:  # processes from an earlier run whose ports are unknown
        for name in ("coordinator", "server"):
            proc.stop(paths, name)
    server_port = int(stack.get("server_port") or proc.free_port())
    coord_port = int(stack.get("coordinator_port") or proc.free_port())
    server_url = f"https://127.0.0.1:{server_port}"
    common = _child_env(paths, base, server_url)
    _start_server(paths, common, server_port)
    edge_ports = (
        int(stack.get("edge_app_port") or proc.free_port()),
        int(stack.get("edge_port") or proc.free_port()),
    )
    edge_url = _start_edge(paths, common, *edge_ports)
    coord_url, fresh = _start_coordinator(paths, settings, common, base, coord_port)
    save_stack(
        paths,
        {
            "server_port": server_port,
            "coordinator_port": coord_port,
            "edge_app_port": edge_ports[0],
            "edge_port": edge_ports[1],
            "services_were_up": bool(stack.get("services_were_up", base.services_were_up)),
            "docker_host": base.env.get("DOCKER_HOST", ""),
        },
    )
    _write_client_config(paths, base, server_url)

    step("demo workspace")
    token, ca = base.tokens[DEMO_NAMESPACE], str(base.cert)
    ns, name = asyncio.run(apply_demo(server_url, token, ca))
    asyncio.run(follow(server_url, token, ca, ns, name, fresh))
    link = asyncio.run(demo_link(server_url, token, ca, ns, name))
    if edge_url and link:
        link = edge_url + link.removeprefix(server_url)
    usage(paths, edge_url or server_url, coord_url, ns, name, detach, link)
    if detach:
        return 0
    return _foreground(paths, base.services_were_up)


def _prepare(paths: Paths) -> _Base:
    step(f"services (PostgreSQL, SeaweedFS S3, Docker) — state in {paths.root}")
    services_were_up = proc.services_running(paths)
    env = {**os.environ, **proc.services_up(paths)}

    step("local images")
    proc.build_images(env)

    step("identities and TLS")
    tokens = ensure_tokens(paths)
    cert, key = ensure_certificate(paths.root)
    say(f"    tokens for {', '.join(u for u, _ in IDENTITIES)} in {paths.tokens} (mode 600)")
    return _Base(env, services_were_up, tokens, Path(cert), Path(key))


def _child_env(paths: Paths, base: _Base, server_url: str) -> dict[str, str]:
    """The environment of the server and coordinator (no client token: each gets its own)."""
    env = {
        **base.env,
        "CODEHUB_STATE_DIR": str(paths.root),
        "CODEHUB_TOKEN_FILE": str(paths.tokens),
        "CODEHUB_TLS_CERT": str(base.cert),
        "CODEHUB_TLS_KEY": str(base.key),
        "CODEHUB_CA_FILE": str(base.cert),
        "CODEHUB_SERVER": server_url,
        "CODEHUB_SCOPE_LABELS": ",".join(f"{k}={v}" for k, v in stack_scope(paths).items()),
        # The stack always runs the operator: new workspaces carry its finalizer at once.
        "CODEHUB_FINALIZER_ON_CREATE": "true",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CODEHUB_TOKEN", None)
    return env


def _start_server(paths: Paths, env: dict[str, str], port: int) -> None:
    step("API server")
    proc.migrate(env)
    url = env["CODEHUB_SERVER"]
    pid = proc.running(paths, "server")
    if pid is None:
        pid = proc.spawn(paths, "server", ["server", "--listen", f"127.0.0.1:{port}"], env)
    log = paths.log("server")
    proc.wait_http(f"{url}/healthz", env["CODEHUB_CA_FILE"], "the API server", pid, log)
    say(f"    {url} (pid {pid}, log {paths.log('server')})")


def _start_edge(paths: Paths, env: dict[str, str], app_port: int, port: int) -> str | None:
    """nginx in front of a plain-HTTP replica, when nginx is installed (docs/proxy.md,
    "The native edge"); its URL, the one to open. The API server above stays as it was."""
    from codehub.crd_like.proxy.edge import SECRET_ENV
    from codehub.crd_like.proxy.edge_run import nginx_binary

    if nginx_binary() is None:
        return None
    step("native edge (nginx)")
    secret_file = paths.root / "edge-secret"
    if not secret_file.is_file():
        write_private(secret_file, secrets.token_urlsafe(32))
    edge_env = {**env, SECRET_ENV: secret_file.read_text().strip()}
    app = f"127.0.0.1:{app_port}"
    pid = proc.running(paths, "edge-app")
    if pid is None:
        args = ["server", "--insecure-http", "--listen", app]
        pid = proc.spawn(paths, "edge-app", args, edge_env)
    proc.wait_http(f"http://{app}/healthz", None, "the edge's server", pid, paths.log("edge-app"))
    url = f"https://127.0.0.1:{port}"
    pid = proc.running(paths, "edge")
    if pid is None:
        args = ["edge", "--app", app, "--listen", f"127.0.0.1:{port}"]
        pid = proc.spawn(paths, "edge", args, edge_env)
    ca = env["CODEHUB_CA_FILE"]
    proc.wait_http(f"{url}/healthz", ca, "the native edge", pid, paths.log("edge"))
    say(f"    {url} -> {app} (pid {pid}, log {paths.log('edge')})")
    return url


def _start_coordinator(
    paths: Paths, settings: Settings, common: dict[str, str], base: _Base, port: int
) -> tuple[str, Freshness]:
    """Start the coordinator unless it runs; its URL and when the demo's status is current."""
    step("coordinator")
    env = {**common, "CODEHUB_TOKEN": base.tokens["operator"]}
    fresh = Freshness()
    pid = proc.running(paths, "coordinator")
    if pid is None:
        fresh = Freshness(utc_now(), 2 * settings.health_monitor_interval, time.monotonic())
        pid = proc.spawn(
            paths, "coordinator", ["coordinator", "--listen", f"127.0.0.1:{port}"], env
        )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/healthz", None, "the coordinator", pid, paths.log("coordinator"))
    say(f"    {url} (pid {pid}, log {paths.log('coordinator')})")
    return url, fresh


def _write_client_config(paths: Paths, base: _Base, server_url: str) -> None:
    """A kubeconfig per identity, and cli.env to source as the demo user."""
    step("client configuration")
    ca_pem = base.cert.read_text()
    for user, _ in IDENTITIES:
        ns = user if user == DEMO_NAMESPACE else None
        write_private(
            paths.kubeconfig(user), render_kubeconfig(server_url, base.tokens[user], ca_pem, ns)
        )
    exports = (
        ("CODEHUB_SERVER", server_url),
        ("CODEHUB_TOKEN", base.tokens[DEMO_NAMESPACE]),
        ("CODEHUB_CA_FILE", str(base.cert)),
        ("CODEHUB_NAMESPACE", DEMO_NAMESPACE),
        ("KUBECONFIG", str(paths.kubeconfig(DEMO_NAMESPACE))),
    )
    write_private(paths.cli_env, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports))


def _foreground(paths: Paths, services_were_up: bool) -> int:
    """Run until Ctrl-C, SIGTERM or a child's exit, then stop what was started."""
    say("The stack runs in the foreground; press Ctrl-C to stop it.")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while proc.running(paths, "server") and proc.running(paths, "coordinator"):
            time.sleep(1)
        print("a background process exited; see the logs above. Stopping.", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    say("\nstopping the dev stack")
    _down(paths, stop_services=not services_were_up)
    return code


def _stop_workspace_containers(paths: Paths, docker_host: str) -> None:
    """Remove this stack's workspace containers (volumes stay, data is safe): with the
    coordinator gone nothing would stop them. The next `dev up` sees them missing and,
    where desired is RUNNING, starts them again."""
    from codehub.adapters.config import DockerConfig
    from codehub.adapters.docker_instance import DockerInstanceController
    from codehub.adapters.errors import CodehubError

    async def go() -> int:
        instances = DockerInstanceController(
            DockerConfig(docker_host=docker_host, scope_labels=stack_scope(paths))
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
        say(f"    could not stop workspace containers: {exc}")
        return
    if count:
        say(f"    stopped {count} workspace container(s); their volumes are kept")


def down(settings: Settings) -> int:
    """Stop coordinator, server and the services of this state directory; 0 on success."""
    paths = state_paths(settings)
    try:
        _down(paths, stop_services=True)
    except DevStackError as exc:
        print(f"codehub dev down: {exc}", file=sys.stderr)
        return 1
    return 0


def _down(paths: Paths, stop_services: bool) -> None:
    step("stopping the coordinator and the API server")
    names = ("coordinator", "edge", "edge-app", "server")
    stopped = [name for name in names if proc.stop(paths, name)]
    if not stopped:
        say("    nothing was running")
    stack = load_stack(paths)
    if stack.get("docker_host"):
        _stop_workspace_containers(paths, str(stack["docker_host"]))
    paths.stack.unlink(missing_ok=True)
    if stop_services:
        step("stopping the services")
        proc.services_down(paths)
    say("done")
