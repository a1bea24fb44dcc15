"""The periodic passes fed by the term's informer (docs/coordinator.md): the safety net
reads the informer's unsettled index, the HealthMonitor and the TTL Manager its
snapshot, none of them lists; the orphan sweeper lists afresh only before a removal; the
term's components start with the informer. In-process API on a MemoryStore, fake
adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.api import ApiFactory, ApiHarness
from support.informer import until

from codehub.adapters.engine_objects import LabelledObject, LabelledObjects
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.client.informer import Informer
from codehub.operator.clock import FakeClock
from codehub.operator.components import build_informer, leader_components
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.orphan_sweeper import OrphanSweeper
from codehub.operator.reconcile_view import needs_reconcile
from codehub.operator.safety_net import SafetyNet
from codehub.operator.settings import Settings
from codehub.operator.ttl_manager import TtlManager

NS = "alice"
Obj = dict[str, Any]


class CountingClient(ApiClient):
    """The operator's ApiClient, counting its List requests (pages included)."""

    lists = 0

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method == "GET" and path.endswith("/workspaces"):
            self.lists += 1
        return await super().request(method, path, **kwargs)


class Stack:
    def __init__(self, harness: ApiHarness) -> None:
        self.harness = harness
        self.admin = harness.client("admin")
        self.api = CountingClient(harness.url, harness.identities["operator"].token)
        self.storage = FakeStorageProvider()
        self.instances = FakeInstanceController(volume_exists=lambda u: u in self.storage.volumes)
        self.ctx = OperatorContext(
            settings=Settings(reconciler_interval=1.0),
            api=self.api,
            instances=self.instances,
            storage=self.storage,
            clock=FakeClock(),
            metrics=Metrics(),
        )
        self.gate = ReconcileGate(self.ctx)
        self.informer = build_informer(self.ctx)

    async def create(self, name: str, desired: str = "RUNNING") -> Obj:
        body = {"metadata": {"name": name}, "spec": {"desired_state": desired}}
        return await self.admin.create(NS, body)

    async def caught_up(self) -> None:
        """Until the informer holds what the API holds now (resourceVersions equal)."""
        listing = await self.admin.list(NS)
        want = {
            (NS, o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in listing["items"]
        }

        def same() -> bool:
            have = {
                (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"][
                    "resourceVersion"
                ]
                for o in self.informer.items()
            }
            return have == want

        await until(same, "the informer caught up with the API")


@pytest.fixture
async def stack(make_api: ApiFactory) -> AsyncIterator[Stack]:
    harness = await make_api(max_running_per_user=100, max_running_global=100)
    s = Stack(harness)
    task = asyncio.create_task(s.informer.run())
    try:
        yield s
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await s.api.close()


async def test_build_informer_indexes_unsettled_workspaces(stack: Stack) -> None:
    assert isinstance(stack.informer, Informer)
    assert stack.informer.resync_period == stack.ctx.settings.informer_resync_interval
    await stack.create("new")  # no observation yet: unsettled
    await stack.informer.wait_synced(30)
    await stack.caught_up()
    assert stack.informer.indexed() == [(NS, "new")]
    assert needs_reconcile(stack.informer.items()[0])
    assert "managedFields" not in stack.informer.items()[0]["metadata"]  # not kept


async def test_safety_net_and_health_monitor_read_the_informer_not_the_api(stack: Stack) -> None:
    settled, drifted = await stack.create("settled"), await stack.create("drifted")
    for obj in (settled, drifted):
        await stack.gate.reconcile_now(obj)
    await stack.caught_up()
    monitor = HealthMonitor(stack.ctx, stack.gate, stack.informer)
    net = SafetyNet(stack.ctx, stack.gate, stack.informer)
    lists = stack.api.lists  # the informer's own List(s)
    assert await net.pass_once() == 0
    uid = drifted["metadata"]["uid"]
    await stack.instances.remove_behind_back(uid)
    report = await monitor.pass_once()
    assert (report.workspaces, report.written) == (2, 1)  # drifted: observed STANDBY
    await stack.caught_up()
    assert stack.informer.indexed() == [(NS, "drifted")]
    assert await net.pass_once() == 1
    assert await stack.gate.drain() == 1
    assert stack.instances.containers[uid].running
    await stack.caught_up()
    assert await net.pass_once() == 0
    assert stack.api.lists == lists  # no pass listed


async def test_ttl_pass_from_the_informer_lists_nothing(stack: Stack) -> None:
    for i in range(3):
        await stack.create(f"w{i}", "STANDBY")
    await stack.caught_up()
    lists = stack.api.lists
    report = await TtlManager(stack.ctx, page_size=2, source=stack.informer).pass_once()
    assert (report.workspaces, report.list_requests) == (3, 0)
    assert stack.api.lists == lists


class FakeEngine(LabelledObjects):
    def __init__(self, objects: list[LabelledObject]) -> None:
        self.objects = list(objects)

    async def list_labelled(self) -> list[LabelledObject]:
        return list(self.objects)

    async def remove_labelled(self, obj: LabelledObject) -> bool:
        self.objects.remove(obj)
        return True


class StaleSource:
    """A cache that has not seen a new workspace yet."""

    list_requests = 0

    def __init__(self, uids: list[str]) -> None:
        self.uids = uids

    async def snapshot(self) -> list[Obj]:
        return [{"metadata": {"uid": u}} for u in self.uids]

    async def matching(self) -> list[tuple[str, str]]:
        return []


async def test_orphan_sweeper_confirms_a_removal_with_a_fresh_list(stack: Stack) -> None:
    new = await stack.create("new", "STANDBY")
    uid = new["metadata"]["uid"]
    engine = FakeEngine(
        [
            LabelledObject("volume", uid, f"ws-{uid}-home", f"ws-{uid}-home"),
            LabelledObject("volume", "gone", "ws-gone-home", "ws-gone-home"),
        ]
    )
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    sweeper = OrphanSweeper(
        api=stack.api, engine=engine, delay=60, clock=clock, source=StaleSource([])
    )
    lists = stack.api.lists
    first = await sweeper.pass_once()
    assert (first.waiting, first.removed, stack.api.lists) == (2, {}, lists)  # no List
    clock.advance(61)
    report = await sweeper.pass_once()
    assert report.removed == {"volume": 1}  # only the real orphan
    assert [o.uid for o in engine.objects] == [uid]
    assert stack.api.lists > lists


def test_the_informer_is_the_first_leader_component() -> None:
    names = [c.name for c in leader_components()]
    assert names[0] == "informer"
    assert names[-1] == "kopf"
