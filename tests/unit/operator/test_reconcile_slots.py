"""The bound on reconciles in flight (``reconcile_slots`` and the gate that uses it).

Pure asyncio for the slots; the gate with a stand-in reconcile for the count, and with
the real reconciler over the in-process API and the fake adapters for the long
operation (an archive holding no slot)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from support.api import ApiFactory

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.operator import gate as gate_module
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.metrics import Metrics
from codehub.operator.reconcile_slots import ReconcileSlots, TransfersOutsideBound, outside_bound
from codehub.operator.reconcile_view import Outcome
from codehub.operator.settings import Settings, SettingsError

NS = "alice"


async def until(predicate: Any) -> None:
    """Let the other tasks run until ``predicate()`` holds (bounded, no clock)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


# -- the slots ---------------------------------------------------------------------------


async def test_at_most_limit_bodies_run_at_once_and_all_finish() -> None:
    slots = ReconcileSlots(3)
    running = 0
    seen: list[int] = []
    release = asyncio.Event()

    async def body() -> None:
        nonlocal running
        async with slots.held():
            running += 1
            seen.append(running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(body()) for _ in range(10)]
    await until(lambda: slots.waiting == 7)
    assert (slots.in_use, running) == (3, 3)
    release.set()
    await asyncio.gather(*tasks)
    assert max(seen) == 3
    assert slots.peak == 3
    assert len(seen) == 10
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_cancelling_a_holder_or_a_waiter_gives_its_place_back() -> None:
    slots = ReconcileSlots(1)
    hold = asyncio.Event()

    async def body() -> None:
        async with slots.held():
            await hold.wait()

    holder = asyncio.create_task(body())
    await until(lambda: slots.in_use == 1)
    waiter = asyncio.create_task(body())
    await until(lambda: slots.waiting == 1)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert slots.waiting == 0
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    assert slots.in_use == 0

    hold.set()
    await body()  # a slot is free again: this does not wait
    assert slots.in_use == 0


async def test_outside_bound_hands_the_slot_to_a_waiter_and_takes_one_again() -> None:
    slots = ReconcileSlots(1)
    order: list[str] = []
    transfer = asyncio.Event()

    async def long_one() -> None:
        async with slots.held():
            order.append("long: before")
            async with outside_bound():
                await transfer.wait()
            order.append("long: after")
            assert slots.in_use == 1

    async def quick_one() -> None:
        async with slots.held():
            order.append("quick")

    long_task = asyncio.create_task(long_one())
    await until(lambda: order == ["long: before"])
    await quick_one()  # done while the long one is still in its transfer
    assert order == ["long: before", "quick"]
    transfer.set()
    await long_task
    assert order == ["long: before", "quick", "long: after"]
    assert slots.in_use == 0


async def test_a_failed_transfer_takes_a_slot_again_and_a_cancelled_one_does_not() -> None:
    slots = ReconcileSlots(1)
    in_use_after_failure: list[int] = []

    async def failing() -> None:
        async with slots.held():
            try:
                async with outside_bound():
                    raise RuntimeError("transfer failed")
            except RuntimeError:
                in_use_after_failure.append(slots.in_use)  # the failure is written bounded

    await failing()
    assert in_use_after_failure == [1]
    assert slots.in_use == 0

    blocked = asyncio.Event()

    async def cancelled() -> None:
        async with slots.held(), outside_bound():
            await blocked.wait()

    task = asyncio.create_task(cancelled())
    await until(lambda: slots.in_use == 0 and slots.peak == 1 and not task.done())
    async with slots.held():  # holds the only slot while the transfer is cancelled
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_outside_a_reconcile_outside_bound_is_a_no_op() -> None:
    async with outside_bound():
        pass


def test_the_setting_is_typed_and_at_least_one() -> None:
    assert Settings().reconcile_concurrency == 32
    env = {"CODEHUB_RECONCILE_CONCURRENCY": "4"}
    assert Settings.from_env(env).reconcile_concurrency == 4
    with pytest.raises(SettingsError):
        Settings.from_env({"CODEHUB_RECONCILE_CONCURRENCY": "0"})
    with pytest.raises(SettingsError):
        Settings.from_env({"CODEHUB_RECONCILE_CONCURRENCY": "many"})


# -- the gate ----------------------------------------------------------------------------


def _context(api: Any, storage: FakeStorageProvider, limit: int) -> OperatorContext:
    instances = FakeInstanceController(volume_exists=lambda uid: uid in storage.volumes)
    settings = Settings(
        reconcile_concurrency=limit, reconciler_interval=1.0, reconciler_retry_backoff=2.0
    )
    return OperatorContext(
        settings=settings,
        api=api,
        instances=instances,
        storage=storage,
        clock=FakeClock(),
        metrics=Metrics(),
    )


async def test_the_gate_runs_at_most_the_setting_of_reconciles_from_kopf_and_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def stand_in(ctx: OperatorContext, obj: Mapping[str, Any]) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert isinstance(ctx.storage, TransfersOutsideBound)
        await release.wait()
        running -= 1
        return Outcome("done", detail="converged")

    class NoApi:
        async def get(self, ns: str, name: str) -> dict[str, Any]:
            return {"metadata": {"namespace": ns, "name": name, "uid": name}}

    monkeypatch.setattr(gate_module, "reconcile", stand_in)
    gate = ReconcileGate(_context(NoApi(), FakeStorageProvider(), limit=3))
    kopf_like = [
        asyncio.create_task(gate.reconcile_now({"metadata": {"namespace": NS, "name": f"k{i}"}}))
        for i in range(6)
    ]
    for i in range(4):
        gate.add(NS, f"q{i}")
    workers = [asyncio.create_task(gate.process_next()) for _ in range(4)]
    await until(lambda: gate.slots.waiting == 7)
    assert running == 3
    release.set()
    outcomes = await asyncio.gather(*kopf_like)
    assert await asyncio.gather(*workers) == [True] * 4
    assert [o.detail for o in outcomes] == ["converged"] * 6
    assert peak == 3
    assert (gate.slots.in_use, gate.slots.waiting) == (0, 0)


async def test_an_archive_holds_no_slot_so_a_deletion_completes_meanwhile(
    make_api: ApiFactory,
) -> None:
    harness = await make_api()
    admin, operator = harness.client("admin"), harness.client("operator")
    storage = FakeStorageProvider()
    gate = ReconcileGate(_context(operator, storage, limit=1))

    async def create(name: str) -> None:
        body = {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": NS, "finalizers": ["codehub.io/finalizer"]},
            "spec": {"desired_state": "STANDBY"},
        }
        outcome = await gate.reconcile_now(await admin.create(NS, body))
        assert outcome.detail == "converged"

    await create("long")
    await create("doomed")
    entered, transfer = asyncio.Event(), asyncio.Event()

    async def slow_archive(*_: object) -> None:
        entered.set()
        await transfer.wait()

    storage.hook("archive", before=slow_archive)
    await admin.patch_merge(NS, "long", {"spec": {"desired_state": "PENDING"}})
    archiving = asyncio.create_task(gate.reconcile_now(await admin.get(NS, "long")))
    await entered.wait()
    assert gate.slots.in_use == 0  # the transfer handed its slot back

    await admin.delete(NS, "doomed")
    deletion = await asyncio.wait_for(gate.reconcile_now(await admin.get(NS, "doomed")), 60)
    assert deletion.deleted
    assert not archiving.done()

    transfer.set()
    outcome = await archiving
    assert outcome.detail == "converged"
    status = (await admin.get(NS, "long"))["status"]
    assert status["display"] == "ARCHIVED"
    assert gate.slots.in_use == 0


async def test_a_workspace_waiting_for_a_slot_is_not_queued_again_by_the_periodic_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net and the HealthMonitor ``nudge``: a reconcile under way (here,
    waiting for the only slot) covers their finding, so it runs once, not twice."""
    runs: list[str] = []
    release = asyncio.Event()

    async def stand_in(ctx: OperatorContext, obj: Mapping[str, Any]) -> Outcome:
        runs.append(str(obj["metadata"]["name"]))
        await release.wait()
        return Outcome("done", detail="converged")

    monkeypatch.setattr(gate_module, "reconcile", stand_in)
    gate = ReconcileGate(_context(None, FakeStorageProvider(), limit=1))
    first = asyncio.create_task(gate.reconcile_now({"metadata": {"namespace": NS, "name": "a"}}))
    waiting = asyncio.create_task(gate.reconcile_now({"metadata": {"namespace": NS, "name": "b"}}))
    await until(lambda: gate.slots.waiting == 1)
    assert not gate.nudge(NS, "a")  # running
    assert not gate.nudge(NS, "b")  # waiting for a slot
    assert gate.nudge(NS, "c")  # idle: queued
    release.set()
    await asyncio.gather(first, waiting)
    assert len(gate.queue) == 1  # only c; neither a nor b runs a second time
    assert runs == ["a", "b"]
