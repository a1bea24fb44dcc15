"""The TTL Manager on the real API over PostgreSQL, with the proxy's real activity
tracker and the reconcile gate over the fake adapters: RUNNING -> STANDBY -> ARCHIVED
by TTL, an open connection keeping a workspace up, a user's change winning."""

from __future__ import annotations

from typing import Any

import pytest
from support.api import ApiFactory, ApiHarness

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.models import IdleAction
from codehub.crd_like.proxy import PROXY_KEY, WorkspaceRef
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings
from codehub.operator.ttl_manager import TtlManager
from codehub.operator.ttl_policy import CHANGED_AT_ANNOTATION, SOURCE_ANNOTATION
from codehub.vocabulary.timestamps import utc_now

NS = "alice"


class Stack:
    def __init__(self, api: ApiHarness) -> None:
        self.api = api
        self.client = api.client("operator")
        self.user = api.client("alice")
        storage = FakeStorageProvider()
        self.clock = FakeClock(utc_now())
        self.ctx = OperatorContext(
            settings=Settings(),
            api=self.client,
            instances=FakeInstanceController(volume_exists=lambda uid: uid in storage.volumes),
            storage=storage,
            clock=self.clock,
            metrics=Metrics(),
        )
        self.gate = ReconcileGate(self.ctx)
        self.ttl = TtlManager(self.ctx)
        self.tracker = api.http.app[PROXY_KEY].tracker
        self.tracker.clock = self.clock.now  # the proxy's activity times on the same clock

    async def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"desired_state": "RUNNING", **spec},
        }
        obj = await self.user.create(NS, body)
        await self.converge(name)
        return obj

    async def converge(self, name: str) -> dict[str, Any]:
        """What the coordinator does after a desired change: reconcile through the gate."""
        self.gate.add(NS, name)
        await self.gate.drain()
        return await self.client.get(NS, name)

    async def reasons(self, name: str) -> list[str]:
        return [str(e.get("reason")) for e in await self.client.list_events(NS, name)]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.ctx.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
async def stack(make_api: ApiFactory) -> Stack:
    api = await make_api("postgres", activity_interval=0.0)
    return Stack(api)


async def test_running_to_standby_to_archived_by_ttl(stack: Stack) -> None:
    obj = await stack.create("idle", standby_ttl_seconds=300, archive_ttl_seconds=3600)
    assert obj["spec"]["desired_state"] == "RUNNING"
    assert (await stack.client.get(NS, "idle"))["status"]["observed_status"] == "RUNNING"
    await stack.ttl.pass_once()
    announced = (await stack.client.get(NS, "idle"))["status"]
    assert announced["idle_action"] == "standby"

    stack.clock.advance(301)
    assert (await stack.ttl.pass_once()).acted == 1
    after = await stack.converge("idle")
    assert (after["spec"]["desired_state"], after["status"]["observed_status"]) == (
        "STANDBY",
        "STANDBY",
    )
    assert after["metadata"]["annotations"][SOURCE_ANNOTATION] == "ttl"
    assert after["metadata"]["annotations"][CHANGED_AT_ANNOTATION]
    assert "IdleStandby" in await stack.reasons("idle")

    await stack.ttl.pass_once()
    assert (await stack.client.get(NS, "idle"))["status"]["idle_action"] == "archive"
    stack.clock.advance(3600)
    assert (await stack.ttl.pass_once()).acted == 1
    archived = await stack.converge("idle")
    assert archived["spec"]["desired_state"] == "PENDING"
    assert archived["status"]["display"] == "ARCHIVED"
    assert archived["metadata"]["annotations"][SOURCE_ANNOTATION] == "ttl"
    assert "IdleArchive" in await stack.reasons("idle")
    assert stack.metric("codehub_ttl_actions_total", {"action": "standby"}) == 1
    assert stack.metric("codehub_ttl_actions_total", {"action": "archive"}) == 1


async def test_an_open_connection_keeps_it_running(stack: Stack) -> None:
    obj = await stack.create("open", standby_ttl_seconds=300)
    ref = WorkspaceRef.of(obj)
    await stack.tracker.connection_opened(ref)  # what the proxy does on a WebSocket
    status = (await stack.client.get(NS, "open"))["status"]
    assert status["open_connections"] == 1
    assert status["last_activity_source"] == "websocket"
    stack.clock.advance(10_000)
    assert (await stack.ttl.pass_once()).acted == 0
    assert (await stack.client.get(NS, "open"))["spec"]["desired_state"] == "RUNNING"

    await stack.tracker.connection_closed(ref)
    await stack.tracker.flush()
    assert (await stack.client.get(NS, "open"))["status"]["open_connections"] == 0
    await stack.ttl.pass_once()
    status = (await stack.client.get(NS, "open"))["status"]
    assert status["idle_action"] == "standby"  # idle again from the last access
    stack.clock.advance(301)
    assert (await stack.ttl.pass_once()).acted == 1


async def test_a_user_start_after_the_ttl_standby_is_not_overridden(stack: Stack) -> None:
    await stack.create("mine", standby_ttl_seconds=300)
    await stack.ttl.pass_once()  # first seen RUNNING: idle from now
    stack.clock.advance(301)
    assert (await stack.ttl.pass_once()).acted == 1
    await stack.converge("mine")
    # The user starts it again; the TTL's clock has long passed the old idle period.
    await stack.user.patch_merge(NS, "mine", {"spec": {"desired_state": "RUNNING"}})
    started = await stack.converge("mine")
    assert started["metadata"]["annotations"][SOURCE_ANNOTATION] == "api"
    report = await stack.ttl.pass_once()
    assert report.acted == 0
    assert (await stack.client.get(NS, "mine"))["spec"]["desired_state"] == "RUNNING"
    stack.clock.advance(301)
    assert (await stack.ttl.pass_once()).acted == 1  # idle again, the TTL may act


async def test_ttl_writes_are_compare_and_set_against_postgres(stack: Stack) -> None:
    await stack.create("race", standby_ttl_seconds=300)
    stack.clock.advance(301)
    listing = await stack.client.list(NS)
    stale = next(i for i in listing["items"] if i["metadata"]["name"] == "race")
    await stack.user.patch_merge(NS, "race", {"spec": {"desired_state": "PENDING"}})
    assert await stack.ttl._act(stale, IdleAction.STANDBY) is None
    obj = await stack.client.get(NS, "race")
    assert obj["spec"]["desired_state"] == "PENDING"
    assert obj["metadata"]["annotations"][SOURCE_ANNOTATION] == "api"
