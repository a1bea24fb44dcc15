"""Which server, token, CA and namespace a client command uses, and running it.

Flags win over ``CODEHUB_*`` environment variables, which win over the config file (a
kubeconfig as ``codehub kubeconfig`` writes it); see docs/cli.md, "Connecting".
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from codehub.crd_like.client.api import ApiClient, ApiConnectionError, ApiError
from codehub.crd_like.client.kubeconfig import Connection, KubeconfigError, parse_kubeconfig
from codehub.operator.cli.arguments import opt, truthy
from codehub.operator.cli.console import CliError

T = TypeVar("T")

DEFAULT_CONFIG = "~/.config/codehub/config.yaml"


@dataclass
class Conn:
    server: str
    token: str = field(repr=False)
    ca_file: str | None
    ca_pem: str | None
    insecure: bool
    namespace: str | None

    def client(self, token: str | None = None) -> ApiClient:
        """A client for this server; ``token`` speaks as another identity."""
        return ApiClient(
            self.server,
            self.token if token is None else token,
            ca_file=self.ca_file,
            insecure=self.insecure,
            ca_data=self.ca_pem,
        )


def fatal(exc: ApiError) -> bool:
    """Failures that doom every further request too: no connection, or a refused token."""
    return isinstance(exc, ApiConnectionError) or exc.unauthorized


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        return await coro_fn()

    return asyncio.run(runner())


def config_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    raw = opt(args, "config") or env.get("CODEHUB_CONFIG") or DEFAULT_CONFIG
    return Path(raw).expanduser()


def _read_config(args: argparse.Namespace, env: Mapping[str, str]) -> Connection | None:
    path = config_path(args, env)
    if path.is_file():
        try:
            return parse_kubeconfig(path.read_text(encoding="utf-8"))
        except (KubeconfigError, OSError, UnicodeDecodeError) as exc:
            raise CliError(f"config file {path}: {exc}") from None
    if opt(args, "config") or env.get("CODEHUB_CONFIG"):
        raise CliError(f"config file {path} does not exist")
    return None


def resolve_connection(args: argparse.Namespace, env: Mapping[str, str]) -> Conn:
    """Flags, then the environment, then the config file.

    The config's token, CA and namespace are used only for the server it names, so
    pointing ``--server`` elsewhere never sends that token to another host.
    """
    cfg = _read_config(args, env)
    server = opt(args, "server") or env.get("CODEHUB_SERVER")
    if cfg is not None and server and server.rstrip("/") != cfg.server.rstrip("/"):
        cfg = None
    if not server:
        if cfg is None:
            raise CliError(
                "no server configured: pass --server, set CODEHUB_SERVER, or write a config "
                f"with `codehub kubeconfig -o {DEFAULT_CONFIG}`"
            )
        server = cfg.server
    token = opt(args, "token") or env.get("CODEHUB_TOKEN") or (cfg.token if cfg else "")
    ca_file = opt(args, "ca_file") or env.get("CODEHUB_CA_FILE") or None
    ca_pem = None
    if ca_file is None and cfg is not None:
        ca_file, ca_pem = cfg.ca_file, cfg.ca_pem
    insecure = bool(opt(args, "insecure_skip_tls_verify")) or truthy(
        env.get("CODEHUB_INSECURE_SKIP_TLS_VERIFY")
    )
    if not insecure and cfg is not None:
        insecure = cfg.insecure
    namespace = env.get("CODEHUB_NAMESPACE") or (cfg.namespace if cfg else None)
    return Conn(server, token, ca_file, ca_pem, insecure, namespace)


async def resolve_namespace(api: ApiClient, args: argparse.Namespace, conn: Conn) -> str:
    """-n, then CODEHUB_NAMESPACE / the config's context, then who the server says we are."""
    explicit = opt(args, "namespace")
    if explicit:
        return str(explicit)
    if conn.namespace:
        return conn.namespace
    found = await whoami_namespace(api)
    if found:
        return found
    raise CliError(
        "no namespace: pass -n NAMESPACE, set CODEHUB_NAMESPACE, or use a config written by "
        "`codehub kubeconfig` (it records your namespace)"
    )


async def whoami_namespace(api: ApiClient) -> str | None:
    """The caller's own namespace: SelfSubjectReview if served, else the only visible one."""
    try:
        review = await api.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json_body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        user = (((review or {}).get("status") or {}).get("userInfo") or {}).get("username")
        if isinstance(user, str) and user:
            return user
    except ApiError as exc:
        if fatal(exc):
            raise
    try:
        data = await api.request("GET", "/api/v1/namespaces")
    except ApiError as exc:
        if fatal(exc):
            raise
        return None
    items = (data or {}).get("items") if isinstance(data, dict) else None
    if isinstance(items, list) and len(items) == 1:
        name = (items[0].get("metadata") or {}).get("name")
        return str(name) if name else None
    return None
