"""status.progress of archives and restores (docs/operations.md#progress): written from
the data path's reports at most every interval, fenced on the operation, cleared after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.workspaces import create_workspace, fake_adapters

from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.models import WorkspaceStatus
from codehub.operator.clock import FakeClock, SystemClock
from codehub.operator.context import OperatorContext
from codehub.operator.planning import Operation
from codehub.operator.progress import ProgressReporter, progress_body, reporting
from codehub.operator.reconcile_view import View
from codehub.operator.settings import Settings

NS = "prog"


@pytest.fixture
def client(operator_client: ApiClient) -> ApiClient:
    return operator_client


def _ctx(client: ApiClient, clock: Any) -> OperatorContext:
    instances, storage = fake_adapters()
    return OperatorContext(
        settings=Settings(), api=client, instances=instances, storage=storage, clock=clock
    )


async def _archiving(client: ApiClient, name: str) -> View:
    claim = {"operation": "ARCHIVING", "op_id": "op-1"}
    return View.of(await create_workspace(client, NS, name, status=claim))


async def _until_written(client: ApiClient, name: str, done: int) -> int:
    """Poll until status.progress shows ``done`` bytes (the reporter writes every 0.02 s)."""
    while True:
        current = await _progress(client, name)
        if current is not None and current["bytes_done"] >= done:
            return int(current["bytes_done"])
        await asyncio.sleep(0.01)  # polling the server: its state is not ours to await


async def _progress(client: ApiClient, name: str) -> Any:
    return ((await client.get(NS, name)).get("status") or {}).get("progress")


def test_body_has_an_average_rate_and_an_unknown_total() -> None:
    body = progress_body(Operation.RESTORING, 300, None, 4.0, "2026-01-01T00:00:00Z")
    assert body["bytes_per_second"] == 75.0
    assert body["bytes_total"] is None
    assert progress_body(Operation.ARCHIVING, 0, 9, 0.0, "x")["bytes_per_second"] is None
    WorkspaceStatus.model_validate({"progress": {**body, "updated_at": "2026-01-01T00:00:00Z"}})


async def test_reporter_writes_latest_only_when_changed_then_clears(client: ApiClient) -> None:
    clock = FakeClock()
    w = await _archiving(client, "a")
    reporter = ProgressReporter(_ctx(client, clock), w, Operation.ARCHIVING)
    await reporter.flush()
    assert reporter.writes == 0
    assert await _progress(client, "a") is None
    reporter(10, 100)
    reporter(40, 100)
    clock.advance(2.0)
    await reporter.flush()
    first = await _progress(client, "a")
    assert first["operation"] == "ARCHIVING"
    assert (first["bytes_done"], first["bytes_total"], first["bytes_per_second"]) == (40, 100, 20)
    await reporter.flush()
    assert reporter.writes == 1  # nothing new, nothing written
    reporter(100, 100)
    clock.advance(3.0)
    await reporter.flush()
    assert (await _progress(client, "a"))["bytes_done"] == 100
    await reporter.clear()
    assert await _progress(client, "a") is None


async def test_a_lost_operation_stops_the_reports(client: ApiClient) -> None:
    w = await _archiving(client, "b")
    reporter = ProgressReporter(_ctx(client, FakeClock()), w, Operation.ARCHIVING)
    ops = [{"op": "add", "path": "/status/op_id", "value": "op-2"}]
    await client.patch_json(NS, "b", ops, status=True)
    reporter(5, 10)
    await reporter.flush()
    assert reporter.writes == 0
    assert await _progress(client, "b") is None


async def test_reporting_shows_progress_during_the_call_and_clears_it_after(
    client: ApiClient,
) -> None:
    w = await _archiving(client, "c")
    seen: list[Any] = []
    async with (
        asyncio.timeout(60),
        reporting(_ctx(client, SystemClock()), w, Operation.ARCHIVING, 0.02) as report,
    ):
        for done in (1, 2, 3):
            await asyncio.to_thread(report, done * 1000, 3000)  # from a thread, as the data path
            seen.append(await _until_written(client, "c", done * 1000))
    assert seen == [1000, 2000, 3000]
    assert await _progress(client, "c") is None


async def test_progress_left_by_a_dead_coordinator_is_cleared_by_the_reconciler(
    client: ApiClient,
) -> None:
    """A claim never copies an old progress; completing an operation removes one that a
    coordinator killed mid-transfer left behind."""
    from codehub.operator.reconciler import reconcile
    from codehub.vocabulary.timestamps import format_rfc3339

    clock = FakeClock()
    ctx = _ctx(client, clock)
    stale = progress_body(Operation.RESTORING, 5, 10, 1.0, "2026-01-01T00:00:00Z")
    for name in ("claimed", "idle"):
        await create_workspace(client, NS, name, "STANDBY")
    claimed = await client.get(NS, "claimed")
    await ctx.storage.provision(claimed["metadata"]["uid"])  # the operation's work is done
    started = format_rfc3339(clock.now(), micro=True)
    status = {"operation": "PROVISIONING", "op_id": "op-9", "op_started_at": started}
    for name, value in (("claimed", {**status, "progress": stale}), ("idle", {"progress": stale})):
        ops = [{"op": "add", "path": "/status", "value": value}]
        await client.patch_json(NS, name, ops, status=True)
    for name in ("claimed", "idle"):
        outcome = await reconcile(ctx, await client.get(NS, name))
        assert outcome.result == "done", outcome
        after = (await client.get(NS, name))["status"]
        assert after.get("observed_status") == "STANDBY"
        assert after.get("progress") is None
