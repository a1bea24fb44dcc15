"""Configuration the CLI prints: a kubeconfig for a user (``kubeconfig``) and the Workspace
CustomResourceDefinition (``crd``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from codehub.crd_like.client.api import ApiError
from codehub.crd_like.client.kubeconfig import render_kubeconfig
from codehub.crd_like.crd import render_crd_yaml
from codehub.operator.cli.arguments import opt
from codehub.operator.cli.connection import Conn, resolve_connection, run, whoami_namespace
from codehub.operator.cli.console import CliError, err, out


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    conn = resolve_connection(args, os.environ)
    token = args.user_token or conn.token
    if not token:
        raise CliError("no token: pass --user-token or --token, or set CODEHUB_TOKEN")
    ca_pem = conn.ca_pem
    if ca_pem is None:
        ca_pem = _find_ca_pem(conn)
    if conn.server.startswith("https://") and ca_pem is None and not conn.insecure:
        err(
            "warning: no CA given (--ca-file / CODEHUB_CA_FILE); the kubeconfig relies on "
            "the system trust store"
        )
    namespace = opt(args, "namespace") or (conn.namespace if token == conn.token else None)
    if not namespace:
        namespace = run(lambda: _whoami_with(conn, token))
    text = render_kubeconfig(conn.server, token, ca_pem, namespace or None)
    if opt(args, "insecure_skip_tls_verify") or (conn.insecure and ca_pem is None):
        text = text.replace("    server:", "    insecure-skip-tls-verify: true\n    server:", 1)
    if args.output and args.output != "-":
        _write_private(Path(args.output).expanduser(), text)
    else:
        out(text)
    return 0


def _write_private(path: Path, text: str) -> None:
    """Mode 0600 from the start: the file holds a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    err(f"kubeconfig written to {path} (use: KUBECONFIG={path} kubectl get ws)")


async def _whoami_with(conn: Conn, token: str) -> str:
    try:
        async with conn.client(token) as api:
            return await whoami_namespace(api) or ""
    except ApiError:
        return ""


def _find_ca_pem(conn: Conn) -> str | None:
    candidates = [conn.ca_file, os.environ.get("CODEHUB_TLS_CERT")]
    state_dir = os.environ.get("CODEHUB_STATE_DIR") or ".codehub-dev"
    candidates.append(str(Path(state_dir) / "tls" / "server.crt"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            try:
                return Path(candidate).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(f"cannot read CA file {candidate}: {exc}") from None
    return None


def cmd_crd(args: argparse.Namespace) -> int:
    text = render_crd_yaml()
    out(text if text.endswith("\n") else text + "\n")
    return 0
