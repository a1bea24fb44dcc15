"""Workspaces as the operator's tests set them up: a manifest, created through the API
with an optional status written over it, and the fake adapters sharing one volume set."""

from __future__ import annotations

from typing import Any

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.identity import API_VERSION, KIND


def manifest(ns: str, name: str, desired: str = "PENDING", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"desired_state": desired, **spec},
    }


async def create_workspace(
    client: ApiClient,
    ns: str,
    name: str,
    desired: str = "PENDING",
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """Create the workspace; with ``status``, add it as the whole status (a JSON patch on
    the status subresource, as a writer that owns every field would)."""
    obj = await client.create(ns, manifest(ns, name, desired, **spec))
    if status:
        ops = [{"op": "add", "path": "/status", "value": status}]
        obj = await client.patch_json(ns, name, ops, status=True)
    return obj


def fake_adapters() -> tuple[FakeInstanceController, FakeStorageProvider]:
    """A fake engine whose containers see the fake storage's volumes."""
    storage = FakeStorageProvider()
    return FakeInstanceController(volume_exists=lambda uid: uid in storage.volumes), storage
