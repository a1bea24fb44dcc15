"""The HealthMonitor: the only writer of observed_status, display and observed_at (SPEC §5).

A pass costs a constant number of calls whatever the number of workspaces: one API list,
then one engine listing of containers and one of volumes; it writes only the workspaces
whose observation changed. ``observe_one`` is the immediate, per-workspace variant the
reconciler calls after each step.

Facts and status are read at different instants. Reading the status first means the
facts are the newer of the two, and every write is conditional on the resourceVersion the
observation was computed from: if the reconciler (or anyone) changed the workspace in
between, the write is refused and that workspace is observed afresh, so an observation
made from stale facts never overwrites a newer one. ERROR not explained by a terminal
error is never written from a batch pass: ``observe_one`` re-reads status, facts, status
and trusts only a still picture, then lets the reconciler record why before writing it.

Staleness: ``observed_at`` is written with each change, so on a stable workspace it is
the time the current status was first seen. Whether observation is still happening is
tracked in memory (the last successful observation of each workspace) and reported as
``codehub_observation_age_seconds`` (the oldest) and a warning for every workspace not
observed within the stale threshold.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from codehub.adapters.interfaces import InstanceInfo
from codehub.crd_like.client.api import ApiError
from codehub.crd_like.models import derive_display
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.observation import observe_detail
from codehub.operator.planning import (
    Display,
    InstanceState,
    ObservedStatus,
    Operation,
    parse_enum,
)
from codehub.operator.reconciler import (
    SafetyNet,
    format_time,
    gather_facts,
    needs_reconcile,
    record_observed_error,
)

log = logging.getLogger(__name__)

_CONSISTENT_READ_ATTEMPTS = 3


@dataclass
class PassReport:
    """What one batch pass did (returned for tests and benchmarks)."""

    workspaces: int = 0
    written: int = 0
    confirmed: int = 0
    failures: int = 0
    stale: list[str] = field(default_factory=list)
    duration: float = 0.0
    nudged: int = 0


class HealthMonitor:
    """Observation passes; see the module docstring.

    With ``reconcile`` (the default), ``run`` also runs the reconciler's periodic pass
    (``SafetyNet``, every ``RECONCILER_INTERVAL``) and each observation pass hands the
    workspaces it found unsettled to it at once, so drift is repaired without waiting
    for a kopf event. Both stop with ``run``: nothing outlives the leadership term.
    """

    def __init__(self, ctx: OperatorContext, *, reconcile: bool = True) -> None:
        self.ctx = ctx
        self.reconcile = reconcile
        self.net = SafetyNet(ctx)
        self._last_seen: dict[str, float] = {}  # uid -> monotonic time of last observation
        self._started = ctx.clock.monotonic()
        self._locks: dict[str, asyncio.Lock] = {}
        if ctx.observe_hint is None:
            ctx.observe_hint = self.observe_one

    async def run(self) -> None:
        """Observe, sleep, repeat until cancelled (plus the SafetyNet, see the class doc)."""
        net = asyncio.create_task(self.net.run()) if self.reconcile else None
        try:
            while True:
                try:
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("health monitor pass failed")
                await self.ctx.clock.sleep(self.ctx.settings.health_monitor_interval)
        finally:
            if net is not None:
                net.cancel()
                await asyncio.gather(net, return_exceptions=True)
            await self.net.stop()

    async def pass_once(self) -> PassReport:
        ctx = self.ctx
        report = PassReport()
        start = ctx.clock.monotonic()
        try:
            await self._pass(report)
        finally:
            report.stale = self._report_staleness()
            report.duration = max(ctx.clock.monotonic() - start, 0.0)
            ctx.metrics.health_pass.observe(report.duration)
        return report

    async def _pass(self, report: PassReport) -> None:
        ctx = self.ctx
        listing = await ctx.api.list(None)
        instances, volumes = await asyncio.gather(
            ctx.instances.list_instances(), ctx.storage.list_volumes()
        )
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        report.workspaces = len(items)
        counts: Counter[tuple[str, str]] = Counter()
        live: set[str] = set()
        unsettled: list[Obj] = []
        for obj in items:
            uid = str((obj.get("metadata") or {}).get("uid") or "")
            live.add(uid)
            try:
                observed, display = await self._observe_listed(obj, instances, volumes, report)
                counts[(observed.value, display.value)] += 1
                seen = dict(obj)
                seen["status"] = {
                    **(obj.get("status") or {}),
                    "observed_status": observed.value,
                }
                if needs_reconcile(seen):
                    unsettled.append(obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                report.failures += 1
                ctx.metrics.health_failures.inc()
                log.warning("cannot observe %s: %s", _ref(obj), exc)
        for uid in list(self._last_seen):
            if uid not in live:
                del self._last_seen[uid]
                self._locks.pop(uid, None)
        if self.reconcile:
            report.nudged = self.net.nudge(unsettled)
        ctx.metrics.workspaces.clear()
        for (observed_value, display_value), n in counts.items():
            ctx.metrics.workspaces.labels(
                observed_status=observed_value, display=display_value
            ).set(n)

    async def _observe_listed(
        self,
        obj: Obj,
        instances: dict[str, InstanceInfo],
        volumes: set[str],
        report: PassReport,
    ) -> tuple[ObservedStatus, Display]:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        info = instances.get(uid)
        instance = (
            InstanceState.ABSENT
            if info is None
            else (InstanceState.RUNNING if info.running else InstanceState.STOPPED)
        )
        observed, display = _compute(obj, instance, uid in volumes)
        if observed is ObservedStatus.ERROR and not _terminal(obj):
            report.confirmed += 1
            result = await self.observe_one(str(meta.get("namespace")), str(meta.get("name")))
            if result is None:
                raise RuntimeError("no consistent observation")
            return result
        if _changed(obj, observed, display):
            if not await self._write(obj, observed, display):
                # the status moved since the listing: observe this one afresh
                report.confirmed += 1
                result = await self.observe_one(str(meta.get("namespace")), str(meta.get("name")))
                if result is None:
                    raise RuntimeError("no consistent observation")
                return result
            report.written += 1
        self._last_seen[uid] = self.ctx.clock.monotonic()
        return observed, display

    async def observe_one(
        self, ns: str, name: str, *, escalate: bool = True
    ) -> tuple[ObservedStatus, Display] | None:
        """Observe one workspace now (the reconciler's hint); None if it is gone or moving.

        A confirmed ERROR that no terminal error explains yet (data vanished, a container
        without its volume) is first handed to the reconciler, which records it in
        ``error_info`` together with what was observed before (``previous_status``, still
        intact at that moment); then the observation is written.
        """
        ctx = self.ctx
        for _ in range(_CONSISTENT_READ_ATTEMPTS):
            try:
                obj = await ctx.api.get(ns, name)
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise
            uid = str((obj.get("metadata") or {}).get("uid") or "")
            lock = self._locks.setdefault(uid, asyncio.Lock())
            async with lock:
                facts = await gather_facts(ctx, uid)
                observed, display = _compute(obj, facts.instance, facts.volume)
                unexplained = observed is ObservedStatus.ERROR and not _terminal(obj)
                if unexplained and escalate:
                    again = await ctx.api.get(ns, name)
                    if _rv(again) != _rv(obj):
                        continue  # read status, facts, status: trust only a still picture
                else:
                    if _changed(obj, observed, display) and not await self._write(
                        obj, observed, display
                    ):
                        continue
                    self._last_seen[uid] = ctx.clock.monotonic()
                    return observed, display
            # outside the lock: the reconciler's own hint comes back here
            await record_observed_error(ctx, ns, name)
            return await self.observe_one(ns, name, escalate=False)
        log.info("%s/%s kept changing; observation deferred to the next pass", ns, name)
        return None

    async def _write(self, obj: Obj, observed: ObservedStatus, display: Display) -> bool:
        """Write the observation only onto the status it was computed from (the listed
        resourceVersion): False if the workspace changed meanwhile, so an observation made
        from older facts never overwrites a newer one."""
        meta = obj.get("metadata") or {}
        status = dict(obj.get("status") or {})
        status.update(
            observed_status=observed.value,
            display=display.value,
            observed_at=format_time(self.ctx.clock.now()),
        )
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": _rv(obj)},
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            await self.ctx.api.patch_json(
                str(meta.get("namespace")), str(meta.get("name")), ops, status=True
            )
        except ApiError as exc:
            if exc.status in (409, 422):
                return False
            if exc.status != 404:
                raise
        log.info("%s: observed %s (display %s)", _ref(obj), observed.value, display.value)
        return True

    def _report_staleness(self) -> list[str]:
        ctx = self.ctx
        now = ctx.clock.monotonic()
        threshold = ctx.settings.health_monitor_stale_threshold
        oldest = now - self._started if not self._last_seen else 0.0
        stale: list[str] = []
        for uid, seen in self._last_seen.items():
            age = now - seen
            oldest = max(oldest, age)
            if age > threshold:
                stale.append(uid)
        ctx.metrics.observation_age.set(oldest)
        ctx.metrics.stale_observations.set(len(stale))
        if stale:
            log.warning(
                "%d workspace(s) not observed for more than %g s (e.g. %s)",
                len(stale),
                threshold,
                ", ".join(sorted(stale)[:5]),
            )
        return stale


def _compute(obj: Obj, instance: InstanceState, volume: bool) -> tuple[ObservedStatus, Display]:
    status = obj.get("status") or {}
    archive_key = status.get("archive_key") or None
    observation = observe_detail(
        instance,
        volume,
        terminal_error=_terminal(obj),
        previous=parse_enum(ObservedStatus, status.get("observed_status")),
        operation=parse_enum(Operation, status.get("operation"), Operation.NONE) or Operation.NONE,
        archive_key=archive_key,
        previous_status=parse_enum(ObservedStatus, status.get("previous_status")),
    )
    return observation.status, derive_display(observation.status, archive_key)


def _terminal(obj: Obj) -> bool:
    err = (obj.get("status") or {}).get("error_info")
    return bool(isinstance(err, dict) and err.get("is_terminal"))


def _changed(obj: Obj, observed: ObservedStatus, display: Display) -> bool:
    status = obj.get("status") or {}
    return status.get("observed_status") != observed.value or status.get("display") != (
        display.value
    )


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _ref(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
