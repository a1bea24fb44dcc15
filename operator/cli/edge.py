"""``codehub edge``: nginx in front of a server replica, as the public HTTPS listener.

The server (started with ``--insecure-http`` on a loopback port and ``CODEHUB_EDGE_SECRET``)
keeps every decision; nginx moves the bytes of plain forwards (docs/proxy.md,
docs/adr/0012-native-edge.md). This command renders nginx's configuration, runs nginx as
its child, keeps one keep-alive pool per running workspace endpoint (asking the server
every few seconds, reloading nginx when the set changes) and stops nginx on exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

from codehub.operator.cli.console import CliError, out

log = logging.getLogger(__name__)

POOL_REFRESH_SECONDS = 2.0


def fetch_pools(app: str, secret: str) -> tuple[str, ...] | None:
    """The server's running loopback endpoints, or None when it cannot say now."""
    from codehub.crd_like.proxy.edge import EDGE_POOLS_PATH, SECRET_HEADER

    request = urllib.request.Request(
        f"http://{app}{EDGE_POOLS_PATH}", headers={SECRET_HEADER: secret}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return tuple(json.load(resp)["endpoints"])
    except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
        log.info("edge: pools not refreshed: %r", exc)
        return None


def cmd_edge(args: argparse.Namespace) -> int:
    from codehub.crd_like.proxy.edge import SECRET_ENV
    from codehub.crd_like.proxy.edge_conf import EdgeConfig
    from codehub.crd_like.proxy.edge_run import EdgeError, EdgeProcess
    from codehub.crd_like.server.tls import ensure_certificate
    from codehub.operator.cli.services import load_settings

    settings = load_settings()
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise CliError(f"{SECRET_ENV} is not set (the server behind the edge needs it too)")
    if settings.tls_cert and settings.tls_key:
        cert, key = Path(settings.tls_cert), Path(settings.tls_key)
    else:
        cert, key = ensure_certificate(settings.state_dir)
    host, port = args.listen
    cfg = EdgeConfig(
        listen=f"{host}:{port}",
        app=args.app,
        cert=cert,
        key=key,
        secret=secret,
        workdir=Path(settings.state_dir) / "edge",
        auth_cache=args.auth_cache,
        workers=args.workers,
    )
    edge = EdgeProcess(replace(cfg, upstreams=fetch_pools(args.app, secret) or ()))
    try:
        edge.start()
    except EdgeError as exc:
        raise CliError(str(exc)) from None
    out(f"codehub edge: https://{cfg.listen}/ -> server http://{args.app} (nginx pid {edge.pid})\n")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.wait(POOL_REFRESH_SECONDS):
            if edge.exited:
                raise CliError(f"nginx exited; see {edge.error_log}")
            pools = fetch_pools(args.app, secret)
            if pools is not None and pools != edge.cfg.upstreams:
                edge.reload(replace(edge.cfg, upstreams=pools))
    finally:
        edge.stop()
    return 0


def add_arguments(p: argparse.ArgumentParser, listen_arg: Callable[[str], tuple[str, int]]) -> None:
    p.add_argument(
        "--listen",
        type=listen_arg,
        default=listen_arg("127.0.0.1:8443"),
        help="the public HTTPS listener (default 127.0.0.1:8443)",
    )
    p.add_argument(
        "--app",
        required=True,
        help="the server replica's loopback listener, 127.0.0.1:PORT (codehub server"
        " --insecure-http --listen 127.0.0.1:PORT)",
    )
    p.add_argument(
        "--auth-cache",
        type=int,
        default=1,
        help="seconds nginx reuses a 'may pass' answer per credential and URL (0: never;"
        " a revoked token or user may pass for up to one second more)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="nginx worker processes (default 0: one per core, nginx's 'auto')",
    )
    p.set_defaults(func=cmd_edge)
