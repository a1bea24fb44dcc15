"""kopf and a finalizer the API server put on at create (``CODEHUB_FINALIZER_ON_CREATE``):
kopf finds its finalizer present and runs the create handler on the ADDED event, on the
object exactly as created — no PATCH of its own first; without the setting it PATCHes the
finalizer and handles the next version (docs/adr/0009-lifecycle-and-scale-performance.md).
Deletion still waits for the delete handler."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import pytest

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

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=server.url,
            token=server.tokens["operator"],
            ca_path=server.ca_file,
            scheme="Bearer",
        )

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def on_create(body: kopf.Body, **_: Any) -> None:
        seen["create"].append(
            (body["metadata"]["resourceVersion"], list(body["metadata"].get("finalizers") or []))
        )

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        seen["delete"].append(name)

    return registry


async def eventually(check: Callable[[], Any], what: str, limit: float = 30.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("on_create", [True, False])
async def test_create_handler_runs_on_the_created_version_when_the_server_adds_the_finalizer(
    api_server_factory: Callable[..., Any], on_create: bool
) -> None:
    server = api_server_factory(
        extra_env={"CODEHUB_FINALIZER_ON_CREATE": "1" if on_create else "0"}, tag="kopf-fin"
    )
    seen: dict[str, list[Any]] = {"create": [], "delete": []}
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=make_registry(server, seen),
                    standalone=True,
                    clusterwide=True,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "kopf did not become ready"
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
        stop.set()
        thread.join(60)
    assert not errors, errors
