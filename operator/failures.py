"""Failure handling: the one place errors become retry, terminal or done (docs/errors.md).

* ``error_count`` + 1; the budget is ``RECONCILER_MAX_RETRIES`` for the reasons that have
  one (Unreachable, ActionFailed, Mismatch), 0 for Timeout and DataLost;
* within budget: ``error_info`` with ``is_terminal: false``, the operation stays claimed,
  retry after a growing, jittered backoff stored in ``error_info.context`` (so a
  reconcile that comes early, or after a restart, waits out the rest);
* spent: terminal, RetryExceeded (or the error's own reason without a budget), with
  ``previous_status`` = what was observed before; the workspace is then observed at once.

Work that could not even start (``planned``: the engine could not be asked what exists,
so nothing was claimed) is counted the same way, with ``operation`` left NONE: the
error names the planned operation and says it did not start.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from codehub.adapters.errors import (
    RETRY_BUDGET,
    CodehubError,
    DataLostError,
    ErrorCode,
    MismatchError,
    Reason,
)
from codehub.operator import kube_events, observer
from codehub.operator.context import OperatorContext
from codehub.operator.observation import ErrorRule
from codehub.operator.planning import InstanceState, ObservedStatus, Operation
from codehub.operator.reconcile_view import (
    AGAIN,
    Outcome,
    View,
    api_retry_delay,
    call_adapter,
)
from codehub.operator.status_writes import LostOwnership, write_op_fenced, write_rv_fenced
from codehub.vocabulary.timestamps import format_rfc3339

log = logging.getLogger(__name__)

#: Backoff grows as base * 2**(n-1), capped at base * this factor.
BACKOFF_CAP_FACTOR = 8
_MESSAGE_LIMIT = 2000


@dataclass(frozen=True)
class ObservationFailure:
    """What observation alone found wrong (no operation involved)."""

    rule: ErrorRule | None
    instance: InstanceState


def retry_budget(ctx: OperatorContext, reason: Reason) -> int:
    """RECONCILER_MAX_RETRIES for the reasons that have a budget, else 0."""
    return ctx.settings.reconciler_max_retries if RETRY_BUDGET.get(reason, 0) > 0 else 0


def backoff_delay(ctx: OperatorContext, attempt: int) -> float:
    base = ctx.settings.reconciler_retry_backoff
    delay = min(base * float(2 ** max(attempt - 1, 0)), base * BACKOFF_CAP_FACTOR)
    return delay * random.uniform(0.9, 1.1)


def observed_error(rule: ErrorRule | None) -> CodehubError:
    if rule is ErrorRule.NO_VOLUME:
        return MismatchError(
            "a container exists without its home volume", code=ErrorCode.VOLUME_NOT_FOUND
        )
    return DataLostError(
        "the home volume vanished and there is no archive", code=ErrorCode.VOLUME_NOT_FOUND
    )


@dataclass(frozen=True)
class _Failure:
    count: int
    terminal: bool
    reason: Reason
    message: str
    delay: float
    error_info: dict[str, Any]


def _classify(
    ctx: OperatorContext,
    w: View,
    op: Operation,
    exc: CodehubError,
    observed: bool,
    planned: Operation | None = None,
) -> _Failure:
    count = w.error_count + 1
    budget = 0 if observed else retry_budget(ctx, exc.reason)
    terminal = count > budget
    reason, message = exc.reason, str(exc)
    if planned is not None:
        message = f"{planned.value} not started: {exc}"
    if terminal and budget > 0:
        reason = Reason.RETRY_EXCEEDED
        failed = "failed" if planned is None else "could not start"
        message = f"{(planned or op).value} {failed} {count} times; last error: {exc}"
    context: dict[str, Any] = {"code": exc.code.value, "last_reason": exc.reason.value}
    context.update({k: v for k, v in exc.context.items() if _plain(v)})
    if planned is not None:
        context["started"] = False
    delay = 0.0 if terminal else backoff_delay(ctx, count)
    if not terminal:
        context["retry_after_seconds"] = round(delay, 3)
    error_info = {
        "reason": reason.value,
        "message": message[:_MESSAGE_LIMIT],
        "is_terminal": terminal,
        "operation": (planned or op).value,
        "error_count": count,
        "context": context,
        "occurred_at": format_rfc3339(ctx.clock.now(), micro=True),
    }
    return _Failure(count, terminal, reason, message, delay, error_info)


async def fail(
    ctx: OperatorContext,
    w: View,
    op: Operation,
    exc: CodehubError,
    *,
    observed: ObservationFailure | None = None,
    planned: Operation | None = None,
) -> Outcome:
    """Record ``exc`` and answer retry, terminal or done (module docstring).

    ``op`` is the claimed operation whose actuators or observation failed, or NONE with
    ``observed`` set for a problem found by observation alone (always terminal), or NONE
    with ``planned`` set for work that could not start (nothing claimed).
    """
    f = _classify(ctx, w, op, exc, observed is not None, planned)
    if observed is not None:
        f.error_info["context"]["instance"] = observed.instance.value
    changes: dict[str, Any] = {"error_count": f.count, "error_info": f.error_info}
    if f.terminal:
        changes["previous_status"] = _previous_status(w)
    try:
        if op is Operation.NONE:
            await write_rv_fenced(ctx, w, {**w.status, **changes})
        else:
            await write_op_fenced(ctx, w, changes)
    except LostOwnership:
        return AGAIN if op is Operation.NONE else Outcome("done", operation=op, detail="lost")
    except CodehubError as write_exc:
        log.warning("%s/%s: cannot record error: %s", w.ns, w.name, write_exc)
        return Outcome("retry", delay=api_retry_delay(ctx), operation=op, reason=f.reason.value)
    ctx.metrics.workspace_errors.labels(reason=f.reason.value).inc()
    if f.terminal:
        return await _terminal(ctx, w, op, f, observed is not None)
    label = (planned or op).value
    log.warning(
        "%s/%s: %s attempt %d failed (%s), retrying in %.1f s",
        *(w.ns, w.name, label, f.count, exc, f.delay),
    )
    await kube_events.post(
        ctx,
        w.obj,
        kube_events.OPERATION_RETRYING,
        f"{label} attempt {f.count} failed: {f.message}; retry in {f.delay:.0f} s",
        "Warning",
    )
    return Outcome("retry", delay=f.delay, operation=op, reason=f.reason.value)


async def _terminal(
    ctx: OperatorContext, w: View, op: Operation, f: _Failure, observed: bool
) -> Outcome:
    what = f.error_info["operation"]
    log.error("%s/%s: %s failed terminally: %s", w.ns, w.name, what, f.message)
    observe_duration(ctx, w, op, "failed")
    event = kube_events.DATA_LOST if observed else kube_events.OPERATION_FAILED
    await kube_events.post(ctx, w.obj, event, f"{f.reason.value}: {f.message}", "Warning")
    if op is Operation.RESTORING:
        await _discard_partial_restore(ctx, w)
    await observe_now(ctx, w)
    return Outcome("terminal", operation=op, reason=f.reason.value)


async def clear_unstarted(ctx: OperatorContext, w: View) -> None:
    """Drop the non-terminal error of work that never started once that work is no
    longer wanted (the desired state went back to what is observed): nothing failed
    any more, and a stale error would keep the workspace looking unsettled."""
    status = {**w.status, "error_info": None, "error_count": 0}
    try:
        await write_rv_fenced(ctx, w, status)
    except LostOwnership:
        return  # changed meanwhile: the next reconcile decides afresh
    log.info("%s/%s: error of work that never started cleared", w.ns, w.name)


async def observe_now(ctx: OperatorContext, w: View) -> None:
    """Observe right after an outcome was recorded; a failure never fails the caller."""
    try:
        await observer.observe_one(ctx, w.ns, w.name)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("observation of %s/%s failed: %s", w.ns, w.name, exc)


def observe_duration(ctx: OperatorContext, w: View, op: Operation, result: str) -> None:
    if w.op_started_at is not None:
        seconds = max((ctx.clock.now() - w.op_started_at).total_seconds(), 0.0)
        ctx.metrics.operation_duration.labels(operation=op.value, result=result).observe(seconds)


async def _discard_partial_restore(ctx: OperatorContext, w: View) -> None:
    """A failed restore must not leave a volume that looks like a restored STANDBY: the
    volume was created empty by this RESTORING, the archive is the only copy, so dropping
    the volume makes recovery restore again instead of starting an empty home."""
    try:
        await call_adapter("delete_volume", ctx.storage.delete_volume(w.uid))
    except CodehubError as exc:
        log.warning("%s/%s: could not discard partial restore: %s", w.ns, w.name, exc)


def _previous_status(w: View) -> str | None:
    if w.observed is not None and w.observed is not ObservedStatus.ERROR:
        return w.observed.value
    return w.previous_status.value if w.previous_status else None


def _plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
