"""Real kopf against the real API server (docs/architecture.md): the shim is only useful if
the unmodified framework works on it — discovery, list+watch, finalizers added and
removed with its guarded JSON Patch, /status patches, events, resume on restart.

kopf runs in-process in its own thread and event loop (as ``kopf.run`` would), with a
login handler pointing at the server with the operator's token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from kopf_kit import OperatorThread, add_login, eventually

from codehub.crd_like.client.api import ApiClient, ApiError

GROUP, VERSION, PLURAL = "codehub.io", "v1alpha1", "workspaces"
FINALIZER = "test.codehub.io/kopf-shim"


@dataclass
class Seen:
    events: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, name: str, detail: Any = None) -> None:
        with self.lock:
            self.events.append((kind, name, detail))

    def of(self, kind: str, name: str) -> list[Any]:
        with self.lock:
            return [d for k, n, d in self.events if k == kind and n == name]


def make_registry(server: Any, seen: Seen) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.watching.server_timeout = 60
        settings.watching.client_timeout = 90
        settings.networking.request_timeout = 30
        settings.posting.level = 20

    add_login(registry, server)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def on_create(
        name: str, spec: Any, body: kopf.Body, patch: kopf.Patch, **_: Any
    ) -> dict[str, Any]:
        seen.add("create", name, spec.get("desired_state"))
        patch.status["observed_status"] = "PENDING"
        kopf.info(body, reason="Observed", message=f"test operator saw {name}")
        return {"handled": True}

    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    def on_update(name: str, diff: Any, **_: Any) -> None:
        seen.add("update", name, [(op, list(path), new) for op, path, _old, new in diff])

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    def on_resume(name: str, **_: Any) -> None:
        seen.add("resume", name)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        seen.add("delete", name)

    return registry


@pytest.fixture
def run_operator(api_server: Any) -> Iterator[Callable[[Seen], OperatorThread]]:
    running: list[OperatorThread] = []

    def start(seen: Seen) -> OperatorThread:
        op = OperatorThread(make_registry(api_server, seen))
        op.start()
        running.append(op)
        return op

    yield start
    for op in running:
        if op.thread.is_alive():
            op.stop()


async def test_kopf_create_update_resume_delete(
    api_server: Any, run_operator: Callable[[Seen], OperatorThread]
) -> None:
    ns, name = "alice", "kopf-shim"
    async with ApiClient(api_server.url, api_server.tokens["alice"], api_server.ca_file) as alice:
        seen = Seen()
        op = run_operator(seen)
        await alice.create(
            ns,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Workspace",
                "metadata": {"name": name},
                "spec": {"desired_state": "STANDBY"},
            },
        )
        assert await eventually(lambda: seen.of("create", name), "create handler") == ["STANDBY"]

        async def finalized_and_status() -> bool:
            obj = await alice.get(ns, name)
            return FINALIZER in (obj["metadata"].get("finalizers") or []) and (
                obj.get("status", {}).get("observed_status") == "PENDING"
            )

        await eventually(finalized_and_status, "finalizer and status from kopf")

        await alice.patch_merge(ns, name, {"spec": {"desired_state": "PENDING"}})
        updates = await eventually(lambda: seen.of("update", name), "update handler")
        assert ("change", ["spec", "desired_state"], "PENDING") in updates[0]

        events = await eventually(
            lambda: alice.list_events(ns, involved_name=name), "kopf's event posted"
        )
        assert [e["reason"] for e in events] == ["Observed"]
        assert events[0]["involvedObject"]["name"] == name

        op.stop()
        assert op.error is None, op.error

        # A new operator process finds the existing object and resumes it.
        seen2 = Seen()
        op2 = run_operator(seen2)
        await eventually(lambda: seen2.of("resume", name), "resume handler")
        assert seen2.of("create", name) == []

        deleted = await alice.delete(ns, name)
        assert deleted["metadata"].get("deletionTimestamp")
        await eventually(lambda: seen2.of("delete", name), "delete handler")

        async def gone() -> bool:
            try:
                await alice.get(ns, name)
            except ApiError as exc:
                return exc.status == 404
            return False

        await eventually(gone, "deletion to complete after kopf removed its finalizer")
        op2.stop()
        assert op2.error is None, op2.error


async def test_kopf_keeps_working_across_an_api_server_restart(
    api_server_factory: Callable[..., Any],
) -> None:
    server = api_server_factory(tag="kopfrestart")
    seen = Seen()
    op = OperatorThread(make_registry(server, seen))
    op.start()
    try:
        async with ApiClient(server.url, server.tokens["bob"], server.ca_file) as bob:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Workspace",
                "metadata": {"name": "survivor"},
                "spec": {"desired_state": "PENDING"},
            }
            await bob.create("bob", body)
            await eventually(lambda: seen.of("create", "survivor"), "create handler")
        server.restart()
        # A fresh client: the old one's pooled connection died with the old server.
        async with ApiClient(server.url, server.tokens["bob"], server.ca_file) as bob:
            await bob.patch_merge("bob", "survivor", {"spec": {"desired_state": "STANDBY"}})
            updates = await eventually(
                lambda: seen.of("update", "survivor"), "update after the restart", limit=90
            )
            assert ("change", ["spec", "desired_state"], "STANDBY") in updates[0]
    finally:
        op.stop()
    assert op.error is None, op.error
