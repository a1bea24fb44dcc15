"""reconcile() against the real in-process API (create_app over a MemoryStore, plain HTTP)
and the fake adapters. Time is a FakeClock: backoff and timeouts move it, nothing waits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from prometheus_client import generate_latest
from support.api import ApiFactory, ApiHarness, Identity

from codehub.adapters import naming
from codehub.adapters.errors import UnreachableError
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeEntry, FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.pausing import wrap
from codehub.operator.reconcile_view import Outcome
from codehub.operator.settings import Settings

NS = "alice"
ADMIN = "admin-token"
OPERATOR = "operator-token"


class Api:
    """The real server on 127.0.0.1 (the shared harness) plus an operator and an admin client."""

    def __init__(self, harness: ApiHarness) -> None:
        self.store = harness.store
        self.operator = harness.client("codehub-operator")
        self.admin = harness.client("root")


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    harness = await make_api(
        identities=[
            Identity(OPERATOR, "codehub-operator", "op", ("codehub:operator",)),
            Identity(ADMIN, "root", "root", ("codehub:admin",)),
            Identity("alice-token", NS, "alice"),
        ],
        max_running_per_user=1000,
        max_running_global=1000,
    )
    return Api(harness)


class Node:
    """One operator process: its own context (in-flight set, metrics), shared adapters."""

    def __init__(
        self,
        api: Any,
        storage: FakeStorageProvider,
        instances: FakeInstanceController,
        clock: FakeClock,
        settings: Settings,
    ) -> None:
        # what the composition root does: pausing adapters only when the test hook is set
        paused_instances, paused_storage = wrap(
            settings.test_pause_actuators, instances, storage, clock
        )
        self.ctx = OperatorContext(
            settings=settings,
            api=api,
            instances=paused_instances,
            storage=paused_storage,
            clock=clock,
            metrics=Metrics(),
        )
        self.gate = ReconcileGate(self.ctx)
        self.monitor = HealthMonitor(self.ctx, self.gate)

    async def reconcile(self, obj: dict[str, Any]) -> Outcome:
        """What a kopf handler does: reconcile through the gate."""
        return await self.gate.reconcile_now(obj)


def default_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "reconciler_retry_backoff": 2.0,
        "reconciler_interval": 1.0,
        "reconciler_max_retries": 3,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def storage() -> FakeStorageProvider:
    return FakeStorageProvider()


@pytest.fixture
def instances(storage: FakeStorageProvider) -> FakeInstanceController:
    return FakeInstanceController(volume_exists=lambda uid: uid in storage.volumes)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def node(
    api: Api, storage: FakeStorageProvider, instances: FakeInstanceController, clock: FakeClock
) -> Node:
    return Node(api.operator, storage, instances, clock, default_settings())


def manifest(name: str, desired: str = "RUNNING", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": NS, "finalizers": ["codehub.io/finalizer"]},
        "spec": {"desired_state": desired, **spec},
    }


async def create(api: Api, name: str, desired: str = "RUNNING", **spec: Any) -> dict[str, Any]:
    return await api.admin.create(NS, manifest(name, desired, **spec))


async def get(api: Api, name: str) -> dict[str, Any]:
    return await api.admin.get(NS, name)


async def status(api: Api, name: str) -> dict[str, Any]:
    return dict((await get(api, name)).get("status") or {})


async def set_desired(api: Api, name: str, desired: str) -> None:
    await api.admin.patch_merge(NS, name, {"spec": {"desired_state": desired}})


async def until_done(node: Node, obj: dict[str, Any], clock: FakeClock) -> Outcome:
    """Call reconcile as kopf would, moving the fake clock over each retry delay."""
    for _ in range(50):
        outcome = await node.reconcile(obj)
        if outcome.result != "retry":
            return outcome
        clock.advance(outcome.delay + 0.01)
    raise AssertionError("reconcile never settled")


def uid_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["uid"])


async def reasons(api: Api, name: str) -> list[str]:
    return [str(e.get("reason")) for e in await api.admin.list_events(NS, name)]


# -- lifecycle ---------------------------------------------------------------------------


async def test_new_workspace_converges_to_running(
    api: Api, node: Node, storage: FakeStorageProvider, instances: FakeInstanceController
) -> None:
    obj = await create(api, "w1")
    outcome = await node.reconcile(obj)
    assert outcome.result == "done"
    assert outcome.detail == "converged"
    uid = uid_of(obj)
    assert uid in storage.volumes
    assert instances.containers[uid].running
    st = await status(api, "w1")
    assert st["operation"] == "NONE"
    assert st.get("op_id") is None
    assert st["observed_status"] == "RUNNING"
    assert st["display"] == "RUNNING"
    assert st.get("error_info") is None
    assert storage.inject.calls["provision"] == 1
    assert instances.calls["start"] == 1
    text = node.ctx.metrics.registry.get_sample_value(
        "codehub_operation_duration_seconds_count",
        {"operation": "STARTING", "result": "completed"},
    )
    assert text == 1
    exposition = generate_latest(node.ctx.metrics.registry).decode()
    assert uid not in exposition
    assert "w1" not in exposition


async def test_running_to_pending_stops_archives_then_restores_byte_identical(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "w2")
    await node.reconcile(obj)
    uid = uid_of(obj)
    storage.write_entries(
        uid,
        {
            "notes.txt": FakeEntry("file", 0o600, b"hello\n", mtime=1700000000),
            "src": FakeEntry("dir", 0o755, mtime=1700000000),
            "src/main.py": FakeEntry("file", 0o644, b"print(1)\n", mtime=1700000001),
        },
    )
    before = storage.manifest(uid)

    order: list[str] = []
    archive_key_at_delete: list[str | None] = []

    async def delete_volume(u: str) -> None:
        order.append("delete_volume")
        archive_key_at_delete.append((await status(api, "w2")).get("archive_key"))

    async def delete(u: str) -> None:
        order.append("delete_container")

    storage.hook("delete_volume", before=delete_volume)
    instances.hook("delete", before=delete)

    await set_desired(api, "w2", "PENDING")
    outcome = await until_done(node, await get(api, "w2"), clock)
    assert outcome.detail == "converged"
    st = await status(api, "w2")
    assert st["display"] == "ARCHIVED"
    assert st["observed_status"] == "PENDING"
    key = st["archive_key"]
    assert key.startswith(f"archives/{uid}/")
    assert key.endswith("/home.tar.gz")
    assert uid not in storage.volumes
    assert uid not in instances.containers
    assert storage.objects.get(naming.meta_key(key)) is not None
    # docs/state-machine.md ordering: container deleted before the volume, key durable
    # before the delete.
    assert order.index("delete_container") < order.index("delete_volume")
    assert archive_key_at_delete == [key]

    await set_desired(api, "w2", "RUNNING")
    outcome = await until_done(node, await get(api, "w2"), clock)
    assert outcome.detail == "converged"
    assert storage.manifest(uid) == before
    st = await status(api, "w2")
    assert st["display"] == "RUNNING"
    assert st["archive_key"] == key
    assert storage.inject.calls["restore"] == 1


async def test_deletion_removes_container_then_volume_and_keeps_archives(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "w3", "PENDING")
    uid = uid_of(obj)
    await node.reconcile(obj)
    await set_desired(api, "w3", "RUNNING")
    await node.reconcile(await get(api, "w3"))
    storage.objects.put(f"archives/{uid}/old/home.tar.gz", b"x")
    order: list[str] = []

    async def delete_volume(u: str) -> None:
        order.append("volume")

    async def delete(u: str) -> None:
        order.append("container")

    storage.hook("delete_volume", before=delete_volume)
    instances.hook("delete", before=delete)
    await api.admin.delete(NS, "w3")
    outcome = await until_done(node, await get(api, "w3"), clock)
    assert outcome.deleted
    assert order == ["container", "volume"]
    assert uid not in storage.volumes
    assert uid not in instances.containers
    assert storage.objects.get(f"archives/{uid}/old/home.tar.gz") == b"x"


# -- claiming ----------------------------------------------------------------------------


class RaceApi:
    """Delegates to an ApiClient; the first status JSON patch waits for the other node's."""

    def __init__(self, inner: ApiClient, barrier: asyncio.Barrier) -> None:
        self.inner = inner
        self.barrier = barrier
        self.waited = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def patch_json(self, ns: str, name: str, ops: Any, status: bool = False) -> Any:
        if not self.waited:
            self.waited = True
            await self.barrier.wait()
        return await self.inner.patch_json(ns, name, ops, status=status)


async def test_claim_race_only_one_reconciler_acts(
    api: Api, storage: FakeStorageProvider, instances: FakeInstanceController, clock: FakeClock
) -> None:
    obj = await create(api, "race")
    barrier = asyncio.Barrier(2)
    nodes = [
        Node(RaceApi(api.operator, barrier), storage, instances, clock, default_settings())
        for _ in range(2)
    ]
    outcomes = await asyncio.gather(*(n.reconcile(obj) for n in nodes))
    details = sorted(o.detail for o in outcomes)
    assert details == ["converged", "lost"], outcomes
    assert storage.inject.calls["provision"] == 1
    assert instances.calls["start"] == 1
    assert (await status(api, "race"))["observed_status"] == "RUNNING"


async def test_second_request_in_same_process_is_coalesced(
    api: Api, node: Node, storage: FakeStorageProvider, instances: FakeInstanceController
) -> None:
    obj = await create(api, "coalesce")
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def provision(uid: str, labels: Any = None) -> None:
        entered.set()
        await gate.wait()

    storage.hook("provision", before=provision)
    first = asyncio.create_task(node.reconcile(obj))
    await entered.wait()
    # desired changes while PROVISIONING runs: accepted, applied after it completes
    await set_desired(api, "coalesce", "PENDING")
    second = await node.reconcile(await get(api, "coalesce"))
    assert second.detail == "busy"
    gate.set()
    outcome = await first
    assert outcome.detail == "converged"
    assert instances.calls["start"] == 0
    st = await status(api, "coalesce")
    assert st["display"] == "ARCHIVED"
    assert st["archive_key"]


# -- errors ------------------------------------------------------------------------------


async def test_retries_with_backoff_then_retry_exceeded_and_op_id_reused(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    obj = await create(api, "badimg", image_ref="registry.invalid/does-not-exist:1")
    op_ids: set[str] = set()
    delays: list[float] = []
    outcome = await node.reconcile(obj)
    for _ in range(10):
        st = await status(api, "badimg")
        if st.get("op_id"):
            op_ids.add(st["op_id"])
        if outcome.result != "retry":
            break
        delays.append(outcome.delay)
        # called again before the backoff ran out: nothing happens
        starts, probes = instances.calls["start"], instances.calls["inspect"]
        early = await node.reconcile(await get(api, "badimg"))
        assert instances.calls["inspect"] == probes  # not even an engine call
        assert early.result == "retry"
        assert early.detail == "backoff"
        assert instances.calls["start"] == starts
        clock.advance(outcome.delay + 0.01)
        outcome = await node.reconcile(await get(api, "badimg"))
    assert outcome.result == "terminal"
    assert instances.calls["start"] == 4  # the first attempt and three retries
    assert delays[0] < delays[1] < delays[2]  # growing backoff
    assert len(op_ids) == 1
    st = await status(api, "badimg")
    err = st["error_info"]
    assert err["reason"] == "RetryExceeded"
    assert err["is_terminal"] is True
    assert err["operation"] == "STARTING"
    assert err["error_count"] == 4
    assert err["context"]["code"] == "IMAGE_PULL_FAILED"
    assert st["previous_status"] == "STANDBY"
    assert st["observed_status"] == "ERROR"
    assert st["op_id"] in op_ids
    # left alone afterwards
    again = await node.reconcile(await get(api, "badimg"))
    assert again.result == "terminal"
    assert instances.calls["start"] == 4
    assert (
        node.ctx.metrics.registry.get_sample_value(
            "codehub_workspace_errors_total", {"reason": "RetryExceeded"}
        )
        == 1
    )

    # recovery (docs/errors.md) after fixing the image: converges and keeps the op_id
    await api.admin.patch_merge(
        NS, "badimg", {"spec": {"image_ref": "codehub/workspace-test:local"}}
    )
    await api.admin.patch_merge(
        NS,
        "badimg",
        {"status": {"error_info": None, "error_count": 0, "operation": "NONE"}},
        status=True,
    )
    outcome = await until_done(node, await get(api, "badimg"), clock)
    assert outcome.detail == "converged"
    st = await status(api, "badimg")
    assert st["observed_status"] == "RUNNING"
    assert st.get("error_info") is None
    assert st.get("op_id") is None  # completed: the id is released
    assert node.ctx.metrics.registry.get_sample_value(
        "codehub_reconcile_total", {"operation": "NONE", "result": "converged"}
    )


async def test_unreachable_engine_is_retried_then_succeeds(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    instances.fail_next("start", UnreachableError("engine down"), times=2)
    obj = await create(api, "flaky")
    outcome = await until_done(node, obj, clock)
    assert outcome.detail == "converged"
    assert instances.calls["start"] == 3
    st = await status(api, "flaky")
    assert st["observed_status"] == "RUNNING"
    assert st.get("error_info") is None
    assert st.get("error_count") == 0


async def test_operation_timeout_is_terminal_without_retry(
    api: Api, storage: FakeStorageProvider, instances: FakeInstanceController, clock: FakeClock
) -> None:
    node = Node(api.operator, storage, instances, clock, default_settings(timeout_starting=0.2))
    obj = await create(api, "slow", "STANDBY")
    await node.reconcile(obj)
    never = asyncio.Event()

    async def hanging_start(spec: Any) -> None:
        await never.wait()  # start never returns within the limit

    instances.hook("start", before=hanging_start)
    await set_desired(api, "slow", "RUNNING")
    outcome = await node.reconcile(await get(api, "slow"))
    assert outcome.result == "terminal"
    assert outcome.reason == "Timeout"
    st = await status(api, "slow")
    assert st["error_info"]["reason"] == "Timeout"
    assert st["error_info"]["is_terminal"] is True
    assert st["error_info"]["error_count"] == 1


async def test_timeout_measured_from_claim_across_retries(
    api: Api, storage: FakeStorageProvider, instances: FakeInstanceController, clock: FakeClock
) -> None:
    node = Node(api.operator, storage, instances, clock, default_settings(timeout_starting=10))
    instances.fail_next("start", UnreachableError("engine down"), times=5)
    obj = await create(api, "late")
    outcome = await node.reconcile(obj)
    assert outcome.result == "retry"
    clock.advance(11)
    outcome = await node.reconcile(await get(api, "late"))
    assert outcome.result == "terminal"
    assert (await status(api, "late"))["error_info"]["reason"] == "Timeout"


async def test_corrupted_archive_is_data_lost_and_recovers_after_fix(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "corrupt")
    uid = uid_of(obj)
    await node.reconcile(obj)
    storage.write_entries(uid, {"a.txt": FakeEntry("file", 0o644, b"precious", mtime=1)})
    await set_desired(api, "corrupt", "PENDING")
    await until_done(node, await get(api, "corrupt"), clock)
    key = (await status(api, "corrupt"))["archive_key"]
    good = storage.objects.get(key)
    assert good is not None
    storage.objects.put(key, b"garbage")

    await set_desired(api, "corrupt", "RUNNING")
    outcome = await until_done(node, await get(api, "corrupt"), clock)
    assert outcome.result == "terminal"
    assert storage.inject.calls["restore"] == 1  # DataLost is never retried
    st = await status(api, "corrupt")
    assert st["error_info"]["reason"] == "DataLost"
    assert st["error_info"]["context"]["code"] == "CHECKSUM_MISMATCH"
    assert st["observed_status"] == "ERROR"
    assert st["archive_key"] == key
    assert storage.objects.get(key) == b"garbage"  # nothing overwritten
    assert uid not in storage.volumes  # no half-restored volume that looks like STANDBY
    assert instances.calls["start"] == 1  # only the first start, before archiving

    storage.objects.put(key, good)
    await api.admin.patch_merge(
        NS,
        "corrupt",
        {"status": {"error_info": None, "error_count": 0, "operation": "NONE"}},
        status=True,
    )
    outcome = await until_done(node, await get(api, "corrupt"), clock)
    assert outcome.detail == "converged"
    assert storage.volumes[uid].entries["a.txt"].data == b"precious"
    assert (await status(api, "corrupt"))["display"] == "RUNNING"


async def test_volume_removed_behind_back_is_data_lost(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "vanish", "STANDBY")
    uid = uid_of(obj)
    await node.reconcile(obj)
    assert (await status(api, "vanish"))["observed_status"] == "STANDBY"
    del storage.volumes[uid]
    outcome = await node.reconcile(await get(api, "vanish"))
    assert outcome.result == "terminal"
    assert outcome.reason == "DataLost"
    st = await status(api, "vanish")
    assert st["error_info"]["reason"] == "DataLost"
    assert st["error_info"]["is_terminal"] is True
    assert st["observed_status"] == "ERROR"
    assert st["previous_status"] == "STANDBY"
    assert storage.inject.calls["provision"] == 1  # never silently re-provisioned
    # deletion still works from ERROR
    await api.admin.delete(NS, "vanish")
    assert (await until_done(node, await get(api, "vanish"), clock)).deleted


async def test_container_removed_behind_back_is_started_again(
    api: Api, node: Node, instances: FakeInstanceController
) -> None:
    obj = await create(api, "restart")
    uid = uid_of(obj)
    await node.reconcile(obj)
    await instances.remove_behind_back(uid)
    await node.monitor.pass_once()
    assert (await status(api, "restart"))["observed_status"] == "STANDBY"
    outcome = await node.reconcile(await get(api, "restart"))
    assert outcome.detail == "converged"
    assert instances.containers[uid].running
    assert (await status(api, "restart"))["observed_status"] == "RUNNING"


async def test_volume_missing_when_starting_is_data_lost_not_started(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "nostart", "STANDBY")
    uid = uid_of(obj)
    await node.reconcile(obj)
    calls = {"n": 0}

    async def volume_exists(u: str) -> None:
        # present when planning, gone when the STARTING actuator checks it
        calls["n"] += 1
        if calls["n"] == 2:
            storage.volumes.pop(u, None)

    storage.hook("volume_exists", before=volume_exists)
    await set_desired(api, "nostart", "RUNNING")
    outcome = await until_done(node, await get(api, "nostart"), clock)
    assert outcome.result == "terminal"
    assert instances.calls["start"] == 0
    assert uid not in instances.containers
    assert (await status(api, "nostart"))["error_info"]["reason"] == "DataLost"


# -- crash safety ------------------------------------------------------------------------


@pytest.mark.parametrize("crash_in", ["archive", "restore"])
async def test_crash_mid_operation_resumes_with_same_op_id(
    api: Api,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
    crash_in: str,
) -> None:
    first = Node(api.operator, storage, instances, clock, default_settings())
    obj = await create(api, f"crash-{crash_in}")
    name = f"crash-{crash_in}"
    uid = uid_of(obj)
    await first.reconcile(obj)
    storage.write_entries(uid, {"keep.txt": FakeEntry("file", 0o644, b"data", mtime=5)})
    if crash_in == "restore":
        await set_desired(api, name, "PENDING")
        await until_done(first, await get(api, name), clock)

    entered = asyncio.Event()

    async def hang(*args: Any) -> None:
        # the work is done (uploaded / partially restored) ...
        entered.set()
        await asyncio.Event().wait()  # ... and then the process dies

    storage.hook(crash_in, after=hang)
    await set_desired(api, name, "PENDING" if crash_in == "archive" else "RUNNING")
    task = asyncio.create_task(first.reconcile(await get(api, name)))
    await entered.wait()
    task.cancel()  # SIGKILL: nothing after this point runs
    with contextlib.suppress(asyncio.CancelledError):
        await task
    st = await status(api, name)
    assert st["operation"] == ("ARCHIVING" if crash_in == "archive" else "RESTORING")
    op_id = st["op_id"]
    storage.unhook(crash_in)

    second = Node(api.operator, storage, instances, clock, default_settings())
    outcome = await until_done(second, await get(api, name), clock)
    assert outcome.detail == "converged"
    st = await status(api, name)
    if crash_in == "archive":
        assert st["archive_key"] == naming.archive_key(uid, op_id)
        assert st["display"] == "ARCHIVED"
        assert storage.inject.calls["archive"] == 2  # same op_id: the upload is reused
    else:
        assert st["display"] == "RUNNING"
        assert storage.volumes[uid].entries["keep.txt"].data == b"data"
        assert storage.inject.calls["restore"] == 2


async def test_pause_hook_sleeps_inside_the_named_actuator(
    api: Api, storage: FakeStorageProvider, instances: FakeInstanceController, clock: FakeClock
) -> None:
    node = Node(
        api.operator,
        storage,
        instances,
        clock,
        default_settings(test_pause_actuators="provision=42, start=7"),
    )
    before = clock.monotonic()
    obj = await create(api, "paused")
    assert (await node.reconcile(obj)).detail == "converged"
    assert clock.monotonic() - before == pytest.approx(49)


async def test_transitions_post_kubernetes_events(api: Api, node: Node, clock: FakeClock) -> None:
    obj = await create(api, "events", image_ref="registry.invalid/does-not-exist:1")
    outcome = await until_done(node, obj, clock)
    assert outcome.result == "terminal"
    events = await api.admin.list_events(NS, "events")
    by_reason = [str(e.get("reason")) for e in events]
    # short operations are told by their outcome alone (docs/events.md)
    assert by_reason.count("OperationStarted") == 0
    assert by_reason.count("OperationCompleted") == 1  # PROVISIONING
    assert by_reason.count("OperationRetrying") == 3  # STARTING's attempts, named
    assert by_reason.count("OperationFailed") == 1
    completed = next(e for e in events if e["reason"] == "OperationCompleted")
    assert completed["message"].startswith("PROVISIONING completed (op_id ")
    retrying = sorted(e["message"] for e in events if e["reason"] == "OperationRetrying")
    assert [m[:25] for m in retrying] == [f"STARTING attempt {n} failed" for n in (1, 2, 3)]
    failed = next(e for e in events if e["reason"] == "OperationFailed")
    assert failed["type"] == "Warning"
    assert failed["involvedObject"]["uid"] == uid_of(obj)
    assert "RetryExceeded" in failed["message"]


async def test_deletion_overrides_a_terminal_error_of_another_operation(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "doomed", image_ref="registry.invalid/does-not-exist:1")
    uid = uid_of(obj)
    assert (await until_done(node, obj, clock)).result == "terminal"
    failed = await status(api, "doomed")
    assert failed["operation"] == "STARTING"
    await api.admin.delete(NS, "doomed")
    outcome = await until_done(node, await get(api, "doomed"), clock)
    assert outcome.deleted
    assert uid not in storage.volumes
    st = await status(api, "doomed")
    assert st["operation"] == "DELETING"
    assert st["op_id"] != failed["op_id"]
    assert st.get("error_info") is None


async def test_a_reconciler_whose_operation_was_taken_cannot_write(
    api: Api, storage: FakeStorageProvider, instances: FakeInstanceController, clock: FakeClock
) -> None:
    node = Node(api.operator, storage, instances, clock, default_settings())
    obj = await create(api, "fenced", "STANDBY")
    gate, entered = asyncio.Event(), asyncio.Event()

    async def provision(uid: str, labels: Any = None) -> None:
        entered.set()
        await gate.wait()

    storage.hook("provision", before=provision)
    task = asyncio.create_task(node.reconcile(obj))
    await entered.wait()
    # meanwhile the operation is taken from it (an administrator resets it)
    await api.admin.patch_merge(
        NS, "fenced", {"status": {"operation": "NONE", "op_id": "someone-else"}}, status=True
    )
    gate.set()
    outcome = await task
    assert outcome.detail == "lost"
    st = await status(api, "fenced")
    assert st["operation"] == "NONE"
    assert st["op_id"] == "someone-else"


async def test_data_vanishing_during_an_operation_is_data_lost_not_retried(
    api: Api,
    node: Node,
    storage: FakeStorageProvider,
    instances: FakeInstanceController,
    clock: FakeClock,
) -> None:
    obj = await create(api, "gone-mid-stop")
    uid = uid_of(obj)
    await node.reconcile(obj)

    async def lose_volume(u: str) -> None:
        storage.volumes.pop(u, None)  # the volume disappears with the container

    instances.hook("delete", after=lose_volume)
    await set_desired(api, "gone-mid-stop", "STANDBY")
    outcome = await until_done(node, await get(api, "gone-mid-stop"), clock)
    assert outcome.result == "terminal"
    assert outcome.reason == "DataLost"
    assert instances.calls["delete"] == 1
    st = await status(api, "gone-mid-stop")
    assert st["error_info"]["operation"] == "STOPPING"
    assert st["previous_status"] == "RUNNING"
    assert uid not in storage.volumes


async def test_observed_data_loss_is_recorded_through_the_gate_without_an_operation(
    api: Api, node: Node, storage: FakeStorageProvider, instances: FakeInstanceController
) -> None:
    fresh = await create(api, "fresh", "STANDBY")
    await node.reconcile(fresh)
    await create(api, "new", "PENDING")  # nothing yet, never held data: not an error
    uid = uid_of(fresh)
    storage.volumes.pop(uid)
    report = await node.monitor.pass_once()
    assert report.confirmed == 1
    # the monitor never writes an unexplained ERROR itself: it hands it to the gate
    assert (await status(api, "fresh"))["observed_status"] == "STANDBY"
    assert await node.gate.drain() >= 1
    st = await status(api, "fresh")
    assert st["error_info"]["reason"] == "DataLost"
    assert st["previous_status"] == "STANDBY"
    assert st["operation"] == "NONE"
    assert st["observed_status"] == "ERROR"
    assert storage.inject.calls["provision"] == 1  # never silently re-provisioned
    assert (await status(api, "new"))["observed_status"] == "PENDING"


async def test_safety_net_pass_reconciles_only_unsettled_workspaces(
    api: Api, node: Node, instances: FakeInstanceController
) -> None:
    from codehub.operator.safety_net import SafetyNet

    settled = await create(api, "settled")
    drifted = await create(api, "drifted")
    await node.reconcile(settled)
    await node.reconcile(drifted)
    uid = uid_of(drifted)
    await instances.remove_behind_back(uid)
    await node.monitor.observe_one(NS, "drifted")  # observed STANDBY, desired RUNNING
    net = SafetyNet(node.ctx, node.gate)
    assert await net.pass_once() == 1
    assert await node.gate.drain() == 1
    assert instances.containers[uid].running
    assert (await status(api, "drifted"))["observed_status"] == "RUNNING"
    probes = instances.calls["inspect"]
    assert await net.pass_once() == 0  # everything settled: no engine call at all
    assert instances.calls["inspect"] == probes


async def test_a_stopped_container_without_volume_is_the_same_error_for_both(
    api: Api, node: Node, storage: FakeStorageProvider, instances: FakeInstanceController
) -> None:
    """Reconciler and HealthMonitor classify a stopped container alike (rule 2)."""
    obj = await create(api, "stopped")
    await node.reconcile(obj)
    uid = uid_of(obj)
    await instances.stop_behind_back(uid)
    storage.volumes.pop(uid)
    outcome = await node.reconcile(await get(api, "stopped"))
    assert outcome.result == "terminal"
    st = await status(api, "stopped")
    assert st["error_info"]["reason"] == "Mismatch"
    assert st["error_info"]["context"]["instance"] == "stopped"
    assert st["observed_status"] == "ERROR"


async def test_endpoint_is_recorded_while_running(
    api: Api, node: Node, instances: FakeInstanceController
) -> None:
    obj = await create(api, "ep")
    await node.reconcile(obj)
    uid = uid_of(obj)
    st = await status(api, "ep")
    assert st["endpoint"] == f"http://127.0.0.1:{instances.containers[uid].port}"
    await set_desired(api, "ep", "STANDBY")
    await node.reconcile(await get(api, "ep"))
    assert (await status(api, "ep")).get("endpoint") is None


async def test_gate_exports_controller_runtime_metrics(api: Api, node: Node) -> None:
    obj = await create(api, "metrics", "STANDBY")
    await node.reconcile(obj)
    node.gate.add(NS, "metrics")
    node.gate.add(NS, "metrics")  # deduplicated
    assert await node.gate.drain() == 1
    sample = node.ctx.metrics.registry.get_sample_value
    assert (
        sample(
            "controller_runtime_reconcile_total", {"controller": "workspace", "result": "success"}
        )
        == 2
    )
    assert (
        sample("controller_runtime_reconcile_time_seconds_count", {"controller": "workspace"}) == 2
    )
    assert sample("workqueue_adds_total", {"name": "workspace"}) == 1
    assert sample("workqueue_depth", {"name": "workspace"}) == 0
    assert sample("workqueue_queue_duration_seconds_count", {"name": "workspace"}) == 1


async def test_a_queued_key_that_keeps_failing_is_retried_with_backoff(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    instances.fail_next("start", UnreachableError("engine down"), times=1)
    await create(api, "requeue")
    node.gate.add(NS, "requeue")
    assert await node.gate.drain() == 1
    assert node.gate.queue.waiting() == 1  # parked for the operation's backoff
    assert (
        node.ctx.metrics.registry.get_sample_value("workqueue_retries_total", {"name": "workspace"})
        == 1
    )
    wait = node.gate.queue.next_ready_in()
    assert wait is not None
    assert wait > 0
    clock.advance(wait + 0.01)
    assert await node.gate.drain() == 1
    assert (await status(api, "requeue"))["observed_status"] == "RUNNING"


# -- the container engine unreachable (docs/errors.md) -----------------------------------

ENGINE_DOWN = "inspect ws-x: Docker engine unreachable (ConnectionError)"


def claim_invariant(st: dict[str, Any]) -> None:
    """No operation without its claim."""
    assert (st.get("operation") or "NONE") == "NONE" or st.get("op_id"), st


async def test_engine_down_pending_work_retries_with_backoff_then_error_without_claim(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    """Long because the story (engine gone, attempts, terminal, recovery) is the point."""
    obj = await create(api, "nodock")
    assert (await until_done(node, obj, clock)).detail == "converged"
    await set_desired(api, "nodock", "STANDBY")
    # one failure more than the attempts: the engine is still down when the terminal
    # error is observed (rule 1 needs no engine)
    instances.fail_next("inspect", UnreachableError(ENGINE_DOWN), times=5)
    outcome = await node.reconcile(await get(api, "nodock"))
    delays: list[float] = []
    counts: list[int] = []
    while outcome.result == "retry":
        st = await status(api, "nodock")
        claim_invariant(st)
        assert st["operation"] == "NONE"
        counts.append(st["error_count"])
        assert st["error_info"]["is_terminal"] is False
        assert st["error_info"]["reason"] == "Unreachable"
        delays.append(outcome.delay)
        probes = instances.calls["inspect"]
        early = await node.reconcile(await get(api, "nodock"))
        assert (early.result, early.detail) == ("retry", "backoff")
        assert instances.calls["inspect"] == probes  # an early wake-up spends nothing
        clock.advance(outcome.delay + 0.01)
        outcome = await node.reconcile(await get(api, "nodock"))
    assert outcome.result == "terminal"
    assert counts == [1, 2, 3]
    assert delays[0] < delays[1] < delays[2]
    st = await status(api, "nodock")
    claim_invariant(st)
    assert (st["operation"], st.get("op_id")) == ("NONE", None)
    err = st["error_info"]
    assert (err["reason"], err["is_terminal"], err["error_count"]) == ("RetryExceeded", True, 4)
    assert err["operation"] == "STOPPING"
    assert err["context"]["started"] is False
    assert "STOPPING could not start 4 times" in err["message"]
    assert "container engine unreachable: inspect ws-x" in err["message"]
    assert st["previous_status"] == "RUNNING"
    assert st["observed_status"] == "ERROR"
    assert instances.calls["stop"] == 0
    held = await node.reconcile(await get(api, "nodock"))
    assert (held.result, held.detail) == ("terminal", "held")

    # the engine is back: an administrator's recovery lets it converge
    await api.admin.patch_merge(
        NS, "nodock", {"metadata": {"annotations": {"codehub.io/recover": "1"}}}
    )
    outcome = await until_done(node, await get(api, "nodock"), clock)
    assert outcome.detail == "converged"
    st = await status(api, "nodock")
    assert (st["observed_status"], st.get("error_info")) == ("STANDBY", None)


async def test_engine_down_idle_converged_workspace_never_errors(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    obj = await create(api, "idle")
    assert (await until_done(node, obj, clock)).detail == "converged"
    instances.fail_next("inspect", UnreachableError(ENGINE_DOWN), times=6)
    for _ in range(6):
        outcome = await node.reconcile(await get(api, "idle"))
        assert (outcome.result, outcome.detail) == ("retry", "observe")
        clock.advance(outcome.delay + 0.01)
    st = await status(api, "idle")
    assert st.get("error_info") is None
    assert st.get("error_count", 0) == 0
    assert st["observed_status"] == "RUNNING"


async def test_engine_down_unstarted_error_cleared_when_no_longer_wanted(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    obj = await create(api, "revert")
    assert (await until_done(node, obj, clock)).detail == "converged"
    for engine_back in (False, True):
        await set_desired(api, "revert", "STANDBY")
        instances.fail_next("inspect", UnreachableError(ENGINE_DOWN), times=2 - engine_back)
        outcome = await node.reconcile(await get(api, "revert"))
        assert outcome.reason == "Unreachable"
        assert (await status(api, "revert"))["error_count"] == 1
        await set_desired(api, "revert", "RUNNING")  # the user changed their mind
        clock.advance(outcome.delay + 0.01)
        outcome = await node.reconcile(await get(api, "revert"))
        assert outcome.detail == ("converged" if engine_back else "observe")
        st = await status(api, "revert")
        assert (st.get("error_info"), st["error_count"]) == (None, 0)
        assert st["observed_status"] == "RUNNING"
    assert instances.calls["stop"] == 0


async def test_engine_down_deletion_ends_in_error_then_completes_when_back(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    obj = await create(api, "gone")
    assert (await until_done(node, obj, clock)).detail == "converged"
    await api.admin.delete(NS, "gone")
    instances.fail_next("inspect", UnreachableError(ENGINE_DOWN), times=5)
    outcome = await until_done(node, await get(api, "gone"), clock)
    assert outcome.result == "terminal"
    st = await status(api, "gone")
    assert (st["operation"], st["error_info"]["operation"]) == ("NONE", "DELETING")
    # a terminal error is not written again while the engine stays down
    again = await node.reconcile(await get(api, "gone"))
    assert (again.result, again.detail) == ("retry", "observe")
    assert (await status(api, "gone"))["error_count"] == 4
    outcome = await until_done(node, await get(api, "gone"), clock)  # engine back
    assert outcome.deleted


async def test_health_monitor_without_engine_shows_terminal_errors_only(
    api: Api, node: Node, instances: FakeInstanceController, clock: FakeClock
) -> None:
    """Rule 1 needs no engine; nothing else is concluded from an engine that cannot be
    asked (no DataLost)."""
    for name in ("held", "fine"):
        assert (await until_done(node, await create(api, name), clock)).detail == "converged"
    terminal = {"reason": "ActionFailed", "is_terminal": True, "operation": "STARTING"}
    await api.admin.patch_merge(NS, "held", {"status": {"error_info": terminal}}, status=True)
    instances.fail_next("list_instances", UnreachableError("list: Docker engine unreachable"))
    with pytest.raises(UnreachableError):
        await node.monitor.pass_once()
    assert (await status(api, "held"))["observed_status"] == "ERROR"
    fine = await status(api, "fine")
    assert (fine["observed_status"], fine.get("error_info")) == ("RUNNING", None)
