"""status.observed_at (docs/observation.md#what-observed_at-means): refreshed when a pass
confirms an unchanged status and it is older than half the stale threshold, and
staleness measured from it, so a new leader sees the same ages as the old one."""

from __future__ import annotations

from typing import Any

import pytest
from support.api import ApiFactory

from codehub.adapters.errors import UnreachableError
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.store.memory import MemoryStore
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings
from codehub.vocabulary.timestamps import parse_rfc3339

NS = "bob"
THRESHOLD = 120.0


class Env:
    def __init__(self, client: ApiClient, store: MemoryStore) -> None:
        self.client = client
        self.store = store
        self.storage = FakeStorageProvider()
        self.instances = FakeInstanceController(
            volume_exists=lambda uid: uid in self.storage.volumes
        )
        self.clock = FakeClock()
        self.settings = Settings(health_monitor_stale_threshold=THRESHOLD)

    def monitor(self) -> HealthMonitor:
        """A HealthMonitor of a new leader term: own metrics, nothing in memory."""
        ctx = OperatorContext(
            settings=self.settings,
            api=self.client,
            instances=self.instances,
            storage=self.storage,
            clock=self.clock,
            metrics=Metrics(),
        )
        return HealthMonitor(ctx)


@pytest.fixture
async def env(make_api: ApiFactory) -> Env:
    api = await make_api()
    assert isinstance(api.store, MemoryStore)
    return Env(api.client("operator"), api.store)


async def standby(env: Env, n: int) -> None:
    for i in range(n):
        obj = await env.client.create(
            NS,
            {
                "apiVersion": "codehub.io/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": f"w-{i}", "namespace": NS},
                "spec": {"desired_state": "STANDBY"},
            },
        )
        await env.storage.provision(obj["metadata"]["uid"])


async def observed_at(env: Env) -> dict[str, Any]:
    items = (await env.client.list(NS))["items"]
    return {i["metadata"]["name"]: parse_rfc3339(i["status"].get("observed_at")) for i in items}


def metric(monitor: HealthMonitor, name: str) -> float:
    return monitor.ctx.metrics.registry.get_sample_value(name) or 0.0


async def test_unchanged_status_is_reconfirmed_only_past_half_the_threshold(env: Env) -> None:
    await standby(env, 5)
    monitor = env.monitor()
    await monitor.pass_once()
    first = await observed_at(env)
    writes = env.store.writes

    env.clock.advance(THRESHOLD / 2 - 1)
    report = await monitor.pass_once()
    assert env.store.writes == writes  # confirmed, but too recent to be worth a write
    assert report.written == 0
    assert await observed_at(env) == first

    env.clock.advance(1)
    report = await monitor.pass_once()
    assert report.written == 0  # no change of status...
    assert report.refreshed == 5  # ...but 5 confirmations written
    assert env.store.writes == writes + 5
    assert set((await observed_at(env)).values()) == {env.clock.now()}


async def test_a_new_leader_sees_the_same_ages(env: Env) -> None:
    await standby(env, 4)
    old_leader = env.monitor()
    await old_leader.pass_once()
    env.clock.advance(THRESHOLD + 1)

    new_leader = env.monitor()  # a new term: nothing in memory
    env.instances.fail_next("list_instances", UnreachableError("engine down"))
    with pytest.raises(UnreachableError):
        await new_leader.pass_once()
    assert metric(new_leader, "codehub_stale_observations") == 4
    assert metric(new_leader, "codehub_observation_age_seconds") >= THRESHOLD + 1

    report = await new_leader.pass_once()
    assert report.stale == []
    assert metric(new_leader, "codehub_observation_age_seconds") == 0


async def test_a_workspace_without_observed_at_is_written_at_once(env: Env) -> None:
    await standby(env, 1)
    monitor = env.monitor()
    await monitor.pass_once()
    obj = await env.client.get(NS, "w-0")
    status = {k: v for k, v in obj["status"].items() if k != "observed_at"}
    ops = [{"op": "add", "path": "/status", "value": status}]
    await env.client.patch_json(NS, "w-0", ops, status=True)  # e.g. just recovered
    report = await monitor.pass_once()
    assert report.refreshed == 1
    assert (await observed_at(env))["w-0"] == env.clock.now()
