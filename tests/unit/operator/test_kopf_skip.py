"""kopf passes over status-only events of handled workspaces (``operator/kopf_skip.py``):
the real kopf processing with our registry and settings, event by event, with kopf's
API writes and our handlers recorded. Pins the kopf behaviour and internals the skip
relies on (docs/adr/0014-kopf-writes.md, "2026-11-28, session 6")."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, orchestration, processing, queueing, running

from codehub.operator import handlers, kopf_skip
from codehub.operator.kopf_memory import TermDiffBaseStorage
from codehub.operator.metrics import Metrics
from codehub.operator.reconcile_view import Outcome
from codehub.operator.settings import Settings

RESOURCE = references.Resource(
    "codehub.io", "v1alpha1", "workspaces", kind="Workspace", namespaced=True
)


def workspace(rv: int, desired: str = "RUNNING", display: str = "PENDING") -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": "w",
            "namespace": "alice",
            "uid": "u1",
            "resourceVersion": str(rv),
            "finalizers": [handlers.FINALIZER],
            "annotations": {"codehub.io/desired-state-source": "api"},
            "managedFields": [{"manager": "codehub", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"desired_state": desired, "image_ref": "img"},
        "status": {"operation": "NONE", "display": display},
    }


class Gate:
    """Stands for the reconcile gate: records what kopf's handlers hand it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.outcome = Outcome("done", detail="converged")

    async def reconcile_now(self, body: Any) -> Outcome:
        self.bodies.append(dict(body))
        return self.outcome


class Ctx:
    """What the handlers read of the operator's context."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.settings = Settings()


class Kopf:
    """One kopf run's state, fed events as its per-object worker would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        logging.getLogger("kopf").setLevel(logging.CRITICAL)
        self.gate = Gate()
        self.registry = kopf.OperatorRegistry()
        handlers.register(self.registry, Ctx(), self.gate)  # type: ignore[arg-type]
        self.settings = kopf.OperatorSettings()
        handlers.configure_kopf(self.settings)
        self.memories = inventory.ResourceMemories()
        self.patches: list[dict[str, Any]] = []
        self.kopf_runs = 0

        async def patch_obj(*, patch: kopf.Patch, **_: Any) -> tuple[dict[str, Any], None]:
            body: dict[str, Any] = {"metadata": {"resourceVersion": "999", "finalizers": []}}
            for fn in patch.fns:  # functional patches: the finalizer's
                fn(body)  # type: ignore[arg-type]
            self.patches.append({**copy.deepcopy(dict(patch)), "fns": body["metadata"]})
            return body, None

        causes = processing.process_resource_causes

        async def counted(**kwargs: Any) -> Any:
            self.kopf_runs += 1
            return await causes(**kwargs)

        monkeypatch.setattr("kopf._cogs.clients.patching.patch_obj", patch_obj)
        monkeypatch.setattr(processing, "process_resource_causes", counted)

    @property
    def storage(self) -> TermDiffBaseStorage:
        storage = self.settings.persistence.diffbase_storage
        assert isinstance(storage, TermDiffBaseStorage)
        return storage

    def kwargs(self, etype: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "lifecycle": lifecycles.all_at_once,
            "indexers": indexing.OperatorIndexers(),
            "registry": self.registry,
            "settings": self.settings,
            "memories": self.memories,
            "memobase": kopf.Memo(),
            "resource": RESOURCE,
            "raw_event": {"type": etype, "object": body},
            "event_queue": asyncio.Queue(),
        }

    async def event(self, etype: str | None, body: dict[str, Any]) -> None:
        await processing.process_resource_event(**self.kwargs(etype, body))

    async def unwrapped(self, etype: str | None, body: dict[str, Any]) -> Any:
        original = processing.process_resource_event.__wrapped__  # type: ignore[attr-defined]
        return await original(**self.kwargs(etype, body))


@pytest.fixture
def k(monkeypatch: pytest.MonkeyPatch) -> Kopf:
    return Kopf(monkeypatch)


def test_register_installs_the_skip() -> None:
    handlers.register(kopf.OperatorRegistry(), Ctx(), Gate())  # type: ignore[arg-type]
    assert kopf_skip.installed()
    kopf_skip.install()  # idempotent: one wrapper, around kopf's own function
    inner = processing.process_resource_event.__wrapped__  # type: ignore[attr-defined]
    assert not getattr(inner, "__wrapped__", None)
    assert inner.__module__ == "kopf._core.reactor.processing"


async def test_kopf_binds_its_processor_when_it_starts() -> None:
    """The wrapper takes effect only because kopf looks the function up in its module
    when ``spawn_tasks`` builds the processor, and passes every argument by name (the
    wrapper takes keywords only); fails if a kopf version does otherwise."""
    spawn = inspect.getsource(running.spawn_tasks)
    assert "functools.partial(processing.process_resource_event," in spawn
    assert "functools.partial(processor, resource=resource)" in inspect.getsource(orchestration)
    assert "await processor(\n                raw_event=raw_event," in inspect.getsource(
        queueing.worker
    )
    original = processing.process_resource_event.__wrapped__  # type: ignore[attr-defined]
    params = inspect.signature(original).parameters
    for name in ("raw_event", "settings", "registry", "resource", "memories", "memobase"):
        assert name in params
    memory = inventory.ResourceMemory()
    assert not memory.fully_handled_once
    assert memory.remaining_patch is None
    assert memory.daemons_memory.live_fresh_body is None


async def test_kopf_does_nothing_for_a_status_only_event_of_a_handled_workspace(
    k: Kopf,
) -> None:
    """What the skip saves must be nothing but work: kopf's own processing of such an
    event calls no handler, writes nothing and expects no version."""
    await k.event("ADDED", workspace(1))
    assert len(k.gate.bodies) == 1
    assert k.patches == []
    assert await k.unwrapped("MODIFIED", workspace(2, display="STARTING")) is None
    assert len(k.gate.bodies) == 1
    assert k.patches == []


async def test_status_only_events_skip_kopfs_processing(k: Kopf) -> None:
    await k.event("ADDED", workspace(1))
    runs, skipped = k.kopf_runs, kopf_skip.skipped()
    assert [b["metadata"]["resourceVersion"] for b in k.gate.bodies] == ["1"]
    for rv, display in ((2, "STARTING"), (3, "RUNNING"), (4, "RUNNING")):
        await k.event("MODIFIED", workspace(rv, display=display))
    assert k.kopf_runs == runs  # kopf's machinery never ran for them
    assert kopf_skip.skipped() == skipped + 3
    assert len(k.gate.bodies) == 1
    assert k.patches == []


async def test_a_create_still_running_its_handler_is_not_skipped(k: Kopf) -> None:
    k.gate.outcome = Outcome("retry", delay=0.1, detail="engine")
    await k.event("ADDED", workspace(1))
    assert k.patches  # kopf records the handler's retry in its progress annotations
    runs = k.kopf_runs
    await k.event("MODIFIED", workspace(2, display="STARTING"))
    assert k.kopf_runs == runs + 1  # nothing handled yet: kopf decides


async def test_spec_changes_and_deletion_reach_the_handlers(k: Kopf) -> None:
    await k.event("ADDED", workspace(1))
    await k.event("MODIFIED", workspace(2, display="RUNNING"))
    await k.event("MODIFIED", workspace(3, desired="STANDBY", display="RUNNING"))
    assert [b["spec"]["desired_state"] for b in k.gate.bodies] == ["RUNNING", "STANDBY"]
    runs = k.kopf_runs
    await k.event("MODIFIED", workspace(4, desired="STANDBY", display="STANDBY"))
    assert k.kopf_runs == runs  # the new spec was handled: status-only again
    deleting = workspace(5, desired="STANDBY", display="STANDBY")
    deleting["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    await k.event("MODIFIED", deleting)
    assert len(k.gate.bodies) == 3
    assert k.gate.bodies[-1]["metadata"]["deletionTimestamp"]


async def test_a_label_change_reaches_kopf(k: Kopf) -> None:
    await k.event("ADDED", workspace(1))
    labelled = workspace(2)
    labelled["metadata"]["labels"] = {"team": "a"}
    assert not k.storage.unchanged(labelled)
    await k.event("MODIFIED", labelled)
    assert len(k.gate.bodies) == 2  # an update to kopf: the handler runs


async def test_a_missing_finalizer_is_still_added_by_kopf(k: Kopf) -> None:
    await k.event("ADDED", workspace(1))
    bare = workspace(2, display="RUNNING")
    bare["metadata"]["finalizers"] = []
    await k.event("MODIFIED", bare)
    assert [p["fns"] for p in k.patches] == [
        {"resourceVersion": "999", "finalizers": [handlers.FINALIZER]}
    ]


async def test_parts_outside_the_essence_are_adopted_after_kopfs_noop(k: Kopf) -> None:
    """An annotation kopf leaves out of the essence (kubectl's, kopf's progress) changes
    the parts but not the essence: kopf decides once (a noop), then it skips again."""
    await k.event("ADDED", workspace(1))
    applied = workspace(2, display="STARTING")
    applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    runs = k.kopf_runs
    await k.event("MODIFIED", applied)
    assert k.kopf_runs == runs + 1
    assert len(k.gate.bodies) == 1
    again = copy.deepcopy(applied)
    again["status"]["display"] = "RUNNING"
    await k.event("MODIFIED", again)
    assert k.kopf_runs == runs + 1


async def test_a_new_term_handles_every_workspace_again(k: Kopf) -> None:
    """Nothing is skipped without this term's handling: the initial listing (kopf's
    ``None`` type) and a fresh storage both reach the create handler."""
    await k.event(None, workspace(7, display="RUNNING"))
    assert len(k.gate.bodies) == 1
    other = TermDiffBaseStorage()
    assert not other.unchanged(workspace(8, display="RUNNING"))


async def test_an_error_in_the_check_leaves_the_event_to_kopf(
    k: Kopf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs outside kopf's error throttling, where an exception would stop
    kopf's watcher: it falls back to kopf's processing instead."""
    await k.event("ADDED", workspace(1))

    def broken(*_: Any, **__: Any) -> bool:
        raise RuntimeError("broken")

    monkeypatch.setattr(TermDiffBaseStorage, "unchanged", broken)
    runs = k.kopf_runs
    await k.event("MODIFIED", workspace(2, desired="STANDBY"))
    assert k.kopf_runs == runs + 1
    assert [b["spec"]["desired_state"] for b in k.gate.bodies] == ["RUNNING", "STANDBY"]
