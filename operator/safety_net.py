"""The periodic safety net (docs/state-machine.md): every ``RECONCILER_INTERVAL``, one API
list, and every workspace that looks unsettled (``needs_reconcile``) goes into the
reconcile gate; a settled one costs nothing.

Not a kopf timer: a timer sees the body kopf last processed, which was seen to lag behind
the resource, so the pass works from a fresh listing. It only adds keys to the gate; the
gate's workers reconcile them. A workspace whose reconcile is under way (running, or
waiting for one of the gate's slots) is left to it (``gate.nudge``): re-running it
afterwards would only find nothing to do, and while thousands converge that doubled the
reconciles; if it ends unsettled, the next pass queues it.
"""

from __future__ import annotations

import logging

from codehub.operator.clock import run_every
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate, key_of
from codehub.operator.reconcile_view import needs_reconcile

log = logging.getLogger(__name__)


class SafetyNet:
    def __init__(self, ctx: OperatorContext, gate: ReconcileGate) -> None:
        self.ctx = ctx
        self.gate = gate

    async def run(self) -> None:
        interval = self.ctx.settings.reconciler_interval
        await run_every(
            self.ctx.clock, interval, self.pass_once, log, "safety net", wait_first=True
        )

    async def pass_once(self) -> int:
        """Queue the unsettled workspaces not already being reconciled; returns how many
        unsettled workspaces it saw."""
        listing = await self.ctx.api.list(None)
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        unsettled = [key_of(i) for i in items if needs_reconcile(i)]
        for ns, name in unsettled:
            self.gate.nudge(ns, name)
        return len(unsettled)
