"""Round trips on the apply path (docs/adr/0009-lifecycle-and-scale-performance.md): a
create event's body is planned from without reading it again, a stale such copy still
converges, and the transition events are posted beside the next steps, not before them."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from support.api import ApiFactory, Identity

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings

NS = "alice"


class Counting:
    """The operator's client, counting calls; ``post_event`` may be held on a gate."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.hold_events: asyncio.Event | None = None
        self.events_waiting = 0

    async def post_event(self, ns: str, event: Any) -> Any:
        self.calls["post_event"] += 1
        if self.hold_events is not None:
            self.events_waiting += 1
            await self.hold_events.wait()
            self.events_waiting -= 1
        return await self.client.post_event(ns, event)

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self.client, attr)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[attr] += 1
            return target(*args, **kwargs)

        return call


@pytest.fixture
async def setup(make_api: ApiFactory) -> tuple[Any, Counting, OperatorContext, ReconcileGate]:
    harness = await make_api(
        identities=[
            Identity("op", "codehub-operator", "op", ("codehub:operator",)),
            Identity("adm", "root", "root", ("codehub:admin",)),
        ],
        max_running_per_user=100,
    )
    counting = Counting(harness.client("codehub-operator"))
    storage = FakeStorageProvider()
    instances = FakeInstanceController(volume_exists=lambda uid: uid in storage.volumes)
    ctx = OperatorContext(
        settings=Settings(reconciler_retry_backoff=2.0, reconciler_interval=1.0),
        api=counting,  # type: ignore[arg-type]
        instances=instances,
        storage=storage,
        clock=FakeClock(),
        metrics=Metrics(),
    )
    return harness.client("root"), counting, ctx, ReconcileGate(ctx)


def manifest(name: str, desired: str = "STANDBY") -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": NS, "finalizers": ["codehub.io/finalizer"]},
        "spec": {"desired_state": desired},
    }


async def test_a_create_body_is_claimed_without_reading_it_again(setup: Any) -> None:
    admin, counting, _ctx, gate = setup
    created = await admin.create(NS, manifest("fresh"))
    outcome = await gate.reconcile_now(created)
    assert outcome.detail == "converged"
    assert (await admin.get(NS, "fresh"))["status"]["display"] == "STANDBY"
    # claim, completion and observation answered with the object: no read before them
    assert counting.calls["get"] == 0, counting.calls


async def test_bare_metadata_from_the_gate_is_read_first(setup: Any) -> None:
    admin, counting, _ctx, gate = setup
    created = await admin.create(NS, manifest("bare"))
    outcome = await gate.reconcile_now({"metadata": created["metadata"]})
    assert outcome.detail == "converged"
    assert counting.calls["get"] >= 1


async def test_a_stale_create_body_still_converges(setup: Any) -> None:
    admin, _counting, _ctx, gate = setup
    created = await admin.create(NS, manifest("stale"))
    assert (await gate.reconcile_now(created)).detail == "converged"
    await admin.patch_merge(NS, "stale", {"spec": {"desired_state": "RUNNING"}})
    # the same (now stale) statusless copy: its claim is refused, a fresh read plans
    outcome = await gate.reconcile_now(created)
    assert outcome.detail == "converged"
    assert (await admin.get(NS, "stale"))["status"]["display"] == "RUNNING"


async def test_transition_events_do_not_hold_the_next_steps(setup: Any) -> None:
    admin, counting, _ctx, gate = setup
    counting.hold_events = asyncio.Event()
    created = await admin.create(NS, manifest("behind"))
    task = asyncio.create_task(gate.reconcile_now(created))

    async def observed() -> bool:
        st = (await admin.get(NS, "behind")).get("status") or {}
        return st.get("display") == "STANDBY" and st.get("operation") in (None, "NONE")

    while not await observed():  # the events are held: the steps went on without them
        assert not task.done()
        await asyncio.sleep(0.01)
    assert counting.events_waiting == 2  # PROVISIONING started and completed, still held
    assert not task.done()  # the reconcile does not end before its events are posted
    counting.hold_events.set()
    assert (await task).detail == "converged"
    reasons = [e["reason"] for e in await admin.list_events(NS, "behind")]
    assert sorted(reasons) == ["OperationCompleted", "OperationStarted"]
