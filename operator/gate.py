"""The reconcile gate: the one way a workspace gets reconciled in this process.

kopf's handlers call ``reconcile_now(body)`` (kopf stays the event source and maps the
Outcome to its own retries); everything else — the safety-net pass, an observation that
found drift or an unexplained ERROR, a reconcile that must run again — calls ``add`` /
``add_after`` and the gate's workers run it. Both go through one ``WorkQueue`` keyed by
``(namespace, name)``: deduplicated, one reconcile per key at a time, a key added while
it is being reconciled is reconciled again afterwards, and worker retries are
rate-limited per key (exponential, capped).

Both paths also take one of ``RECONCILE_CONCURRENCY`` slots (``reconcile_slots``) for
the reconcile: with thousands of workspaces changing at once, the excess waits here in
arrival order instead of timing out at the API server. Archive and restore transfers
run outside the slots (``TransfersOutsideBound``), so long operations never hold one.

Components never call each other: they talk through the resource (the API) or this gate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from codehub.crd_like.client.api import ApiError
from codehub.operator.context import OperatorContext
from codehub.operator.metrics import QueueMetricsAdapter
from codehub.operator.reconcile_slots import ReconcileSlots, TransfersOutsideBound
from codehub.operator.reconcile_view import Outcome
from codehub.operator.reconciler import reconcile
from codehub.operator.workqueue import RateLimiter, WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: The ``controller`` / ``name`` label of the controller-runtime metrics.
CONTROLLER = "workspace"
#: Worker retries back off per key from this, doubling, up to the cap (seconds).
RETRY_BASE = 1.0
RETRY_CAP = 300.0


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ReconcileGate:
    """See the module docstring. ``run`` is the worker pool (a leader component)."""

    def __init__(self, ctx: OperatorContext, *, workers: int = 8) -> None:
        self.ctx = ctx
        self.workers = workers
        self.queue: WorkQueue[Key] = WorkQueue(
            clock=ctx.clock,
            limiter=RateLimiter(RETRY_BASE, RETRY_CAP),
            metrics=QueueMetricsAdapter(ctx.metrics, CONTROLLER),
        )
        self.slots = ReconcileSlots(ctx.settings.reconcile_concurrency)

    # -- producers -------------------------------------------------------------------------

    def add(self, ns: str, name: str) -> None:
        self.queue.add((ns, name))

    def nudge(self, ns: str, name: str) -> bool:
        """``add``, unless a reconcile of this workspace is under way (running, or
        waiting for a slot): for the periodic passes, whose finding such a reconcile
        already covers. With thousands of workspaces waiting for slots, ``add`` would
        mark each dirty at every pass and buy each a second reconcile afterwards."""
        return self.queue.add_unless_processing((ns, name))

    def add_after(self, ns: str, name: str, delay: float) -> None:
        self.queue.add_after((ns, name), delay)

    async def reconcile_now(self, obj: Mapping[str, Any]) -> Outcome:
        """Reconcile in the caller's task (kopf's handlers) once a slot is free; ``busy``
        if a reconcile of this workspace is running or waiting for a slot, which then
        runs once more afterwards."""
        key = key_of(obj)
        if not self.queue.begin(key):
            self.ctx.metrics.reconcile_total.labels(operation="NONE", result="busy").inc()
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                return Outcome("retry", delay=1.0, detail="busy")
            return Outcome("done", detail="busy")
        try:
            async with self.slots.held():
                return await self._timed(obj)
        finally:
            self.queue.done(key)

    # -- workers ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The worker pool, until cancelled; then the queue is shut down."""
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.workers)))
        finally:
            self.queue.shutdown()

    async def process_next(self) -> bool:
        """Reconcile one ready key if there is one (tests drive the gate with this)."""
        key = self.queue.get_nowait()
        if key is None:
            return False
        await self._process(key)
        return True

    async def drain(self) -> int:
        """Process ready keys until none is left; returns how many were processed."""
        n = 0
        while await self.process_next():
            n += 1
        return n

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            await self._process(key)

    async def _process(self, key: Key) -> None:
        ns, name = key
        try:
            async with self.slots.held():
                outcome = await self._timed({"metadata": await self._identity(ns, name)})
        except asyncio.CancelledError:
            self.queue.done(key)
            raise
        except Exception:
            log.exception("reconcile of %s/%s failed", ns, name)
            outcome = Outcome("retry", delay=0.0, detail="bug")
        if outcome.result == "retry" and outcome.detail == "backoff":
            self.queue.add_after(key, outcome.delay)  # waiting out a recorded backoff
        elif outcome.result == "retry":
            self.queue.add_rate_limited(key, at_least=outcome.delay)
        else:
            self.queue.forget(key)
        self.queue.done(key)

    async def _identity(self, ns: str, name: str) -> dict[str, Any]:
        """The metadata a queued key stands for; the uid pins the workspace of that name."""
        try:
            meta = (await self.ctx.api.get(ns, name)).get("metadata") or {}
        except ApiError as exc:
            if exc.not_found:
                return {"namespace": ns, "name": name, "uid": ""}
            raise
        return dict(meta)

    async def _timed(self, obj: Mapping[str, Any]) -> Outcome:
        m = self.ctx.metrics
        start = self.ctx.clock.monotonic()
        try:
            outcome = await reconcile(self._bounded(), obj)
        finally:
            m.cr_reconcile_time.labels(controller=CONTROLLER).observe(
                max(self.ctx.clock.monotonic() - start, 0.0)
            )
        m.cr_reconcile_total.labels(controller=CONTROLLER, result=_cr_result(outcome)).inc()
        return outcome

    def _bounded(self) -> OperatorContext:
        """The context a reconcile runs with: the same one, but storage transfers hand
        the slot back while they run. Built per call, so it follows the context."""
        return dataclasses.replace(self.ctx, storage=TransfersOutsideBound(self.ctx.storage))


def _cr_result(outcome: Outcome) -> str:
    """controller-runtime's result label: success, error (terminal), requeue_after."""
    if outcome.result == "retry":
        return "requeue_after"
    return "error" if outcome.result == "terminal" else "success"
