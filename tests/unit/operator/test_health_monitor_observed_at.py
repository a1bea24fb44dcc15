"""status.observed_at and staleness (docs/observation.md#what-observed_at-means): an
unchanged status is rewritten only past the refresh period and within a per-pass budget;
each pass counts as an observation of what it saw (the heartbeat), and a new term counts
ages from observed_at until its passes have seen a workspace, so a new leader never sees
anything fresher than the resource proves."""

from __future__ import annotations

from typing import Any

import pytest
from support.api import ApiFactory

from codehub.adapters.errors import UnreachableError
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.store.memory import MemoryStore
from codehub.operator import observer
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings
from codehub.vocabulary.timestamps import parse_rfc3339

NS = "bob"
THRESHOLD = 120.0
REFRESH = THRESHOLD * observer.REFRESH_THRESHOLDS


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


async def test_unchanged_status_is_reconfirmed_only_past_the_refresh_period(env: Env) -> None:
    await standby(env, 5)
    monitor = env.monitor()
    await monitor.pass_once()
    first = await observed_at(env)
    writes = env.store.writes

    env.clock.advance(REFRESH - 1)
    report = await monitor.pass_once()
    assert env.store.writes == writes  # confirmed, but too recent to be worth a write
    assert (report.written, report.refreshed, report.unwritten) == (0, 0, 5)
    assert await observed_at(env) == first

    env.clock.advance(1)
    report = await monitor.pass_once()
    assert report.written == 0  # no change of status...
    assert report.refreshed == 5  # ...but 5 confirmations written
    assert env.store.writes == writes + 5
    assert set((await observed_at(env)).values()) == {env.clock.now()}


async def test_passes_keep_unchanged_workspaces_fresh_without_writing(env: Env) -> None:
    """The pass is the heartbeat: observed_at grows old, the observation does not."""
    await standby(env, 5)
    monitor = env.monitor()
    await monitor.pass_once()
    writes = env.store.writes
    for _ in range(8):  # four thresholds, a pass every half threshold
        env.clock.advance(THRESHOLD / 2)
        report = await monitor.pass_once()
        assert report.stale == []
        assert metric(monitor, "codehub_observation_age_seconds") == 0
    assert env.store.writes == writes

    env.clock.advance(THRESHOLD / 2)
    env.instances.fail_next("list_instances", UnreachableError("engine down"))
    with pytest.raises(UnreachableError):
        await monitor.pass_once()
    assert metric(monitor, "codehub_stale_observations") == 0  # a pass ago is not stale yet
    env.clock.advance(THRESHOLD / 2 + 1)
    env.instances.fail_next("list_instances", UnreachableError("engine down"))
    with pytest.raises(UnreachableError):
        await monitor.pass_once()
    assert metric(monitor, "codehub_stale_observations") == 5
    assert metric(monitor, "codehub_observation_age_seconds") == THRESHOLD + 1


async def test_a_pass_rewrites_at_most_its_budget_of_confirmations(env: Env) -> None:
    """40 workspaces due at once (created in the same minute): each pass writes at most
    its budget, the next ones the rest; none is rewritten twice."""
    n = 40
    await standby(env, n)
    monitor = env.monitor()
    await monitor.pass_once()  # no observed_at yet: all written, whatever the budget
    budget = observer.refresh_budget(n, env.settings.health_monitor_interval, REFRESH)
    assert budget < n
    env.clock.advance(REFRESH)
    refreshed = [(await monitor.pass_once()).refreshed for _ in range(4)]
    assert refreshed == [budget, budget, n - 2 * budget, 0]
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


async def test_a_new_leader_counts_from_observed_at_until_its_first_pass(env: Env) -> None:
    """The old leader's passes confirmed the workspaces without writing; the new term
    cannot know that, so it reports the older age the resource proves, never a fresher
    one, until its own first pass."""
    await standby(env, 3)
    old_leader = env.monitor()
    await old_leader.pass_once()
    written = env.clock.now()
    for _ in range(4):
        env.clock.advance(THRESHOLD / 2)
        assert (await old_leader.pass_once()).stale == []

    new_leader = env.monitor()
    env.instances.fail_next("list_instances", UnreachableError("engine down"))
    with pytest.raises(UnreachableError):
        await new_leader.pass_once()
    age = (env.clock.now() - written).total_seconds()
    assert metric(new_leader, "codehub_observation_age_seconds") == age == 2 * THRESHOLD
    assert metric(new_leader, "codehub_stale_observations") == 3

    assert (await new_leader.pass_once()).stale == []
    assert metric(new_leader, "codehub_stale_observations") == 0


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
