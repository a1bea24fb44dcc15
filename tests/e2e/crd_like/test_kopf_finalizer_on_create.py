"""kopf and a finalizer the API server put on at create (``CODEHUB_FINALIZER_ON_CREATE``):
kopf finds its finalizer present and runs the create handler on the ADDED event, on the
object exactly as created — no PATCH of its own first; without the setting it PATCHes the
finalizer and handles the next version (docs/adr/0009-lifecycle-and-scale-performance.md).
Deletion still waits for the delete handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kopf_kit import OperatorThread, add_login, eventually

from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.operator.handlers import FINALIZER, configure_kopf

GROUP, VERSION, PLURAL = "codehub.io", "v1alpha1", "workspaces"


def make_registry(server: Any, seen: dict[str, list[Any]]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        settings.watching.server_timeout = 60
        settings.watching.client_timeout = 90

    add_login(registry, server)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def on_create(body: kopf.Body, **_: Any) -> None:
        seen["create"].append(
            (body["metadata"]["resourceVersion"], list(body["metadata"].get("finalizers") or []))
        )

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        seen["delete"].append(name)

    return registry


@pytest.mark.parametrize("on_create", [True, False])
async def test_create_handler_runs_on_the_created_version_when_the_server_adds_the_finalizer(
    api_server_factory: Callable[..., Any], on_create: bool
) -> None:
    server = api_server_factory(
        extra_env={"CODEHUB_FINALIZER_ON_CREATE": "1" if on_create else "0"}, tag="kopf-fin"
    )
    seen: dict[str, list[Any]] = {"create": [], "delete": []}
    op = OperatorThread(make_registry(server, seen))
    op.start()
    try:
        async with ApiClient(server.url, server.tokens["alice"], server.ca_file) as alice:
            created = await alice.create(
                "alice",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Workspace",
                    "metadata": {"name": "fin"},
                    "spec": {"desired_state": "STANDBY"},
                },
            )
            rv, finalizers = (await eventually(lambda: seen["create"], "create handler"))[0]
            if on_create:
                assert created["metadata"]["finalizers"] == [FINALIZER]
                assert rv == created["metadata"]["resourceVersion"]  # no PATCH before it
            else:
                assert "finalizers" not in created["metadata"]
                assert rv != created["metadata"]["resourceVersion"]  # kopf PATCHed first
            assert finalizers == [FINALIZER]

            await alice.delete("alice", "fin")
            await eventually(lambda: seen["delete"], "delete handler")

            async def gone() -> bool:
                try:
                    await alice.get("alice", "fin")
                except ApiError as exc:
                    return exc.not_found
                return False

            await eventually(gone, "deletion once kopf removed its finalizer")
    finally:
        op.stop()
    assert op.error is None, op.error
