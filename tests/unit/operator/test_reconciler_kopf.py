"""The real kopf operator with our handlers, against the real in-process API server
(MemoryStore) and the fake adapters: create, desired changes, deletion with the finalizer.

Waits poll for a state with a generous cap; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
from support.api import ApiFactory, ApiHarness, Identity
from support.workspaces import fake_adapters

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.operator import handlers, kopf_skip
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
        self,
        admin: ApiClient,
        storage: FakeStorageProvider,
        instances: FakeInstanceController,
        ctx: OperatorContext,
        harness: ApiHarness,
    ) -> None:
        self.admin = admin
        self.storage = storage
        self.instances = instances
        self.ctx = ctx
        self.store = harness.store
        self.harness = harness

    def next_term(self) -> ReconcileGate:
        """What a new leader term builds: new clients, context and gate (a stopped kopf
        cancels every task begun after it started, the server's connections included)."""
        self.admin = self.harness.client("root")
        self.ctx = dataclasses.replace(self.ctx, api=self.harness.client("codehub-operator"))
        return ReconcileGate(self.ctx)

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

    async def versions(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """Every version of workspace ``name`` the store has written so far, in order."""
        end = await self.store.current_revision()
        seen: list[tuple[str, dict[str, Any]]] = []
        async for event in self.store.watch("workspaces", since=0, bookmark_interval=0.05):
            if event.object is not None and event.object["metadata"]["name"] == name:
                seen.append((event.type, event.object))
            if event.revision >= end:
                return seen
        return seen


def display_is(value: str) -> Callable[[dict[str, Any] | None], bool]:
    def check(obj: dict[str, Any] | None) -> bool:
        st = (obj or {}).get("status") or {}
        return st.get("display") == value and st.get("operation") == "NONE"

    return check


@contextlib.asynccontextmanager
async def running_kopf(ctx: OperatorContext, gate: ReconcileGate) -> AsyncIterator[None]:
    """One kopf operator (one term): a fresh registry, so a fresh kopf configuration."""
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
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 20)


async def start_stack(make_api: ApiFactory, **config: Any) -> tuple[Stack, ReconcileGate]:
    api = await make_api(
        identities=[
            Identity(OPERATOR, "codehub-operator", "op", ("codehub:operator",)),
            Identity(ADMIN, "root", "root", ("codehub:admin",)),
        ],
        bookmark_interval=2.0,
        **config,
    )
    instances, storage = fake_adapters()
    settings = Settings(
        server=api.url,
        token=OPERATOR,
        reconciler_interval=0.5,
        reconciler_retry_backoff=0.2,
        health_monitor_interval=0.5,
    )
    ctx = OperatorContext(
        settings=settings,
        api=api.client("codehub-operator"),
        instances=instances,
        storage=storage,
        metrics=Metrics(),
    )
    stack = Stack(api.client("root"), storage, instances, ctx, api)
    return stack, ReconcileGate(ctx)


@pytest.fixture
async def stack(make_api: ApiFactory) -> AsyncIterator[Stack]:
    """What the coordinator's composition root builds: one gate, components around it."""
    built, gate = await start_stack(make_api)
    monitor = HealthMonitor(built.ctx, gate)
    net = SafetyNet(built.ctx, gate)
    monitor_task = asyncio.gather(monitor.run(), net.run(), gate.run())
    try:
        async with running_kopf(built.ctx, gate):
            yield built
    finally:
        monitor_task.cancel()
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
    skipped = kopf_skip.skipped()
    # the container vanishes behind the operator's back: no spec change, no kopf update
    # event; the HealthMonitor observes STANDBY and the safety net starts it again
    await stack.instances.remove_behind_back(uid)

    def restarted(obj: dict[str, Any] | None) -> bool:
        container = stack.instances.containers.get(uid)
        return bool(container and container.container_id != first) and display_is("RUNNING")(obj)

    await stack.wait_for("drift", restarted)
    assert stack.instances.containers[uid].container_id != first
    assert stack.instances.calls["start"] == 2
    # the status writes of the repair never reached kopf's machinery (kopf_skip), and
    # the repair came anyway: status changes are reconciled through the gate
    assert kopf_skip.skipped() > skipped


def metadata_writes(versions: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The writes that changed a workspace's metadata but not its spec: kopf's own (its
    finalizer, its annotations) and the finalizer's removal. Status writes and a user's
    spec change (with the server's stamps on it) are not among them."""

    def meta(obj: dict[str, Any]) -> dict[str, Any]:
        skip = ("resourceVersion", "managedFields")
        return {k: v for k, v in obj["metadata"].items() if k not in skip}

    return [
        after["metadata"]
        for (_, before), (kind, after) in itertools.pairwise(versions)
        if kind == "MODIFIED" and after["spec"] == before["spec"] and meta(after) != meta(before)
    ]


@contextlib.asynccontextmanager
async def kopf_alone(make_api: ApiFactory) -> AsyncIterator[tuple[Stack, ReconcileGate]]:
    """kopf and the gate only (no HealthMonitor, no safety net: nothing else reconciles
    or writes), on a server that puts the finalizer on at create, as deployed."""
    built, gate = await start_stack(make_api, finalizer_on_create=True)
    yield built, gate


async def test_kopf_adds_only_its_finalizer_when_the_server_does_not(stack: Stack) -> None:
    await stack.admin.create(NS, manifest("own", "RUNNING"))
    await stack.wait_for("own", display_is("RUNNING"))
    await stack.admin.patch_merge(NS, "own", {"spec": {"desired_state": "STANDBY"}})
    obj = await stack.wait_for("own", display_is("STANDBY"))
    assert obj is not None
    writes = metadata_writes(await stack.versions("own"))
    assert [w["finalizers"] for w in writes] == [[handlers.FINALIZER]]  # the finalizer alone
    assert not [a for a in obj["metadata"]["annotations"] if a.startswith("kopf.")]


async def test_a_handled_create_and_update_cost_kopf_no_write(make_api: ApiFactory) -> None:
    async with kopf_alone(make_api) as (stack, gate), running_kopf(stack.ctx, gate):
        await stack.admin.create(NS, manifest("quiet", "RUNNING"))
        await stack.wait_for("quiet", display_is("RUNNING"))
        await stack.admin.patch_merge(NS, "quiet", {"spec": {"desired_state": "STANDBY"}})
        obj = await stack.wait_for("quiet", display_is("STANDBY"))
        assert obj is not None
        versions = await stack.versions("quiet")
        assert metadata_writes(versions) == []
        # ADDED, claim, PROVISIONING done + STARTING claimed, STARTING done, the user's
        # patch, claim STOPPING, STOPPING done: the reconciler's and the user's writes only
        assert len(versions) == 7
        assert not [a for a in obj["metadata"]["annotations"] if a.startswith("kopf.")]
        # the update handler still gets kopf's diff
        changes = stack.ctx.metrics.registry.get_sample_value(
            "codehub_desired_state_changes_total", {"source": "api"}
        )
        assert changes == 1


async def test_deletion_waits_for_the_finalizer_until_the_volume_is_gone(
    make_api: ApiFactory,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(*_: Any, **__: Any) -> None:
        entered.set()
        await release.wait()

    async with kopf_alone(make_api) as (stack, gate), running_kopf(stack.ctx, gate):
        created = await stack.admin.create(NS, manifest("held", "STANDBY"))
        uid = created["metadata"]["uid"]
        await stack.wait_for("held", display_is("STANDBY"))
        stack.storage.hook("delete_volume", before=held)
        await stack.admin.delete(NS, "held")
        await asyncio.wait_for(entered.wait(), 60)
        obj = await stack.admin.get(NS, "held")
        assert obj["metadata"].get("deletionTimestamp")
        assert obj["metadata"]["finalizers"] == [handlers.FINALIZER]
        assert uid in stack.storage.volumes
        release.set()
        await stack.wait_for("held", lambda o: o is None)
        assert uid not in stack.storage.volumes


async def test_a_new_term_reconciles_every_workspace(make_api: ApiFactory) -> None:
    """A new kopf remembers nothing of the last one: every workspace is new to it, and
    each is reconciled once (kopf's create cause), as a resume would; including what
    changed while no operator ran. Nothing else here reconciles (no safety net)."""
    async with kopf_alone(make_api) as (stack, gate):
        async with running_kopf(stack.ctx, gate):
            wishes = {"kept": "RUNNING", "moved": "RUNNING", "doomed": "STANDBY"}
            uids = {}
            for name, wish in wishes.items():
                uids[name] = (await stack.admin.create(NS, manifest(name, wish)))["metadata"]["uid"]
            for name, wish in wishes.items():
                await stack.wait_for(name, display_is(wish))
        gate = stack.next_term()
        # no operator: a container vanishes, a wish changes, a workspace is deleted
        await stack.instances.remove_behind_back(uids["kept"])
        await stack.admin.patch_merge(NS, "moved", {"spec": {"desired_state": "STANDBY"}})
        await stack.admin.delete(NS, "doomed")
        assert stack.instances.calls["start"] == 2
        async with running_kopf(stack.ctx, gate):
            await stack.wait_for("moved", display_is("STANDBY"))
            await stack.wait_for("doomed", lambda o: o is None)

            def restarted(obj: dict[str, Any] | None) -> bool:
                return uids["kept"] in stack.instances.containers and display_is("RUNNING")(obj)

            await stack.wait_for("kept", restarted)
        assert stack.instances.calls["start"] == 3
        assert uids["doomed"] not in stack.storage.volumes
        for name in ("kept", "moved"):
            assert metadata_writes(await stack.versions(name)) == []
