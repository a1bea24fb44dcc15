"""HealthMonitor against the real in-process API and the fake adapters."""

from __future__ import annotations

from typing import Any

import pytest
from support.api import ApiFactory, Identity
from support.workspaces import fake_adapters

from codehub.adapters.errors import UnreachableError
from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.crd_like.store.memory import MemoryStore
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings

NS = "bob"
OPERATOR_GROUPS = ("codehub:operator", "codehub:admin")
TOKEN = "hm-operator"


class Env:
    def __init__(self, client: ApiClient, store: MemoryStore) -> None:
        self.client = client
        self.store = store
        self.instances, self.storage = fake_adapters()
        self.clock = FakeClock()
        self.ctx = OperatorContext(
            settings=Settings(health_monitor_stale_threshold=120.0),
            api=client,
            instances=self.instances,
            storage=self.storage,
            clock=self.clock,
            metrics=Metrics(),
        )
        self.gate = ReconcileGate(self.ctx)
        self.monitor = HealthMonitor(self.ctx, self.gate)

    def engine_calls(self) -> int:
        return self.instances.engine_calls + self.storage.engine_calls

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.ctx.metrics.registry.get_sample_value(name, labels or {})


@pytest.fixture
async def env(make_api: ApiFactory) -> Env:
    harness = await make_api(
        identities=[Identity(TOKEN, "codehub-operator", "op", OPERATOR_GROUPS)],
        max_running_per_user=10_000,
        max_running_global=10_000,
    )
    assert isinstance(harness.store, MemoryStore)
    return Env(harness.client("codehub-operator"), harness.store)


async def add_workspaces(env: Env, n: int, prefix: str) -> list[dict[str, Any]]:
    """n workspaces: a third running, a third standby, a third new (nothing yet)."""
    out = []
    for i in range(n):
        obj = await env.client.create(
            NS,
            {
                "apiVersion": "codehub.io/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": f"{prefix}-{i}", "namespace": NS},
                "spec": {"desired_state": "STANDBY"},
            },
        )
        uid = obj["metadata"]["uid"]
        if i % 3 in (0, 1):
            await env.storage.provision(uid)
        if i % 3 == 0:
            env.instances.containers[uid] = _container(env, uid)
        out.append(obj)
    return out


def _container(env: Env, uid: str) -> Any:
    from codehub.adapters.fake_instance import FakeContainer

    return FakeContainer(uid, f"c-{uid}", "img", {}, None, None, running=True, port=1)


async def statuses(env: Env) -> dict[str, dict[str, Any]]:
    items = (await env.client.list(NS))["items"]
    return {i["metadata"]["name"]: i.get("status") or {} for i in items}


@pytest.mark.parametrize("n", [10, 100])
async def test_pass_uses_constant_engine_calls_and_writes_only_changes(env: Env, n: int) -> None:
    await add_workspaces(env, n, "ws")
    before = env.engine_calls()
    report = await env.monitor.pass_once()
    assert env.engine_calls() - before == 2  # one container listing, one volume listing
    assert report.workspaces == n
    assert report.written == n
    assert report.failures == 0
    st = await statuses(env)
    expected = {0: "RUNNING", 1: "STANDBY", 2: "PENDING"}
    for i in range(n):
        assert st[f"ws-{i}"]["observed_status"] == expected[i % 3]
        assert st[f"ws-{i}"]["display"] == expected[i % 3]
        assert st[f"ws-{i}"]["observed_at"]
    assert env.metric(
        "codehub_workspaces", {"observed_status": "RUNNING", "display": "RUNNING"}
    ) == len(range(0, n, 3))

    writes = env.store.writes
    before = env.engine_calls()
    again = await env.monitor.pass_once()
    assert again.written == 0
    assert env.store.writes == writes  # nothing changed, nothing written
    assert env.engine_calls() - before == 2


async def test_changes_are_written_and_archived_display_derived(env: Env) -> None:
    objs = await add_workspaces(env, 3, "chg")
    await env.monitor.pass_once()
    running_uid = objs[0]["metadata"]["uid"]
    env.instances.containers[running_uid].running = False  # crashed, container kept
    await env.client.patch_merge(
        NS, "chg-2", {"status": {"archive_key": "archives/x/y/home.tar.gz"}}, status=True
    )
    report = await env.monitor.pass_once()
    assert report.written == 2
    st = await statuses(env)
    assert st["chg-0"]["observed_status"] == "STANDBY"
    assert st["chg-2"]["observed_status"] == "PENDING"
    assert st["chg-2"]["display"] == "ARCHIVED"


async def test_terminal_error_is_error_and_recovery_reobserves(env: Env) -> None:
    await add_workspaces(env, 2, "err")
    await env.monitor.pass_once()
    err = {
        "reason": "RetryExceeded",
        "message": "boom",
        "is_terminal": True,
        "operation": "STARTING",
        "error_count": 4,
        "context": {},
    }
    await env.client.patch_merge(
        NS, "err-1", {"status": {"error_info": err, "previous_status": "STANDBY"}}, status=True
    )
    await env.monitor.pass_once()
    assert (await statuses(env))["err-1"]["observed_status"] == "ERROR"
    # an administrator's recovery: error cleared; the next observation is real again
    await env.client.patch_merge(
        NS, "err-1", {"status": {"error_info": None, "error_count": 0}}, status=True
    )
    await env.monitor.observe_one(NS, "err-1")
    st = (await statuses(env))["err-1"]
    assert st["observed_status"] == "STANDBY"
    assert st["display"] == "STANDBY"


async def test_data_lost_is_confirmed_before_being_written(env: Env) -> None:
    objs = await add_workspaces(env, 3, "lost")
    await env.monitor.pass_once()
    del env.storage.volumes[objs[1]["metadata"]["uid"]]  # STANDBY's volume vanished
    report = await env.monitor.pass_once()
    assert report.confirmed == 1
    before = await statuses(env)
    assert before["lost-1"]["observed_status"] == "STANDBY"  # not yet
    assert before["lost-2"]["observed_status"] == "PENDING"  # new, never held data
    assert before["lost-0"]["observed_status"] == "RUNNING"
    await env.gate.drain()  # the gate's reconcile records it, then it is observed
    st = await statuses(env)
    assert st["lost-1"]["observed_status"] == "ERROR"
    # handed to the reconciler first, which recorded why and what was seen before
    assert st["lost-1"]["error_info"]["reason"] == "DataLost"
    assert st["lost-1"]["error_info"]["is_terminal"] is True
    assert st["lost-1"]["previous_status"] == "STANDBY"
    assert objs[1]["metadata"]["uid"] not in env.storage.volumes  # nothing re-provisioned


class FailingApi:
    """Delegates to the real client but refuses status writes for one workspace."""

    def __init__(self, inner: ApiClient, bad: str) -> None:
        self.inner = inner
        self.bad = bad

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def patch_json(self, ns: str, name: str, ops: Any, status: bool = False) -> Any:
        if name == self.bad:
            raise ApiError(500, "InternalError", "injected")
        return await self.inner.patch_json(ns, name, ops, status=status)


async def test_one_failure_never_stops_the_pass(env: Env) -> None:
    await add_workspaces(env, 5, "fail")
    env.ctx.api = FailingApi(env.client, "fail-2")
    report = await env.monitor.pass_once()
    assert report.failures == 1
    assert report.written == 4
    st = await statuses(env)
    assert "observed_status" not in st["fail-2"]
    assert st["fail-4"]["observed_status"] == "STANDBY"
    assert env.metric("codehub_health_observe_failures_total") == 1


async def test_stale_observations_are_reported(env: Env) -> None:
    await add_workspaces(env, 4, "stale")
    report = await env.monitor.pass_once()
    assert report.stale == []
    assert env.metric("codehub_stale_observations") == 0
    env.clock.advance(121)
    env.instances.fail_next("list_instances", UnreachableError("engine down"))
    with pytest.raises(UnreachableError):
        await env.monitor.pass_once()
    assert env.metric("codehub_stale_observations") == 4
    assert (env.metric("codehub_observation_age_seconds") or 0) >= 121
    report = await env.monitor.pass_once()
    assert report.stale == []
    assert env.metric("codehub_observation_age_seconds") == 0


async def test_observe_one_writes_now_and_a_vanished_workspace_is_not_an_error(
    env: Env,
) -> None:
    objs = await add_workspaces(env, 1, "hint")
    seen = await env.monitor.observe_one(NS, "hint-0")
    assert seen is not None
    st = (await statuses(env))["hint-0"]
    assert st["observed_status"] == "RUNNING"
    uid = objs[0]["metadata"]["uid"]
    assert st["endpoint"] == f"http://127.0.0.1:{env.instances.containers[uid].port}"
    assert await env.monitor.observe_one(NS, "missing") is None


async def test_stopped_container_is_classified_alike_by_batch_and_single(env: Env) -> None:
    objs = await add_workspaces(env, 1, "stop")
    uid = objs[0]["metadata"]["uid"]
    await env.instances.stop_behind_back(uid)
    await env.monitor.pass_once()
    batch = (await statuses(env))["stop-0"]
    assert batch["observed_status"] == "STANDBY"
    assert batch.get("endpoint") is None
    await env.monitor.observe_one(NS, "stop-0")
    assert (await statuses(env))["stop-0"] == batch  # the same meaning: nothing to write


class MovingApi:
    """The workspace changes right after the pass listed it (a reconciler step lands)."""

    def __init__(self, inner: ApiClient, env: Env, uid: str) -> None:
        self.inner = inner
        self.env = env
        self.uid = uid

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list(self, ns: str | None = None, **kw: Any) -> Any:
        listing = await self.inner.list(ns, **kw)
        await self.env.instances.remove_behind_back(self.uid)
        await self.inner.patch_merge(
            NS, "move-0", {"status": {"operation": "STOPPING", "op_id": "x"}}, status=True
        )
        return listing


async def test_a_workspace_changed_after_the_listing_is_observed_afresh(env: Env) -> None:
    objs = await add_workspaces(env, 1, "move")
    await env.monitor.pass_once()
    env.ctx.api = MovingApi(env.client, env, objs[0]["metadata"]["uid"])
    writes = env.store.writes
    report = await env.monitor.pass_once()
    assert report.confirmed == 1  # the conditional write was refused, then re-observed
    assert report.written == 0
    st = (await statuses(env))["move-0"]
    assert st["observed_status"] == "STANDBY"
    assert st["operation"] == "STOPPING"  # the other writer's fields were not clobbered
    assert env.store.writes == writes + 2  # the mover's write and one fresh observation


async def test_pass_nudges_the_reconciler_for_unsettled_workspaces(env: Env) -> None:
    monitor = env.monitor
    objs = await add_workspaces(env, 3, "nudge")  # all desired STANDBY
    report = await monitor.pass_once()
    # RUNNING wants STOPPING, PENDING wants PROVISIONING; STANDBY is settled
    assert report.nudged == 2
    assert await env.gate.drain() == 2
    assert objs[0]["metadata"]["uid"] not in env.instances.containers
    assert objs[2]["metadata"]["uid"] in env.storage.volumes
    st = await statuses(env)
    assert {s["observed_status"] for s in st.values()} == {"STANDBY"}
    assert (await monitor.pass_once()).nudged == 0


async def test_every_state_is_exported_even_when_empty(env: Env) -> None:
    """A dashboard shows 0 for a state nobody is in, not "no data" (all deleted, say)."""
    await env.monitor.pass_once()
    pairs = {
        ("PENDING", "PENDING"),
        ("PENDING", "ARCHIVED"),
        ("STANDBY", "STANDBY"),
        ("RUNNING", "RUNNING"),
        ("ERROR", "ERROR"),
        ("DELETED", "DELETED"),
    }
    for observed, display in pairs:
        labels = {"observed_status": observed, "display": display}
        assert env.metric("codehub_workspaces", labels) == 0.0
