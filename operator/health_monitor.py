"""The HealthMonitor: batch observation passes (docs/observation.md).

A pass costs a constant number of calls whatever the number of workspaces: no API list
(the workspaces come from the term's informer, a watch-fed cache, docs/coordinator.md),
then one engine listing of containers and one of volumes; it writes (through
``observer``) only the workspaces whose observation changed: ``observed_status``,
``display``, ``endpoint`` and ``observed_at``. Every write is a compare-and-set on the
resourceVersion it was computed from, so a cache a few milliseconds behind only costs a
refused write and a fresh look. Without an informer (unit tests) each pass lists afresh.

It talks to the rest of the operator only through the resource and the reconcile gate:
a workspace whose fresh observation looks unsettled (drift from desired, or an ERROR no
terminal error explains yet) is added to the gate, whose reconcile repairs it or records
the error and then observes it; a drift of a workspace whose reconcile is already under
way is left to that reconcile (``gate.nudge``). It never calls the reconciler and installs nothing.

Staleness (docs/observation.md): every workspace a pass observes counts as observed at
that pass, written or not (the pass is the heartbeat); ``observed_at`` is written with
each change and, on an unchanged workspace, only about once an hour, within a per-pass
budget, so an idle pass over 10,000 workspaces writes a handful, not thousands. Until a
term's passes have seen a workspace, its age is counted from the ``observed_at`` of the
snapshot, taken before the engine is asked anything: a new leader, or a pass that fails,
never sees anything fresher than the resource proves (an older age at worst). Exported
as ``codehub_observation_age_seconds`` (the oldest) and a warning for every workspace
not observed within the stale threshold.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from codehub.adapters.errors import CodehubError
from codehub.adapters.interfaces import InstanceInfo
from codehub.crd_like.client.informer import ListingSource, WorkspaceSource
from codehub.crd_like.models import ObservedStatus, derive_display
from codehub.operator import observer
from codehub.operator.clock import run_every
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.observation import instance_state_of
from codehub.operator.observer import Seen
from codehub.operator.planning import Operation
from codehub.operator.reconcile_view import Facts, View, needs_reconcile, remaining
from codehub.vocabulary.timestamps import parse_rfc3339

log = logging.getLogger(__name__)

#: Every (observed status, display) pair a workspace can show. The gauge exports each, at 0
#: when no workspace is in it, so a dashboard shows "none" rather than "no data".
STATE_PAIRS = sorted(
    {(o.value, derive_display(o, archive).value) for o in ObservedStatus for archive in (None, "a")}
)


@dataclass
class PassReport:
    """What one batch pass did (returned for tests and benchmarks)."""

    workspaces: int = 0
    written: int = 0
    #: Unchanged observations written again because observed_at was getting old.
    refreshed: int = 0
    #: Unchanged observations confirmed by this pass without a write (the heartbeat).
    unwritten: int = 0
    confirmed: int = 0
    failures: int = 0
    stale: list[str] = field(default_factory=list)
    duration: float = 0.0
    nudged: int = 0


class HealthMonitor:
    """Observation passes; see the module docstring. Without a gate (tests) unsettled
    workspaces are only counted, and an unexplained ERROR stays unwritten."""

    def __init__(
        self,
        ctx: OperatorContext,
        gate: ReconcileGate | None = None,
        source: WorkspaceSource | None = None,
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        #: The term's informer; None lists ``ctx.api`` afresh on every pass.
        self.source = source
        self._observed_at: dict[str, datetime] = {}  # uid -> last confirmed observation
        self._started = ctx.clock.monotonic()

    async def run(self) -> None:
        """Observe, sleep, repeat until cancelled."""
        interval = self.ctx.settings.health_monitor_interval
        await run_every(self.ctx.clock, interval, self.pass_once, log, "health monitor")

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
        source = self.source if self.source is not None else ListingSource(ctx.api)
        items = await source.snapshot()
        written_at = self._note_observed_at(items)  # before the engine: ages survive a failure
        try:
            instances, volumes = await asyncio.gather(
                ctx.instances.list_instances(), ctx.storage.list_volumes()
            )
        except CodehubError:
            await self._observe_terminal(items)
            raise
        report.workspaces = len(items)
        refresh = self._refreshes(written_at)
        counts: Counter[tuple[str, str]] = Counter()
        live: set[str] = set()
        for obj in items:
            live.add(_uid(obj))
            try:
                seen = await self._observe_listed(obj, instances, volumes, report, refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                report.failures += 1
                ctx.metrics.health_failures.inc()
                log.warning("cannot observe %s: %s", observer.ref(obj), exc)
                continue
            counts[(seen.observed.value, seen.display.value)] += 1
            status = {**(obj.get("status") or {}), "observed_status": seen.observed.value}
            if seen.unexplained or needs_reconcile({**obj, "status": status}):
                report.nudged += self._hand_over(obj, urgent=seen.unexplained)
        for uid in list(self._observed_at):
            if uid not in live:
                del self._observed_at[uid]
        ctx.metrics.operations_overdue.set(sum(1 for obj in items if self._overdue(obj)))
        ctx.metrics.workspaces.clear()
        for pair in STATE_PAIRS:
            counts.setdefault(pair, 0)
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
        refresh: set[str],
    ) -> Seen:
        uid = _uid(obj)
        info = instances.get(uid)
        facts = Facts(instance_state_of(info), uid in volumes, info.upstream if info else None)
        seen = observer.compute(obj, facts)
        now = self.ctx.clock.now()
        due = (
            observer.changed(obj, seen) or observer.observed_age(obj, now) is None or uid in refresh
        )
        if seen.unexplained or (due and not await observer.write(self.ctx, obj, seen)):
            # an unexplained ERROR needs a still picture; a refused write a fresh look
            report.confirmed += 1
            meta = obj.get("metadata") or {}
            fresh = await self.observe_one(str(meta.get("namespace")), str(meta.get("name")))
            if fresh is None:
                raise RuntimeError("no consistent observation")
            return fresh
        if observer.changed(obj, seen):
            report.written += 1
        elif due:
            report.refreshed += 1
        else:
            report.unwritten += 1
        self._observed_at[uid] = now
        return seen

    def _refreshes(self, written_at: dict[str, datetime]) -> set[str]:
        """The unchanged workspaces whose ``observed_at`` (``written_at``, by uid) this
        pass rewrites: the oldest past the refresh period, within the pass's budget."""
        now = self.ctx.clock.now()
        ages = {uid: (now - at).total_seconds() for uid, at in written_at.items()}
        period = observer.refresh_after(self.ctx)
        interval = self.ctx.settings.health_monitor_interval
        budget = observer.refresh_budget(len(written_at), interval, period)
        return observer.due_refreshes(ages, period, budget)

    async def _observe_terminal(self, items: list[Obj]) -> None:
        """Without the engine only rule 1 applies: a terminal error still shows ERROR
        (nothing else is written: no DataLost because the engine cannot be asked)."""
        for obj in items:
            if not observer.is_terminal(obj):
                continue
            seen = observer.compute(obj, observer.NO_FACTS)
            if observer.changed(obj, seen):
                try:
                    await observer.write(self.ctx, obj, seen)
                except Exception as exc:
                    log.warning("cannot observe %s: %s", observer.ref(obj), exc)

    async def observe_one(self, ns: str, name: str) -> Seen | None:
        """Observe one workspace now (``observer.observe_one``), noting it as seen."""
        seen = await observer.observe_one(self.ctx, ns, name)
        if seen is not None:
            self._observed_at[seen.uid] = self.ctx.clock.now()
        return seen

    def _note_observed_at(self, items: list[Obj]) -> dict[str, datetime]:
        """Ages come from the resource: what any leader wrote counts. Answers each
        workspace's ``observed_at`` by uid (those that have one), parsed once per pass."""
        written_at: dict[str, datetime] = {}
        for obj in items:
            at = parse_rfc3339((obj.get("status") or {}).get("observed_at"))
            if at is None:
                continue
            uid = _uid(obj)
            written_at[uid] = at
            if uid not in self._observed_at or at > self._observed_at[uid]:
                self._observed_at[uid] = at
        return written_at

    def _overdue(self, obj: Obj) -> bool:
        """A non-terminal operation older than its timeout: the reconciler should have
        recorded a Timeout error by now (docs/errors.md), so something is stuck."""
        operation = (obj.get("status") or {}).get("operation")
        if not operation or operation == Operation.NONE.value:
            return False  # most workspaces, most of the time: no need to parse the rest
        try:
            w = View.of(obj)
        except (TypeError, ValueError):
            return False
        if w.operation is Operation.NONE or w.terminal:
            return False
        return remaining(self.ctx, w, w.operation) <= 0

    def _hand_over(self, obj: Obj, *, urgent: bool) -> int:
        """Queue the workspace; a drift only if no reconcile of it is under way (it will
        see the same facts), an unexplained ERROR also after one, to be recorded."""
        if self.gate is None:
            return 0
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        if urgent:
            self.gate.add(ns, name)
            return 1
        return int(self.gate.nudge(ns, name))

    def _report_staleness(self) -> list[str]:
        ctx = self.ctx
        now = ctx.clock.now()
        threshold = ctx.settings.health_monitor_stale_threshold
        oldest = ctx.clock.monotonic() - self._started if not self._observed_at else 0.0
        stale: list[str] = []
        for uid, seen in self._observed_at.items():
            age = max((now - seen).total_seconds(), 0.0)
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


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
