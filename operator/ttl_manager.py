"""The TTL Manager (docs/activity-and-ttl.md): idle workspaces go to standby, then archive.

A leader component. Every ``TTL_MANAGER_INTERVAL`` one pass goes over the workspaces of
the term's informer (a watch-fed cache, docs/coordinator.md: no List; without one, in
unit tests and one-off passes, the API is listed in pages of ``PAGE_SIZE``), so a pass
costs one write per workspace whose idle state changed or whose TTL acts; it decides
with the pure ``ttl_policy.decide`` and:

- acts with a compare-and-set JSON Patch on the resource: a ``test`` of
  ``/metadata/resourceVersion`` (the version the decision was made from), the new
  ``spec.desired_state`` and ``codehub.io/desired-state-source: ttl``. A refused test
  means someone wrote in between (or the cache was behind); the workspace is read again
  and decided afresh once, so a user's concurrent change is never overwritten;
- records each action as an Event (``IdleStandby`` / ``IdleArchive``), the annotation,
  and ``codehub_ttl_actions_total{action}``; due actions not taken are counted in
  ``codehub_ttl_skipped_total{reason}``;
- keeps ``status.idle_action`` / ``idle_action_at`` up to date (the next action and its
  time, or none), also with a resourceVersion test, which is what the API server's SSE
  stream turns into ``idle_warning``.

It never calls another component: the reconciler sees the new desired state through
kopf's update handler and the safety net, like any other writer's change.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from codehub.crd_like.client.api import ApiError
from codehub.crd_like.client.informer import ListingSource, WorkspaceSource
from codehub.crd_like.models import IdleAction
from codehub.operator import kube_events
from codehub.operator.clock import run_every
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.ttl_policy import (
    SOURCE_ANNOTATION,
    TARGET,
    TTL_SOURCE,
    Decision,
    SkipReason,
    TtlView,
    decide,
)
from codehub.vocabulary.timestamps import format_rfc3339, human_duration, parse_rfc3339

log = logging.getLogger(__name__)

#: Workspaces per list request.
PAGE_SIZE = 500

IDLE_STANDBY = "IdleStandby"
IDLE_ARCHIVE = "IdleArchive"
EVENT_REASON = {IdleAction.STANDBY: IDLE_STANDBY, IdleAction.ARCHIVE: IDLE_ARCHIVE}


@dataclass
class TtlPassReport:
    """What one pass did (returned for tests and logs)."""

    workspaces: int = 0
    list_requests: int = 0
    writes: int = 0
    acted: int = 0
    skipped: int = 0
    failures: int = 0


class TtlManager:
    def __init__(
        self,
        ctx: OperatorContext,
        page_size: int = PAGE_SIZE,
        source: WorkspaceSource | None = None,
    ) -> None:
        self.ctx = ctx
        self.page_size = page_size
        #: The term's informer; None lists ``ctx.api`` afresh (in pages) on every pass.
        self.source = source

    async def run(self) -> None:
        interval = self.ctx.settings.ttl_manager_interval
        await run_every(self.ctx.clock, interval, self.pass_once, log, "TTL")

    async def pass_once(self) -> TtlPassReport:
        report = TtlPassReport()
        source = self.source
        if source is None:
            source = ListingSource(self.ctx.api, page_size=self.page_size)
        requests = source.list_requests
        items = await source.snapshot()
        report.workspaces = len(items)
        report.list_requests = source.list_requests - requests
        for obj in items:
            try:
                await self._one(obj, report)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                report.failures += 1
                log.warning("TTL: %s/%s failed: %s", *_key(obj), exc)
        return report

    async def _one(self, obj: Obj, report: TtlPassReport, retried: bool = False) -> None:
        decision = decide(TtlView.of(obj), self.ctx.clock.now())
        if decision.skipped is not None:
            self._skipped(decision.skipped, report)
        if decision.act is None:
            if await self._write_idle(obj, decision):
                report.writes += 1
            return
        written = await self._act(obj, decision.act)
        report.writes += 1
        if written is not None:
            report.acted += 1
            await self._after_act(obj, written, decision.act)
            return
        self._skipped(SkipReason.CONFLICT, report)
        if retried:
            return
        fresh = await self._get(obj)
        if fresh is not None:
            await self._one(fresh, report, retried=True)

    def _skipped(self, reason: SkipReason, report: TtlPassReport) -> None:
        report.skipped += 1
        self.ctx.metrics.ttl_skipped.labels(reason=reason.value).inc()

    async def _act(self, obj: Obj, action: IdleAction) -> Obj | None:
        """The compare-and-set of desired_state; None when another write came first."""
        meta = obj.get("metadata") or {}
        annotations = dict(meta.get("annotations") or {})
        annotations[SOURCE_ANNOTATION] = TTL_SOURCE
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "replace", "path": "/spec/desired_state", "value": TARGET[action]},
            {"op": "add", "path": "/metadata/annotations", "value": annotations},
        ]
        ns, name = _key(obj)
        try:
            return await self.ctx.api.patch_json(ns, name, ops)
        except ApiError as exc:
            if exc.invalid or exc.conflict or exc.not_found:
                return None
            raise

    async def _after_act(self, before: Obj, written: Obj, action: IdleAction) -> None:
        self.ctx.metrics.ttl_actions.labels(action=action.value).inc()
        view = TtlView.of(before)
        ttl = view.standby_ttl if action is IdleAction.STANDBY else view.archive_ttl
        message = (
            f"idle for at least {human_duration(ttl)} ("
            f"{'standby' if action is IdleAction.STANDBY else 'archive'}_ttl_seconds={ttl}): "
            f"desired_state {view.desired} -> {TARGET[action]}"
        )
        await kube_events.post(self.ctx, written, EVENT_REASON[action], message)
        # The step is taken: nothing is pending until the workspace settles again.
        await self._write_idle(written, Decision())

    async def _write_idle(self, obj: Obj, decision: Decision) -> bool:
        """Bring status.idle_action/idle_action_at to the decision's; True if written."""
        status = obj.get("status") or {}
        action = decision.next_action.value if decision.next_action else None
        at = format_rfc3339(decision.next_at) if decision.next_at else None
        if status.get("idle_action") == action and _same_time(status.get("idle_action_at"), at):
            return False
        meta = obj.get("metadata") or {}
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
        ]
        if "status" not in obj:
            ops.append({"op": "add", "path": "/status", "value": {}})
        ops += [
            {"op": "add", "path": "/status/idle_action", "value": action},
            {"op": "add", "path": "/status/idle_action_at", "value": at},
        ]
        ns, name = _key(obj)
        try:
            await self.ctx.api.patch_json(ns, name, ops, status=True)
        except ApiError as exc:
            if exc.invalid or exc.conflict or exc.not_found:
                return False  # changed meanwhile: the next pass decides from fresh data
            raise
        return True

    async def _get(self, obj: Obj) -> Obj | None:
        try:
            return await self.ctx.api.get(*_key(obj))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _same_time(stored: Any, wanted: str | None) -> bool:
    if wanted is None:
        return stored is None
    return parse_rfc3339(stored) == parse_rfc3339(wanted)
