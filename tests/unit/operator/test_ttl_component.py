"""The TTL Manager against the real in-process API (MemoryStore) and a FakeClock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from support.api import ApiFactory
from support.workspaces import create_workspace

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.store.memory import MemoryStore
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings
from codehub.operator.ttl_manager import TtlManager
from codehub.operator.ttl_policy import CHANGED_AT_ANNOTATION, SOURCE_ANNOTATION
from codehub.vocabulary.timestamps import format_rfc3339, parse_rfc3339, utc_now

NS = "bob"


class Env:
    def __init__(self, client: ApiClient, store: MemoryStore) -> None:
        self.client = client
        self.store = store
        self.clock = FakeClock(utc_now())
        self.ctx = OperatorContext(
            settings=Settings(),
            api=client,
            instances=FakeInstanceController(),
            storage=FakeStorageProvider(),
            clock=self.clock,
            metrics=Metrics(),
        )
        self.ttl = TtlManager(self.ctx, page_size=2)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.ctx.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    async def workspace(
        self,
        name: str,
        state: str,
        idle_for: float,
        standby_ttl: int = 300,
        announced: bool = True,
        **status: Any,
    ) -> dict[str, Any]:
        """A settled workspace (observed == desired) last used ``idle_for`` seconds ago;
        ``announced``: a pass saw it settled then and stored its announcement."""
        await create_workspace(self.client, NS, name, state, standby_ttl_seconds=standby_ttl)
        since = self.clock.now() - timedelta(seconds=idle_for)
        body: dict[str, Any] = {"observed_status": state, "operation": "NONE"}
        body["last_access_at"] = format_rfc3339(since)
        if announced:
            action, ttl = ("standby", standby_ttl) if state == "RUNNING" else ("archive", 86400)
            body["idle_action"] = action
            body["idle_action_at"] = format_rfc3339(since + timedelta(seconds=ttl))
        body.update(status)
        return await self.client.patch_merge(NS, name, {"status": body}, status=True)

    async def get(self, name: str) -> dict[str, Any]:
        return await self.client.get(NS, name)

    async def reasons(self, name: str) -> list[str]:
        return [str(e.get("reason")) for e in await self.client.list_events(NS, name)]


@pytest.fixture
async def env(make_api: ApiFactory) -> Env:
    api = await make_api(max_running_per_user=10_000, max_running_global=10_000)
    assert isinstance(api.store, MemoryStore)
    return Env(api.client("operator"), api.store)


async def test_an_idle_running_workspace_goes_to_standby_recorded_three_ways(env: Env) -> None:
    await env.workspace("idle", "RUNNING", idle_for=301)
    report = await env.ttl.pass_once()
    assert report.acted == 1
    obj = await env.get("idle")
    assert obj["spec"]["desired_state"] == "STANDBY"
    notes = obj["metadata"]["annotations"]
    assert notes[SOURCE_ANNOTATION] == "ttl"
    assert parse_rfc3339(notes[CHANGED_AT_ANNOTATION]) is not None  # stamped by the server
    assert "IdleStandby" in await env.reasons("idle")
    assert env.metric("codehub_ttl_actions_total", {"action": "standby"}) == 1
    assert obj["status"].get("idle_action") is None


async def test_not_yet_due_announces_the_next_action_once(env: Env) -> None:
    # First seen settled now (the last access is older): idle from now, not from then.
    await env.workspace("soon", "RUNNING", idle_for=100, announced=False)
    first = await env.ttl.pass_once()
    assert (first.acted, first.writes) == (0, 1)
    status = (await env.get("soon"))["status"]
    assert status["idle_action"] == "standby"
    expected = env.clock.now() + timedelta(seconds=300)
    assert parse_rfc3339(status["idle_action_at"]) == expected.replace(microsecond=0)
    env.clock.advance(200)
    again = await env.ttl.pass_once()
    assert again.writes == 0  # nothing changed, nothing written; never brought forward
    env.clock.advance(100)
    assert (await env.ttl.pass_once()).acted == 1
    assert (await env.get("soon"))["spec"]["desired_state"] == "STANDBY"


async def test_an_open_connection_keeps_it_running_and_clears_the_announcement(env: Env) -> None:
    await env.workspace("open", "RUNNING", idle_for=100)
    await env.ttl.pass_once()
    await env.client.patch_merge(NS, "open", {"status": {"open_connections": 1}}, status=True)
    env.clock.advance(10_000)
    report = await env.ttl.pass_once()
    assert (report.acted, report.writes) == (0, 1)
    obj = await env.get("open")
    assert obj["spec"]["desired_state"] == "RUNNING"
    assert obj["status"]["idle_action"] is None
    assert obj["status"]["idle_action_at"] is None


async def test_a_user_change_after_the_idle_period_began_wins(env: Env) -> None:
    await env.workspace("mine", "RUNNING", idle_for=10_000)
    # The user stops and starts it again now: the server stamps the change (source api).
    await env.client.patch_merge(NS, "mine", {"spec": {"desired_state": "STANDBY"}})
    await env.client.patch_merge(NS, "mine", {"spec": {"desired_state": "RUNNING"}})
    report = await env.ttl.pass_once()
    assert report.acted == 0
    obj = await env.get("mine")
    assert obj["spec"]["desired_state"] == "RUNNING"
    assert obj["metadata"]["annotations"][SOURCE_ANNOTATION] == "api"
    assert env.metric("codehub_ttl_skipped_total", {"reason": "user_changed"}) == 1


async def test_a_busy_or_failed_workspace_is_left_alone(env: Env) -> None:
    await env.workspace("busy", "RUNNING", idle_for=10_000, operation="STOPPING", op_id="x")
    await env.workspace(
        "failed", "RUNNING", idle_for=10_000, error_info={"reason": "Timeout", "is_terminal": True}
    )
    await env.workspace("error", "RUNNING", idle_for=10_000, observed_status="ERROR")
    report = await env.ttl.pass_once()
    assert report.acted == 0
    for name in ("busy", "failed", "error"):
        assert (await env.get(name))["spec"]["desired_state"] == "RUNNING"
    assert env.metric("codehub_ttl_skipped_total", {"reason": "busy"}) == 2


async def test_archive_after_the_ttl_standby_keeps_source_ttl(env: Env) -> None:
    await env.workspace("old", "RUNNING", idle_for=301)
    await env.ttl.pass_once()
    await env.client.patch_merge(NS, "old", {"status": {"observed_status": "STANDBY"}}, status=True)
    env.clock.advance(86400)
    assert (await env.ttl.pass_once()).acted == 1
    obj = await env.get("old")
    assert obj["spec"]["desired_state"] == "PENDING"
    assert obj["metadata"]["annotations"][SOURCE_ANNOTATION] == "ttl"
    assert "IdleArchive" in await env.reasons("old")
    assert env.metric("codehub_ttl_actions_total", {"action": "archive"}) == 1


async def test_a_ttl_of_zero_disables_the_step(env: Env) -> None:
    await env.workspace("never", "RUNNING", idle_for=10**6, standby_ttl=0)
    assert (await env.ttl.pass_once()).acted == 0
    assert (await env.get("never"))["spec"]["desired_state"] == "RUNNING"


class MovingApi:
    """A user writes right after the pass listed the workspaces."""

    def __init__(self, inner: ApiClient, patch: dict[str, Any]) -> None:
        self.inner = inner
        self.patch = patch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list(
        self,
        ns: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        listing = await self.inner.list(ns, label_selector, field_selector, limit)
        await self.inner.patch_merge(NS, "race", self.patch)
        return listing


async def test_a_concurrent_user_change_is_never_overwritten(env: Env) -> None:
    await env.workspace("race", "RUNNING", idle_for=10_000)
    env.ctx.api = MovingApi(env.client, {"spec": {"desired_state": "PENDING"}})
    report = await env.ttl.pass_once()
    assert report.acted == 0
    obj = await env.get("race")
    assert obj["spec"]["desired_state"] == "PENDING"
    assert obj["metadata"]["annotations"][SOURCE_ANNOTATION] == "api"
    assert env.metric("codehub_ttl_skipped_total", {"reason": "conflict"}) == 1


async def test_a_conflict_with_an_unrelated_write_is_decided_again(env: Env) -> None:
    await env.workspace("race", "RUNNING", idle_for=10_000)
    env.ctx.api = MovingApi(env.client, {"spec": {"memo": "hello"}})
    report = await env.ttl.pass_once()
    assert report.acted == 1
    obj = await env.get("race")
    assert (obj["spec"]["desired_state"], obj["spec"]["memo"]) == ("STANDBY", "hello")


async def test_a_pass_lists_in_pages(env: Env) -> None:
    for i in range(5):
        await env.workspace(f"p{i}", "RUNNING", idle_for=10)
    report = await env.ttl.pass_once()
    assert (report.workspaces, report.list_requests) == (5, 3)
