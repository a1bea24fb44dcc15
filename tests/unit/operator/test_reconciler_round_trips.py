"""Round trips on the apply path (docs/adr/0009-lifecycle-and-scale-performance.md): a
create event's body is planned from without reading it again, a stale such copy still
converges, and the transition events are posted beside the next steps, not before them.

Writes per operation (docs/adr/0013-fewer-writes-per-operation.md): a completion carries
its observation and the next claim in one compare-and-set, which falls back to the
completion alone when the workspace changed meanwhile, and a crash after it resumes the
claimed operation with its op_id."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest
from support.api import ApiFactory, Identity
from support.counting import CountingClient

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings

NS = "alice"


class Counting(CountingClient):
    """The operator's client, counting calls; ``post_event`` may be held on a gate."""

    def __init__(self, client: ApiClient) -> None:
        super().__init__(client)
        self.hold_events: asyncio.Event | None = None
        self.events_waiting = 0

    async def post_event(self, ns: str, event: Any) -> Any:
        self.calls["post_event"] += 1
        if self.hold_events is not None:
            self.events_waiting += 1
            await self.hold_events.wait()
            self.events_waiting -= 1
        return await self.client.post_event(ns, event)


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
    created = await admin.create(NS, manifest("behind", "RUNNING"))
    task = asyncio.create_task(gate.reconcile_now(created))

    async def observed() -> bool:
        st = (await admin.get(NS, "behind")).get("status") or {}
        return st.get("display") == "RUNNING" and st.get("operation") in (None, "NONE")

    while not await observed():  # the events are held: the steps went on without them
        assert not task.done()
        await asyncio.sleep(0.01)
    # PROVISIONING and STARTING completed, told by one Event (was two), still held
    assert counting.events_waiting == 1
    assert not task.done()  # the reconcile does not end before its events are posted
    counting.hold_events.set()
    assert (await task).detail == "converged"
    events = await admin.list_events(NS, "behind")
    assert [e["reason"] for e in events] == ["OperationCompleted"]
    told = re.findall(r"(\w+) completed \(op_id ([0-9a-f-]{36})\)", events[0]["message"])
    assert [op for op, _ in told] == ["PROVISIONING", "STARTING"]
    assert len({op_id for _, op_id in told}) == 2


# -- writes per operation --------------------------------------------------------------


async def test_pending_to_running_costs_three_writes_one_event(setup: Any) -> None:
    admin, counting, ctx, gate = setup
    created = await admin.create(NS, manifest("counted", "RUNNING"))
    assert (await gate.reconcile_now(created)).detail == "converged"
    st = (await admin.get(NS, "counted"))["status"]
    assert (st["display"], st["operation"]) == ("RUNNING", "NONE")
    assert st["endpoint"].startswith("http://")
    assert st["observed_at"]
    # claim PROVISIONING; PROVISIONING completed + observed STANDBY + STARTING claimed;
    # STARTING completed + observed RUNNING (was 6 writes: each completion and each
    # observation written apart, and a claim after each)
    assert counting.calls["patch_json"] == 3, counting.calls
    # one OperationCompleted telling both operations (was 4: Started and Completed each;
    # then 2, docs/adr/0014-kopf-writes.md)
    assert counting.calls["post_event"] == 1
    assert counting.calls["get"] == 0
    # facts gathered before the first claim and after each actuation only (was 7)
    assert ctx.instances.calls["inspect"] == 3


async def test_a_desired_change_during_the_operation_moves_the_merged_write_aside(
    setup: Any,
) -> None:
    """The completion's compare-and-set fails on the version the user's change wrote:
    the completion is written alone, and the next step is planned from the new wish,
    not from the copy the operation was claimed on (which still asked for RUNNING)."""
    admin, counting, ctx, gate = setup
    created = await admin.create(NS, manifest("moved", "RUNNING"))

    async def user_changes_mind(*_: Any) -> None:
        await admin.patch_merge(NS, "moved", {"spec": {"desired_state": "STANDBY"}})

    ctx.storage.hook("provision", before=user_changes_mind)
    assert (await gate.reconcile_now(created)).detail == "converged"
    st = (await admin.get(NS, "moved"))["status"]
    assert (st["display"], st["operation"], st.get("op_id")) == ("STANDBY", "NONE", None)
    assert ctx.instances.calls["start"] == 0  # no STARTING was claimed on the stale copy
    # claim, refused merged write, completion alone (op-fenced), observation
    assert counting.calls["patch_json"] == 4, counting.calls


async def test_a_wish_to_run_made_during_provisioning_still_starts(setup: Any) -> None:
    admin, _counting, ctx, gate = setup
    created = await admin.create(NS, manifest("wished", "STANDBY"))

    async def user_wants_it_running(*_: Any) -> None:
        await admin.patch_merge(NS, "wished", {"spec": {"desired_state": "RUNNING"}})

    ctx.storage.hook("provision", before=user_wants_it_running)
    assert (await gate.reconcile_now(created)).detail == "converged"
    st = (await admin.get(NS, "wished"))["status"]
    assert (st["display"], st["operation"]) == ("RUNNING", "NONE")
    assert ctx.instances.calls["start"] == 1


async def test_a_crash_after_the_merged_write_resumes_the_claimed_operation(setup: Any) -> None:
    """Completion and claim are one write: a coordinator that dies right after it leaves
    the next operation claimed, never a completion without its successor; the next
    reconcile resumes that operation with the op_id the merged write recorded."""
    admin, _counting, ctx, gate = setup
    created = await admin.create(NS, manifest("crashed", "RUNNING"))
    entered = asyncio.Event()

    async def die(*_: Any) -> None:
        entered.set()
        await asyncio.Event().wait()

    ctx.instances.hook("start", before=die)
    task = asyncio.create_task(gate.reconcile_now(created))
    await entered.wait()
    task.cancel()  # SIGKILL: nothing after this point runs
    with contextlib.suppress(asyncio.CancelledError):
        await task
    st = (await admin.get(NS, "crashed"))["status"]
    assert (st["operation"], st["observed_status"], st["display"]) == (
        "STARTING",
        "STANDBY",
        "STANDBY",
    )
    op_id = st["op_id"]
    ctx.instances.unhook("start")
    fresh = ReconcileGate(ctx)  # a new process: nothing in flight
    assert (await fresh.reconcile_now(await admin.get(NS, "crashed"))).detail == "converged"
    st = (await admin.get(NS, "crashed"))["status"]
    assert (st["display"], st["operation"]) == ("RUNNING", "NONE")
    messages = [e["message"] for e in await admin.list_events(NS, "crashed")]
    assert f"STARTING completed (op_id {op_id})" in messages


async def test_a_desired_change_body_is_claimed_without_reading_it_again(setup: Any) -> None:
    admin, counting, _ctx, gate = setup
    created = await admin.create(NS, manifest("woken"))
    assert (await gate.reconcile_now(created)).detail == "converged"
    changed = await admin.patch_merge(NS, "woken", {"spec": {"desired_state": "RUNNING"}})
    counting.calls.clear()
    assert (await gate.reconcile_now(changed)).detail == "converged"
    assert (await admin.get(NS, "woken"))["status"]["display"] == "RUNNING"
    assert counting.calls["get"] == 0, counting.calls
    assert counting.calls["patch_json"] == 2  # claim STARTING; completed + observed RUNNING


async def test_a_stale_settled_body_is_refused_then_decided_afresh(setup: Any) -> None:
    admin, _counting, ctx, gate = setup
    created = await admin.create(NS, manifest("flip"))
    assert (await gate.reconcile_now(created)).detail == "converged"
    run = await admin.patch_merge(NS, "flip", {"spec": {"desired_state": "RUNNING"}})
    assert (await gate.reconcile_now(run)).detail == "converged"
    await admin.patch_merge(NS, "flip", {"spec": {"desired_state": "STANDBY"}})
    # ``run`` is stale (observed STANDBY, desired RUNNING): its STARTING claim is refused
    assert (await gate.reconcile_now(run)).detail == "converged"
    st = (await admin.get(NS, "flip"))["status"]
    assert (st["display"], st["operation"]) == ("STANDBY", "NONE")
    assert ctx.instances.calls["start"] == 1  # only the start ``run`` asked for when fresh


@pytest.mark.parametrize(
    "status",
    [{"operation": "STARTING", "op_id": "x"}, {"error_info": {"reason": "Unreachable"}}],
)
async def test_a_body_with_work_under_way_is_read_first(setup: Any, status: dict[str, Any]) -> None:
    admin, counting, _ctx, gate = setup
    created = await admin.create(NS, manifest("busy"))
    assert (await gate.reconcile_now(created)).detail == "converged"
    body = {**created, "status": {**(await admin.get(NS, "busy"))["status"], **status}}
    counting.calls.clear()
    await gate.reconcile_now(body)
    assert counting.calls["get"] >= 1
