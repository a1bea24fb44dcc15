"""kopf wiring: every handler goes through the reconcile gate (``gate.reconcile_now``).

kopf decides *when* to look at a workspace (create, spec update, operator restart,
deletion); ``reconcile`` decides *what* to do from the current resource and the real
resources; the gate keeps it to one reconcile per workspace at a time, shared with the
safety net and the HealthMonitor's hand-overs. The periodic safety net is not a kopf
timer: a timer sees the body kopf last processed, which can lag behind the resource, so
the pass works from a fresh listing instead (``safety_net.SafetyNet``).

Outcomes map to kopf as follows: ``done`` returns, ``retry`` raises
``kopf.TemporaryError(delay)``, ``terminal`` returns (the workspace waits for an
administrator) — except in the deletion handler, which returns only once the workspace's
resources are gone, so the finalizer holds until then.

kopf's handler progress (retries of a handler that raised) lives in ``kopf.codehub.io/*``
annotations: status is ours and the shim validates it. The last-handled configuration
that kopf diffs against is kept in memory for the term (``kopf_memory``), so a handled
create or spec change costs kopf no write, and the status-only events of a handled
workspace never reach kopf's per-event machinery (``kopf_skip``;
docs/adr/0014-kopf-writes.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from codehub.crd_like.identity import DESIRED_SOURCE_ANNOTATION, GROUP, PLURAL, VERSION
from codehub.operator import kopf_skip
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.kopf_memory import KeyCachingProgressStorage, TermDiffBaseStorage
from codehub.operator.reconcile_view import Outcome, needs_reconcile

__all__ = ["FINALIZER", "configure_kopf", "needs_reconcile", "raise_for", "register"]

log = logging.getLogger(__name__)

FINALIZER = "codehub.io/finalizer"
#: kopf's own annotations (handler progress) get a sub-domain of their own so they never
#: collide with annotations other writers put under codehub.io/.
ANNOTATION_PREFIX = "kopf.codehub.io"
#: Annotation a writer of spec.desired_state may set to say who it is (metric label).
DESIRED_SOURCES = frozenset({"user", "ttl", "wake", "api", "recovery"})


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext, gate: ReconcileGate) -> None:
    """Register the operator's handlers for Workspaces in ``registry`` (and let kopf pass
    over status-only events of handled workspaces, ``kopf_skip``)."""
    kopf_skip.install()
    settings = ctx.settings
    reconcile = gate.reconcile_now
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=ctx.settings.server,
            token=ctx.settings.token,
            scheme="Bearer",
            ca_path=ctx.settings.ca_file,
            default_namespace="default",
        )

    @kopf.on.resume(*resource, registry=registry, id="resume")
    async def on_resume(body: Mapping[str, Any], **_: Any) -> None:
        raise_for(await reconcile(body))

    @kopf.on.create(*resource, registry=registry, id="create")
    async def on_create(body: Mapping[str, Any], **_: Any) -> None:
        raise_for(await reconcile(body))

    @kopf.on.update(*resource, registry=registry, id="update")
    async def on_update(body: Mapping[str, Any], diff: Any = (), **_: Any) -> None:
        if _desired_changed(diff):
            ctx.metrics.desired_state_changes.labels(source=desired_source(body)).inc()
        raise_for(await reconcile(body))

    @kopf.on.delete(*resource, registry=registry, id="delete")
    async def on_delete(body: Mapping[str, Any], **_: Any) -> None:
        outcome = await reconcile(body)
        if outcome.deleted:
            return
        delay = outcome.delay
        if outcome.result != "retry" or delay <= 0:
            delay = max(settings.reconciler_interval, 1.0)
        raise kopf.TemporaryError(f"deletion not complete ({outcome.detail})", delay=delay)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = KeyCachingProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = TermDiffBaseStorage()
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 60


def raise_for(outcome: Outcome) -> None:
    """Map an Outcome to kopf: only ``retry`` is an exception (a TemporaryError)."""
    if outcome.result == "retry":
        raise kopf.TemporaryError(
            f"retrying {outcome.operation.value} ({outcome.reason or outcome.detail})",
            delay=max(outcome.delay, 0.1),
        )


def desired_source(body: Mapping[str, Any]) -> str:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    source = str(annotations.get(DESIRED_SOURCE_ANNOTATION) or "api")
    return source if source in DESIRED_SOURCES else "other"


def _desired_changed(diff: Any) -> bool:
    try:
        for entry in diff or ():
            field = tuple(entry[1])
            if field[:2] == ("spec", "desired_state") or (
                field == ("spec",) and _differs(entry[2], entry[3])
            ):
                return True
    except (TypeError, IndexError):
        return False
    return False


def _differs(old: Any, new: Any) -> bool:
    old_d = old.get("desired_state") if isinstance(old, Mapping) else None
    new_d = new.get("desired_state") if isinstance(new, Mapping) else None
    return bool(old_d != new_d)
