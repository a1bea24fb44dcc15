"""The leader's components and the term's context, built at the composition root.

Each component is independent: it gets the term's context (API, adapters, clock,
metrics), the term's one ``ReconcileGate`` and the term's one ``Informer`` (a watch-fed
cache of every workspace, read by the periodic passes instead of listing; started first,
docs/coordinator.md), and talks to the others only through the resource or that gate
(docs/adr/0005-one-reconcile-gate.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

from codehub.crd_like.client.informer import Informer, without_managed_fields
from codehub.operator import handlers
from codehub.operator.archive_gc import run_archive_gc
from codehub.operator.clock import SystemClock
from codehub.operator.context import OperatorContext
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.leader import default_node_id
from codehub.operator.orphan_sweeper import run_orphan_sweeper
from codehub.operator.pausing import wrap as wrap_test_pauses
from codehub.operator.reconcile_view import needs_reconcile
from codehub.operator.safety_net import SafetyNet
from codehub.operator.settings import Settings
from codehub.operator.ttl_manager import TtlManager

if TYPE_CHECKING:
    from codehub.operator.coordinator import LeaderTerm

#: kopf's own shutdown (stop flag) runs its cleanup activities and closes its sessions.
KOPF_GRACE = 5.0


ComponentRun = Callable[["LeaderTerm"], Awaitable[None]]


@dataclass(frozen=True)
class LeaderComponent:
    """A leader-only background task: ``run(term)`` works until it is cancelled."""

    name: str
    run: ComponentRun
    #: On a graceful stop (SIGTERM while still leader) the component gets this long to
    #: finish after its stop callbacks ran; losing the lock always cancels at once.
    grace: float = 0.0


@dataclass
class ComponentState:
    state: str = "standby"  # standby | starting | running | restarting | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.time)

    def set(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.since = time.time()
        if error is not None:
            self.last_error = error


# --- the components ------------------------------------------------------------------


async def run_kopf(term: LeaderTerm) -> None:
    """The real kopf operator, standalone and cluster-wide, with the reconciler handlers."""
    registry = kopf.OperatorRegistry()
    handlers.register(registry, term.ctx, term.gate)
    stop = asyncio.Event()
    ready = asyncio.Event()
    term.on_stop(stop.set)
    waiter = asyncio.create_task(_mark_ready(term, "kopf", ready))
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=True,
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        waiter.cancel()
    if not term.stopping:
        raise RuntimeError("kopf stopped on its own")


def build_informer(ctx: Any) -> Informer:
    """The term's workspace cache, indexed by ``needs_reconcile`` for the safety net;
    no pass writes a workspace back whole, so its managedFields are not kept."""
    return Informer(
        ctx.api,
        index=needs_reconcile,
        transform=without_managed_fields,
        resync_period=ctx.settings.informer_resync_interval,
    )


async def run_informer(term: LeaderTerm) -> None:
    """Fill the cache, then keep it current; the passes wait for the first List."""
    informer = term.informer
    exported = term.ctx.metrics.informer
    exported.source = informer
    waiter = asyncio.create_task(_mark_synced(term, informer))
    try:
        await informer.run()
    finally:
        waiter.cancel()
        if exported.source is informer:
            exported.source = None


async def run_health_monitor(term: LeaderTerm) -> None:
    term.mark_running("health-monitor")
    await HealthMonitor(term.ctx, term.gate, term.informer).run()


async def run_safety_net(term: LeaderTerm) -> None:
    term.mark_running("safety-net")
    await SafetyNet(term.ctx, term.gate, term.informer).run()


async def run_ttl_manager(term: LeaderTerm) -> None:
    term.mark_running("ttl-manager")
    await TtlManager(term.ctx, source=term.informer).run()


async def run_reconcile_workers(term: LeaderTerm) -> None:
    term.mark_running("reconcile-workers")
    await term.gate.run()


def leader_components() -> list[LeaderComponent]:
    """Everything the leader runs; the informer first, so the passes find it filling,
    and kopf last, so the others exist before kopf starts."""
    return [
        LeaderComponent("informer", run_informer),
        LeaderComponent("reconcile-workers", run_reconcile_workers),
        LeaderComponent("health-monitor", run_health_monitor),
        LeaderComponent("safety-net", run_safety_net),
        LeaderComponent("ttl-manager", run_ttl_manager),
        LeaderComponent("orphan-sweeper", run_orphan_sweeper),
        LeaderComponent("archive-gc", run_archive_gc),
        LeaderComponent("kopf", run_kopf, grace=KOPF_GRACE),
    ]


async def _mark_ready(term: LeaderTerm, name: str, ready: asyncio.Event) -> None:
    await ready.wait()
    term.mark_running(name)


async def _mark_synced(term: LeaderTerm, informer: Informer) -> None:
    await informer.wait_synced()
    term.mark_running("informer")


# --- the operator context ------------------------------------------------------------


async def build_context(settings: Settings, scope_labels: Mapping[str, str], metrics: Any) -> Any:
    """The OperatorContext of one term: API client, adapters (engine, volumes, archive
    bucket, the labelled objects the orphan sweeper removes), clock, metrics.

    With ``CODEHUB_TEST_PAUSE_ACTUATORS`` set (tests only) the adapters are wrapped in
    pausing ones here, so the production actuator path has no pause code.
    """
    from codehub.adapters.docker_instance import DockerInstanceController
    from codehub.adapters.engine_objects import DockerLabelledObjects
    from codehub.adapters.s3_object_store import S3ObjectStore
    from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider
    from codehub.crd_like.client.api import ApiClient

    docker_config = settings.docker_config(scope_labels)
    clock = SystemClock()
    instances, storage = wrap_test_pauses(
        settings.test_pause_actuators,
        DockerInstanceController(docker_config),
        VolumeS3StorageProvider(docker_config=docker_config, s3_config=settings.s3_config()),
        clock,
    )
    return OperatorContext(
        settings=settings,
        api=ApiClient(settings.server, settings.token, ca_file=settings.ca_file),
        instances=instances,
        storage=storage,
        objects=S3ObjectStore(settings.s3_config()),
        engine_objects=DockerLabelledObjects(docker_config),
        clock=clock,
        metrics=metrics,
        # Events name the node that acted, so double leadership would show in `describe`.
        component=f"codehub-operator/{settings.node_id or default_node_id()}",
    )


async def close_context(ctx: Any) -> None:
    for name in ("api", "instances", "storage", "objects", "engine_objects"):
        closer = getattr(getattr(ctx, name, None), "close", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
    closer = getattr(ctx, "close", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


ContextFactory = Callable[[Settings, Mapping[str, str], Any], Awaitable[Any]]
