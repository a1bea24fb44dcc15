"""Render a kubeconfig so stock kubectl (and the codehub CLI) reach the codehub API.

The CA is embedded (``certificate-authority-data``) so the file works from any directory
and on another machine; the file holds a bearer token, so writers must create it 0600.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import yaml

CLUSTER_NAME = "codehub"


def render_kubeconfig(server: str, token: str, ca_pem: str | None, namespace: str | None) -> str:
    """A one-cluster, one-user, one-context kubeconfig; ``ca_pem`` None means system trust."""
    cluster: dict[str, Any] = {"server": server.rstrip("/")}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    user = f"{CLUSTER_NAME}-{namespace}" if namespace else f"{CLUSTER_NAME}-user"
    context: dict[str, Any] = {"cluster": CLUSTER_NAME, "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": CLUSTER_NAME, "context": context}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used (missing context, cluster or user)."""


@dataclass(frozen=True)
class Connection:
    """What a kubeconfig's current context says about reaching the server."""

    server: str
    token: str = field(repr=False, default="")
    ca_pem: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    namespace: str | None = None


def parse_kubeconfig(text: str, context: str | None = None) -> Connection:
    """Read the current (or named) context; only token auth is understood."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"not valid YAML: {_first_line(exc)}") from None
    if not isinstance(doc, dict):
        raise KubeconfigError("not a kubeconfig (expected a mapping)")
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise KubeconfigError("no current-context")
    ctx = _named(doc, "contexts", ctx_name, "context")
    cluster = _named(doc, "clusters", ctx.get("cluster"), "cluster")
    user = _named(doc, "users", ctx.get("user"), "user") if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"cluster {ctx.get('cluster')!r} has no server")
    ca_pem = None
    if cluster.get("certificate-authority-data"):
        try:
            ca_pem = base64.b64decode(str(cluster["certificate-authority-data"])).decode()
        except ValueError:
            raise KubeconfigError("certificate-authority-data is not valid base64") from None
    ns = ctx.get("namespace")
    return Connection(
        server=server,
        token=str(user.get("token") or ""),
        ca_pem=ca_pem,
        ca_file=cluster.get("certificate-authority"),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=str(ns) if ns else None,
    )


def _named(doc: dict[str, Any], section: str, name: Any, key: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            return value if isinstance(value, dict) else {}
    raise KubeconfigError(f"{section[:-1]} {name!r} not found")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().split("\n", 1)[0]
