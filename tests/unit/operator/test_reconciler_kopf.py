"""The real kopf operator with our handlers, against the real in-process API server
(MemoryStore) and the fake adapters: create, desired changes, deletion with the finalizer.

Waits poll for a state with a generous cap; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
from support.api import ApiFactory, Identity
from support.workspaces import fake_adapters

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.operator import handlers
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.safety_net import SafetyNet
from codehub.operator.settings import Settings

NS = "carol"
OPERATOR = "kopf-operator"
ADMIN = "kopf-admin"


class Stack:
    def __init__(
        self, admin: ApiClient, storage: FakeStorageProvider, instances: FakeInstanceController
    ) -> None:
        self.admin = admin
        self.storage = storage
        self.instances = instances

    async def wait_for(
        self, name: str, check: Callable[[dict[str, Any] | None], bool], cap: float = 60.0
    ) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cap
        obj: dict[str, Any] | None = None
        while loop.time() < deadline:
            try:
                obj = await self.admin.get(NS, name)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                obj = None
            if check(obj):
                return obj
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} never reached the expected state; last: {obj}")


def display_is(value: str) -> Callable[[dict[str, Any] | None], bool]:
    def check(obj: dict[str, Any] | None) -> bool:
        st = (obj or {}).get("status") or {}
        return st.get("display") == value and st.get("operation") == "NONE"

    return check


@pytest.fixture
async def stack(make_api: ApiFactory) -> AsyncIterator[Stack]:
    api = await make_api(
        identities=[
            Identity(OPERATOR, "codehub-operator", "op", ("codehub:operator",)),
            Identity(ADMIN, "root", "root", ("codehub:admin",)),
        ],
        bookmark_interval=2.0,
    )
    url = api.url
    operator_client = api.client("codehub-operator")
    admin = api.client("root")
    instances, storage = fake_adapters()
    settings = Settings(
        server=url,
        token=OPERATOR,
        reconciler_interval=0.5,
        reconciler_retry_backoff=0.2,
        health_monitor_interval=0.5,
    )
    ctx = OperatorContext(
        settings=settings,
        api=operator_client,
        instances=instances,
        storage=storage,
        metrics=Metrics(),
    )
    # what the coordinator's composition root builds: one gate, components around it
    gate = ReconcileGate(ctx)
    monitor = HealthMonitor(ctx, gate)
    net = SafetyNet(ctx, gate)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, ctx, gate)
    stop = asyncio.Event()
    ready = asyncio.Event()
    logging.getLogger("kopf").setLevel(logging.WARNING)
    task = asyncio.create_task(
        kopf.operator(
            registry=registry, standalone=True, clusterwide=True, stop_flag=stop, ready_flag=ready
        )
    )
    monitor_task = asyncio.gather(monitor.run(), net.run(), gate.run())
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield Stack(admin, storage, instances)
    finally:
        stop.set()
        monitor_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 20)
        with contextlib.suppress(asyncio.CancelledError):
            await monitor_task


def manifest(name: str, desired: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"desired_state": desired},
    }


async def test_kopf_drives_the_lifecycle_and_deletion(stack: Stack) -> None:
    created = await stack.admin.create(NS, manifest("life", "RUNNING"))
    uid = created["metadata"]["uid"]
    obj = await stack.wait_for("life", display_is("RUNNING"))
    assert obj is not None
    assert handlers.FINALIZER in obj["metadata"].get("finalizers", [])

    await stack.admin.patch_merge(NS, "life", {"spec": {"desired_state": "PENDING"}})
    obj = await stack.wait_for("life", display_is("ARCHIVED"))
    assert obj is not None
    assert obj["status"]["archive_key"].startswith(f"archives/{uid}/")
    assert uid not in stack.storage.volumes

    await stack.admin.patch_merge(NS, "life", {"spec": {"desired_state": "STANDBY"}})
    await stack.wait_for("life", display_is("STANDBY"))
    assert uid in stack.storage.volumes

    await stack.admin.delete(NS, "life")
    await stack.wait_for("life", lambda o: o is None)
    assert uid not in stack.storage.volumes
    reasons = [e.get("reason") for e in await stack.admin.list_events(NS, "life")]
    assert "OperationCompleted" in reasons


async def test_safety_net_repairs_drift_without_any_spec_change(stack: Stack) -> None:
    created = await stack.admin.create(NS, manifest("drift", "RUNNING"))
    uid = created["metadata"]["uid"]
    await stack.wait_for("drift", display_is("RUNNING"))
    first = stack.instances.containers[uid].container_id
    # the container vanishes behind the operator's back: no spec change, no kopf update
    # event; the HealthMonitor observes STANDBY and the safety net starts it again
    await stack.instances.remove_behind_back(uid)

    def restarted(obj: dict[str, Any] | None) -> bool:
        container = stack.instances.containers.get(uid)
        return bool(container and container.container_id != first) and display_is("RUNNING")(obj)

    await stack.wait_for("drift", restarted)
    assert stack.instances.containers[uid].container_id != first
    assert stack.instances.calls["start"] == 2
