"""The StateReconciler: one level-triggered function, ``reconcile(ctx, obj)``.

Every call re-reads the workspace and the real resources and recomputes what to do
(docs/state-machine.md); it is only ever called through the reconcile gate
(``gate.ReconcileGate``), which decides *when* and guarantees one reconcile per workspace
at a time in this process. One call may drive several steps (PENDING -> STANDBY ->
RUNNING), which is also how a desired change made during an operation is applied after it.

A completion is one write: it carries the observation of the facts that decided it
(computed by ``observer.fields``) and, when planning on that observation yields a next
operation, that operation's claim, all fenced on the resourceVersion this reconciler
last wrote (docs/state-machine.md#completion-and-the-next-claim). If anyone wrote in
between, the completion is written alone (fenced on the op_id), observed, and the next
step is planned from what the server then holds.

The seams: ``reconcile_view`` reads and derives (View, Facts, timing), ``actuation`` runs
an operation's adapters, ``failures`` turns errors into retry / terminal,
``status_writes`` fences every write, ``observer`` decides the observation.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from codehub.adapters.errors import CodehubError, MismatchError
from codehub.crd_like.client.api import ApiError
from codehub.operator import kube_events, observer
from codehub.operator.actuation import actuate
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.failures import (
    ObservationFailure,
    clear_unstarted,
    fail,
    observe_duration,
    observe_now,
    observed_error,
)
from codehub.operator.observation import ErrorRule, observe_detail
from codehub.operator.planning import (
    ObservedStatus,
    Operation,
    Unobserved,
    is_complete,
    plan,
    when_unobserved,
)
from codehub.operator.reconcile_view import (
    AGAIN,
    Facts,
    Outcome,
    View,
    api_retry_delay,
    backoff_remaining,
    engine_error,
    gather_facts,
    needs_reconcile,
    own_archive,
    remaining,
    timeout_error,
)
from codehub.operator.status_writes import (
    LostOwnership,
    write_op_fenced,
    write_rv_fenced,
    written_view,
)
from codehub.vocabulary.timestamps import format_rfc3339

__all__ = ["MAX_STEPS", "Outcome", "needs_reconcile", "reconcile"]

log = logging.getLogger(__name__)

#: Steps one call may take before yielding (a full PENDING -> RUNNING needs 2 or 3).
MAX_STEPS = 24


@dataclass(frozen=True)
class _Again(Outcome):
    """AGAIN after a completion, carrying the server's copy of the workspace as the
    observation wrote it: the next step plans from it instead of reading it again
    (every later write is a compare-and-set or fenced, so a copy that went stale
    meanwhile is refused, never acted on blindly). ``claimed``: the next operation,
    claimed by the completion's own write, which the next step runs at once."""

    latest: Obj | None = None
    claimed: tuple[View, Operation] | None = None


@dataclass(frozen=True)
class _Settled(Outcome):
    """Converged, as decided on the copy this reconciler itself last wrote (a completion
    fenced on it): unlike a ``converged`` from a lent copy, it needs no fresh read."""


@dataclass(frozen=True)
class _LostClaim(Outcome):
    """A claim refused because another operation holds the workspace (as far as the
    step's copy can tell: a copy the caller lent may simply have been stale)."""


async def reconcile(ctx: OperatorContext, obj: Mapping[str, Any]) -> Outcome:
    """Converge one workspace as far as possible now; see the module docstring."""
    meta = obj.get("metadata") or {}
    ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
    async with kube_events.posting_behind(ctx):
        return await _steps(ctx, ns, name, uid, _borrowable(obj))


def _borrowable(obj: Mapping[str, Any]) -> Obj | None:
    """The caller's whole copy when it shows no work under way (no status yet: a create
    event's body; or a settled one, no operation and no error: a desired-state change's
    body), so the first step need not read it again. Safe even if it went stale
    meanwhile: the first write such a step makes is a claim or an error record, both
    compare-and-set on this copy's resourceVersion; a refused claim, or a step that found
    nothing to do, is decided again from a fresh read (``_steps``). Not a copy with an
    operation or an error: resuming, timing out or backing off would act on its word
    before any compare-and-set; nor one being deleted (rare, and its steps read first as
    they always did). Only a whole object: the gate's workers pass bare metadata, which
    says nothing of status."""
    meta = obj.get("metadata")
    status = obj.get("status") or {}
    if (
        not isinstance(status, Mapping)
        or status.get("operation") not in (None, Operation.NONE.value)
        or status.get("error_info")
        or not isinstance(obj.get("spec"), Mapping)
        or not isinstance(meta, Mapping)
        or not meta.get("resourceVersion")
        or meta.get("deletionTimestamp")
    ):
        return None
    return dict(obj)


async def _steps(ctx: OperatorContext, ns: str, name: str, uid: str, known: Obj | None) -> Outcome:
    borrowed = known is not None
    claimed: tuple[View, Operation] | None = None
    for _ in range(MAX_STEPS):
        try:
            if claimed is not None:
                outcome = await _run(ctx, *claimed)
            else:
                outcome = await _step(ctx, ns, name, uid, known)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconcile of %s/%s failed unexpectedly", ns, name)
            outcome = Outcome("retry", delay=ctx.settings.reconciler_interval, detail="bug")
        known = outcome.latest if isinstance(outcome, _Again) else None
        claimed = outcome.claimed if isinstance(outcome, _Again) else None
        unverified = outcome.detail == "converged" and not isinstance(outcome, _Settled)
        if borrowed and (isinstance(outcome, _LostClaim) or unverified):
            # Nothing claimed on the caller's copy, which may be stale (a desired state
            # changed since): decide again from a fresh read before saying so.
            borrowed = False
            continue
        borrowed = False
        if outcome is AGAIN or isinstance(outcome, _Again):
            continue
        ctx.metrics.reconcile_total.labels(
            operation=outcome.operation.value, result=outcome.detail or outcome.result
        ).inc()
        return outcome
    return Outcome("retry", delay=1.0, detail="more")


async def _step(
    ctx: OperatorContext, ns: str, name: str, uid: str, known: Obj | None = None
) -> Outcome:
    try:
        obj = known if known is not None else await ctx.api.get(ns, name)
    except ApiError as exc:
        if exc.not_found:
            return Outcome("done", detail="gone")
        log.warning("cannot read %s/%s: %s", ns, name, exc)
        return Outcome("retry", delay=api_retry_delay(ctx), detail="api")
    w = View.of(obj)
    if w.uid != uid:
        return Outcome("done", detail="gone")  # the name now belongs to another workspace
    if w.terminal and (not w.deleting or w.operation is Operation.DELETING):
        return Outcome("terminal", operation=w.operation, reason=w.reason, detail="held")
    resuming = w.operation is not Operation.NONE and not (
        w.deleting and w.operation is not Operation.DELETING
    )
    if resuming or w.operation is Operation.NONE:
        wait = backoff_remaining(ctx, w)
        if wait > 0:  # before any engine call: an early wake-up must not spend the budget
            return Outcome("retry", delay=wait, operation=w.operation, detail="backoff")
    try:
        facts = await gather_facts(ctx, uid)
    except CodehubError as exc:
        if w.operation is Operation.NONE:
            return await _unobserved(ctx, w, engine_error(exc))
        return await fail(ctx, w, w.operation, engine_error(exc))
    if not resuming:
        return await _plan_and_claim(ctx, w, facts)
    return await _continue(ctx, w, facts)


async def _unobserved(ctx: OperatorContext, w: View, exc: CodehubError) -> Outcome:
    """Nothing claimed and the engine cannot be asked what exists: pending work counts
    an attempt against the retry budget (it ends in a clear ERROR, docs/errors.md), an
    idle converged workspace only waits. Never a claim: no operation without facts."""
    pending = plan(w.observed, w.desired, Operation.NONE, w.archive_key, w.deleting)
    unstarted = bool(w.error_info) and not w.terminal
    action = when_unobserved(pending, terminal=w.terminal, unstarted_error=unstarted)
    if action is Unobserved.FAIL:
        return await fail(ctx, w, Operation.NONE, exc, planned=pending)
    if action is Unobserved.CLEAR:
        await clear_unstarted(ctx, w)
    log.warning("cannot observe %s/%s: %s", w.ns, w.name, exc)
    return Outcome("retry", delay=api_retry_delay(ctx), detail="observe")


async def _plan_and_claim(ctx: OperatorContext, w: View, facts: Facts) -> Outcome:
    if w.deleting and is_complete(Operation.DELETING, facts.instance, facts.volume, None):
        return Outcome("done", operation=Operation.DELETING, detail="deleted")
    obs = _observe(w, facts, w.operation)
    if obs.status is ObservedStatus.ERROR and not w.deleting:
        failure = ObservationFailure(obs.error_rule, facts.instance)
        return await fail(ctx, w, Operation.NONE, observed_error(obs.error_rule), observed=failure)
    target = plan(obs.status, w.desired, Operation.NONE, w.archive_key, w.deleting)
    if target is Operation.NONE:
        if w.error_info and not w.terminal:  # work that never started is no longer wanted
            await clear_unstarted(ctx, w)
            return AGAIN
        if not w.status.get("observed_at"):  # never confirmed, or just recovered
            await observe_now(ctx, w)
        return Outcome("done", detail="converged")
    op_id = w.op_id or str(uuid.uuid4())
    if w.operation is not Operation.NONE and w.operation is not target:
        op_id = str(uuid.uuid4())  # overriding another operation (deletion)
    status = dict(w.status)
    status.pop("progress", None)  # left by a coordinator that died mid-transfer
    status.update(
        operation=target.value,
        op_id=op_id,
        op_started_at=format_rfc3339(ctx.clock.now(), micro=True),
        error_count=0,
        error_info=None,
    )
    try:
        obj = await write_rv_fenced(ctx, w, status)
    except LostOwnership:
        return await _after_lost_claim(ctx, w)
    claimed = written_view(w, obj, status)
    await _claimed(ctx, claimed, target)
    return await _run(ctx, claimed, target)


async def _claimed(ctx: OperatorContext, w: View, op: Operation) -> None:
    log.info("%s/%s: claimed %s op_id=%s", w.ns, w.name, op.value, w.op_id)
    if kube_events.announces_start(op):
        message = f"{op.value} started (op_id {w.op_id})"
        await kube_events.post(ctx, w.obj, kube_events.OPERATION_STARTED, message)


def _observe(w: View, facts: Facts, op: Operation) -> Any:
    return observe_detail(
        facts.instance,
        facts.volume,
        terminal_error=False,
        previous=w.observed,
        operation=op,
        archive_key=w.archive_key,
        previous_status=w.previous_status,
    )


async def _after_lost_claim(ctx: OperatorContext, w: View) -> Outcome:
    """A claim's compare-and-set failed: plan again unless another reconciler claimed."""
    try:
        fresh = View.of(await ctx.api.get(w.ns, w.name))
    except ApiError:
        return Outcome("retry", delay=1.0, detail="lost")
    if fresh.operation is w.operation and fresh.op_id == w.op_id:
        return AGAIN  # an unrelated write (observation, metadata) moved the version
    return _LostClaim("done", operation=fresh.operation, detail="lost")


async def _continue(ctx: OperatorContext, w: View, facts: Facts) -> Outcome:
    """An operation is already claimed (its backoff is over): time it out or resume it."""
    op = w.operation
    if remaining(ctx, w, op) <= 0:
        return await fail(ctx, w, op, timeout_error(ctx, op))
    if op is not Operation.RESTORING and is_complete(
        op, facts.instance, facts.volume, own_archive(w)
    ):
        return await _complete(ctx, w, op, facts)
    return await _run(ctx, w, op)


async def _run(ctx: OperatorContext, w: View, op: Operation) -> Outcome:
    """Actuate ``op`` within its remaining time, then decide completion from observation."""
    left = remaining(ctx, w, op)
    if left <= 0:
        return await fail(ctx, w, op, timeout_error(ctx, op))
    try:
        async with asyncio.timeout(left):
            w, restore_returned = await actuate(ctx, w, op)
    except TimeoutError:
        return await fail(ctx, w, op, timeout_error(ctx, op))
    except LostOwnership:
        return Outcome("done", operation=op, detail="lost")
    except CodehubError as exc:
        return await fail(ctx, w, op, exc)
    try:
        facts = await gather_facts(ctx, w.uid)
    except CodehubError as exc:
        return await fail(ctx, w, op, exc)
    if is_complete(op, facts.instance, facts.volume, own_archive(w), restore_returned):
        return await _complete(ctx, w, op, facts)
    after = _observe(w, facts, op)
    if after.error_rule is ErrorRule.DATA_LOST and op is not Operation.DELETING:
        return await fail(ctx, w, op, observed_error(after.error_rule))
    volume = "present" if facts.volume else "absent"
    return await fail(
        ctx,
        w,
        op,
        MismatchError(
            f"{op.value} actuators succeeded but observation disagrees "
            f"(container {facts.instance.value}, volume {volume})",
            context={"instance": facts.instance.value, "volume": facts.volume},
        ),
    )


async def _complete(ctx: OperatorContext, w: View, op: Operation, facts: Facts) -> Outcome:
    """Record that ``op`` finished, as observation (``facts``) confirmed: in one write
    with the observation and the next claim when nobody wrote since this reconciler
    did, else the completion alone (module docstring)."""
    observe_duration(ctx, w, op, "completed")
    if op is Operation.DELETING:
        await _completed_event(ctx, w, op)
        return Outcome("done", operation=op, detail="deleted")
    changes = {
        "operation": Operation.NONE.value,
        "op_id": None,
        "op_started_at": None,
        "error_count": 0,
        "error_info": None,
        "previous_status": None,
    }
    if w.status.get("progress") is not None:
        changes["progress"] = None  # left by a coordinator that died mid-transfer
    after = _after_completion(ctx, w, changes, facts)
    if after is not None:
        merged = await _write_merged(ctx, w, op, *after)
        if merged is not None:
            return merged
    try:
        written = await write_op_fenced(ctx, w, changes)
    except LostOwnership:
        return Outcome("done", operation=op, detail="lost")
    except CodehubError as exc:
        return Outcome("retry", delay=api_retry_delay(ctx), operation=op, reason=str(exc))
    log.info("%s/%s: %s completed", w.ns, w.name, op.value)
    await _completed_event(ctx, w, op)
    return _Again("done", detail="again", latest=await _observe_after(ctx, w, written))


def _after_completion(
    ctx: OperatorContext, w: View, changes: dict[str, Any], facts: Facts
) -> tuple[dict[str, Any], Operation] | None:
    """The whole status after the completion (no I/O): ``changes``, the observation of
    ``facts`` on it and, if planning on that observation yields one, the next claim;
    with that next operation (NONE: converged). None when the observation may not be
    written with it (an ERROR that must be recorded first)."""
    status = {**w.status, **changes}
    seen = observer.fields({**w.obj, "status": status}, facts, ctx.clock.now())
    if seen is None:
        return None
    status.update(seen)
    done = View.of({**w.obj, "status": status})
    target = plan(done.observed, done.desired, Operation.NONE, done.archive_key, done.deleting)
    if target is not Operation.NONE:
        status.pop("progress", None)
        status.update(
            operation=target.value,
            op_id=str(uuid.uuid4()),
            op_started_at=format_rfc3339(ctx.clock.now(), micro=True),
        )
    return status, target


async def _write_merged(
    ctx: OperatorContext, w: View, op: Operation, status: dict[str, Any], target: Operation
) -> Outcome | None:
    """Write the completion of ``op``, its observation and the claim of ``target`` in
    one compare-and-set on the resourceVersion of ``w``; None if that version moved
    (the caller writes the completion alone)."""
    try:
        obj = await write_rv_fenced(ctx, w, status)
    except LostOwnership:
        log.info("%s/%s: changed during %s; completion written alone", w.ns, w.name, op.value)
        return None
    except CodehubError as exc:
        return Outcome("retry", delay=api_retry_delay(ctx), operation=op, reason=str(exc))
    log.info("%s/%s: %s completed, observed %s", w.ns, w.name, op.value, status["observed_status"])
    await _completed_event(ctx, w, op)
    if target is Operation.NONE:
        return _Settled("done", detail="converged")
    claimed = written_view(w, obj, status)
    await _claimed(ctx, claimed, target)
    return _Again("done", detail="again", claimed=(claimed, target))


async def _completed_event(ctx: OperatorContext, w: View, op: Operation) -> None:
    await kube_events.completed(ctx, w.obj, f"{op.value} completed (op_id {w.op_id})")


async def _observe_after(ctx: OperatorContext, w: View, written: Obj) -> Obj | None:
    """Observe right after the completion was written, starting from the server's answer
    to that write (no second read); a failure never fails the reconcile. Answers the
    newest copy of the workspace, or None (the next step reads it)."""
    try:
        known = written if isinstance(written, dict) and written.get("metadata") else None
        _, latest = await observer.observe_latest(ctx, w.ns, w.name, known=known)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("observation of %s/%s failed: %s", w.ns, w.name, exc)
        return None
    return latest
