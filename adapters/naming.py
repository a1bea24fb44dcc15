"""The names of docs/naming.md, identical in every adapter: the one place that spells them."""

from __future__ import annotations

LABEL_WORKSPACE_ID = "codehub.io/workspace-id"
LABEL_NAMESPACE = "codehub.io/namespace"
LABEL_NAME = "codehub.io/name"
LABEL_ROLE = "codehub.io/role"  # "workspace" | "job"
HOME_MOUNT = "/home/coder"
APP_PORT = 8080
WORKSPACE_USER = "1000:1000"


def container_name(uid: str) -> str:
    return f"ws-{uid}"


def volume_name(uid: str) -> str:
    return f"ws-{uid}-home"


def archive_prefix(uid: str, op_id: str) -> str:
    return f"archives/{uid}/{op_id}/"


def archive_key(uid: str, op_id: str) -> str:
    return f"{archive_prefix(uid, op_id)}home.tar.gz"


def meta_key(archive_key: str) -> str:
    return f"{archive_key}.meta"


def workspace_labels(uid: str, namespace: str = "", name: str = "") -> dict[str, str]:
    labels = {LABEL_WORKSPACE_ID: uid}
    if namespace:
        labels[LABEL_NAMESPACE] = namespace
    if name:
        labels[LABEL_NAME] = name
    return labels
