"""The periodic safety net (docs/state-machine.md): every ``RECONCILER_INTERVAL`` every
workspace that looks unsettled (``needs_reconcile``) goes into the reconcile gate; a
settled one costs nothing.

The unsettled keys come from the term's informer (``crd_like.client.informer``), which
keeps them as an index maintained from its watch: a pass costs the unsettled workspaces,
not all of them, and decodes nothing (docs/adr/0011-ten-thousand-workspaces.md). The
informer's cache may be a few milliseconds behind the resource; a workspace that looks
settled a moment too early is caught by the next pass or by kopf's event, and its resync
re-lists everything periodically, so a lost event only delays. Without an informer (unit
tests) each pass lists afresh (``ListingSource``).

Not a kopf timer: a timer sees the body kopf last processed, which was seen to lag behind
the resource by far more than a watch-fed cache does. It only adds keys to the gate; the
gate's workers reconcile them. A workspace whose reconcile is under way (running, or
waiting for one of the gate's slots) is left to it (``gate.nudge``): re-running it
afterwards would only find nothing to do, and while thousands converge that doubled the
reconciles; if it ends unsettled, the next pass queues it.
"""

from __future__ import annotations

import logging

from codehub.crd_like.client.informer import ListingSource, WorkspaceSource
from codehub.operator.clock import run_every
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.reconcile_view import needs_reconcile

log = logging.getLogger(__name__)


class SafetyNet:
    def __init__(
        self, ctx: OperatorContext, gate: ReconcileGate, source: WorkspaceSource | None = None
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        #: The term's informer, indexed by ``needs_reconcile``; None lists ``ctx.api``
        #: afresh on every pass.
        self.source = source

    async def run(self) -> None:
        interval = self.ctx.settings.reconciler_interval
        await run_every(
            self.ctx.clock, interval, self.pass_once, log, "safety net", wait_first=True
        )

    async def pass_once(self) -> int:
        """Queue the unsettled workspaces not already being reconciled; returns how many
        unsettled workspaces it saw."""
        source = self.source
        if source is None:
            source = ListingSource(self.ctx.api, index=needs_reconcile)
        unsettled = await source.matching()
        for ns, name in unsettled:
            self.gate.nudge(ns, name)
        return len(unsettled)
