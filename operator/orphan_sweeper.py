"""The orphan sweeper: a leader component that removes engine objects of deleted workspaces.

A workspace's container, storage job containers and home volume normally go with it (the
DELETING operation, docs/state-machine.md). Anything that escapes that — a coordinator
killed between two removals, a job container left by a crashed run, a workspace object
removed by hand — is found here: every ``ORPHAN_SWEEP_INTERVAL`` a pass

1. lists the codehub-labelled engine objects of this installation's scope
   (``adapters.engine_objects``; nothing without codehub's labels is ever listed);
2. then takes every workspace's uid from the term's informer (after the engine listing;
   a watch-fed cache, docs/coordinator.md), or without one from the API in pages;
3. applies ``orphan_plan.decide``; before removing the orphans that stayed orphans for
   at least ``ORPHAN_DELAY`` it lists the workspaces afresh through the API and decides
   again (a cache that lagged behind a new workspace must never cost its container), then
   removes them, counting ``codehub_orphan_resources_removed_total{kind}``. Orphans are
   rare, so that List is too: an idle pass lists nothing.

If any listing fails, the pass removes nothing. First-seen times live in memory: a new
leader starts every delay over, which only ever delays a removal.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from codehub.adapters.engine_objects import KINDS, LabelledObjects
from codehub.crd_like.client.api import workspaces_path
from codehub.crd_like.client.informer import WorkspaceSource
from codehub.operator.clock import Clock, SystemClock, run_every
from codehub.operator.orphan_plan import decide, object_key

if TYPE_CHECKING:
    from codehub.operator.coordinator import LeaderTerm

log = logging.getLogger(__name__)

API_PAGE = 500
DEFAULT_INTERVAL = 300.0
DEFAULT_DELAY = 600.0

_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def removed_counter(registry: CollectorRegistry) -> Counter:
    """``codehub_orphan_resources_removed_total{kind}``, once per registry (terms repeat)."""
    counter = _COUNTERS.get(registry)
    if counter is None:
        counter = _COUNTERS[registry] = Counter(
            "codehub_orphan_resources_removed_total",
            "Engine objects of workspaces that no longer exist, removed by the sweeper.",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            counter.labels(kind=kind)
    return counter


@dataclass
class SweepReport:
    objects: int = 0
    live: int = 0
    waiting: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    skipped: str | None = None


async def live_uids(api: Any, page: int = API_PAGE) -> set[str]:
    """The uid of every workspace, page by page (an API fake without ``request``: one List)."""
    uids: set[str] = set()
    request = getattr(api, "request", None)
    if request is None:
        items = (await api.list(None)).get("items") or []
        return {str(i["metadata"]["uid"]) for i in items}
    params: dict[str, Any] = {"limit": page}
    while True:
        body = await request("GET", workspaces_path(None), params=params)
        if not isinstance(body, Mapping) or not isinstance(body.get("items"), list):
            raise ValueError("workspace list: unexpected answer")
        for item in body["items"]:
            uids.add(str(item["metadata"]["uid"]))
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return uids
        params["continue"] = token


class OrphanSweeper:
    """Passes over the engine's labelled objects; see the module docstring."""

    def __init__(
        self,
        *,
        api: Any,
        engine: LabelledObjects,
        interval: float = DEFAULT_INTERVAL,
        delay: float = DEFAULT_DELAY,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        source: WorkspaceSource | None = None,
    ) -> None:
        self.api = api
        #: The term's informer; None lists the API on every pass.
        self.source = source
        self.engine = engine
        self.interval = interval
        self.delay = timedelta(seconds=delay)
        self.clock = clock or SystemClock()
        self.removed = removed_counter(registry if registry is not None else CollectorRegistry())
        self.first_seen: dict[str, datetime] = {}

    async def run(self) -> None:
        await run_every(self.clock, self.interval, self.pass_once, log, "orphan sweep")

    async def pass_once(self) -> SweepReport:
        report = SweepReport()
        try:
            objects = await self.engine.list_labelled()
        except Exception as exc:
            log.warning("orphan sweep skipped: cannot list the engine: %s", exc)
            report.skipped = "engine"
            return report
        try:
            uids = await self._uids()
            decision = decide(objects, uids, self.first_seen, self.clock.now(), self.delay)
            if decision.to_remove and self.source is not None:
                uids = await live_uids(self.api)  # removal needs the resource's word
                decision = decide(objects, uids, self.first_seen, self.clock.now(), self.delay)
        except Exception as exc:
            log.warning("orphan sweep skipped: cannot list workspaces: %s", exc)
            report.skipped = "listing"
            return report
        self.first_seen = decision.first_seen
        report.objects, report.live = len(objects), decision.live
        report.waiting = len(decision.waiting)
        for obj in decision.to_remove:
            try:
                gone = await self.engine.remove_labelled(obj)
            except Exception as exc:
                log.warning("orphan sweep: cannot remove %s %s: %s", obj.kind, obj.name, exc)
                gone = False
            if not gone:
                report.kept += 1
                continue
            self.first_seen.pop(object_key(obj), None)
            self.removed.labels(kind=obj.kind).inc()
            report.removed[obj.kind] = report.removed.get(obj.kind, 0) + 1
            log.info("orphan sweep: removed %s %s (workspace %s)", obj.kind, obj.name, obj.uid)
        return report

    async def _uids(self) -> set[str]:
        if self.source is None:
            return await live_uids(self.api)
        return {str((o.get("metadata") or {}).get("uid")) for o in await self.source.snapshot()}


async def run_orphan_sweeper(term: LeaderTerm) -> None:
    """The leader component: the term's labelled engine objects (built with the other
    adapters at the composition root, in this coordinator's scope)."""
    ctx = term.ctx
    settings = ctx.settings
    if ctx.engine_objects is None:
        raise RuntimeError("this term's context has no labelled engine objects to sweep")
    sweeper = OrphanSweeper(
        api=ctx.api,
        engine=ctx.engine_objects,
        interval=getattr(settings, "orphan_sweep_interval", DEFAULT_INTERVAL),
        delay=getattr(settings, "orphan_delay", DEFAULT_DELAY),
        registry=ctx.metrics.registry,
        clock=ctx.clock,
        source=term.informer,
    )
    term.mark_running("orphan-sweeper")
    await sweeper.run()
