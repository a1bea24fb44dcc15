"""core/v1 Events for workspace transitions, so `codehub describe` tells the story.

Every operation is told by its ``OperationCompleted`` (with its op_id) or by its
``OperationRetrying`` / ``OperationFailed``; only the operations that can take minutes
(``announces_start``) also get an ``OperationStarted``, so a PENDING -> RUNNING costs two
POSTs, not four, and says the same (docs/events.md).

Posting is best effort: an event that cannot be posted is logged and dropped, never
allowed to fail a reconcile. Inside ``posting_behind`` (the reconciler's scope) a post
runs as a task beside the next status write instead of before it, so the events of a
transition cost its critical path no round trip; the scope awaits them before it ends
(docs/adr/0009-lifecycle-and-scale-performance.md). The event's timestamps are taken
when it is built, so `codehub describe` orders them as they happened.

Within that scope, completions (``completed``) are held and told together: the
operations one reconcile completes in a row (PROVISIONING then STARTING for a new
workspace) make one ``OperationCompleted`` whose message names each with its op_id, so
a PENDING -> RUNNING is one POST, not two. Any other event first releases the held
completions, and the scope releases them at its end, so the order `describe` shows is
the order things happened (docs/adr/0014-kopf-writes.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, Literal

from codehub.operator.context import Obj, OperatorContext
from codehub.operator.planning import Operation
from codehub.vocabulary.timestamps import format_rfc3339

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

OPERATION_STARTED = "OperationStarted"
OPERATION_COMPLETED = "OperationCompleted"
OPERATION_RETRYING = "OperationRetrying"
OPERATION_FAILED = "OperationFailed"
DATA_LOST = "DataLost"

#: Operations that move data or take minutes: their start is an Event of its own.
_ANNOUNCED = frozenset({Operation.ARCHIVING, Operation.RESTORING, Operation.DELETING})

_MAX_MESSAGE = 1024
#: Joins the messages of completions told by one Event.
_JOIN = "; "


@dataclasses.dataclass
class _Behind:
    """What a ``posting_behind`` scope holds: the posts under way, and the completions
    not told yet (built events, so each keeps the time it happened)."""

    pending: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    completions: list[Obj] = dataclasses.field(default_factory=list)


_behind: ContextVar[_Behind | None] = ContextVar("kube_events", default=None)


def announces_start(op: Operation) -> bool:
    """Whether claiming ``op`` posts an ``OperationStarted``: a short operation (seconds)
    is told by its completion alone; a long one shows it began while it runs."""
    return op in _ANNOUNCED


def build_event(
    ctx: OperatorContext, obj: Obj, reason: str, message: str, type_: EventType = "Normal"
) -> Obj:
    meta: dict[str, Any] = obj.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    now = format_rfc3339(ctx.clock.now(), micro=True)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{uuid.uuid4().hex[:16]}",
            "namespace": ns,
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "codehub.io/v1alpha1"),
            "kind": obj.get("kind", "Workspace"),
            "name": name,
            "namespace": ns,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "type": type_,
        "source": {"component": ctx.component},
        "reportingComponent": ctx.component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": None,
        "count": 1,
    }


async def post(
    ctx: OperatorContext, obj: Obj, reason: str, message: str, type_: EventType = "Normal"
) -> None:
    event = build_event(ctx, obj, reason, message, type_)
    behind = _behind.get()
    if behind is not None:
        _release(ctx, behind)
        behind.pending.append(asyncio.create_task(_post(ctx, event, reason)))
        return
    await _post(ctx, event, reason)


async def completed(ctx: OperatorContext, obj: Obj, message: str) -> None:
    """An ``OperationCompleted``; within ``posting_behind``, held to be told together
    with the completions that follow it in the same scope (module docstring)."""
    behind = _behind.get()
    if behind is None:
        await post(ctx, obj, OPERATION_COMPLETED, message)
        return
    behind.completions.append(build_event(ctx, obj, OPERATION_COMPLETED, message))


def merge_completions(events: list[Obj]) -> Obj:
    """One Event telling ``events`` (completions of one workspace, in order): the last
    one's object version, the first one's time as first seen, each message in turn."""
    if len(events) == 1:
        return events[0]
    merged = dict(events[-1])
    merged["firstTimestamp"] = events[0]["firstTimestamp"]
    merged["message"] = _JOIN.join(str(e["message"]) for e in events)[:_MAX_MESSAGE]
    return merged


def _release(ctx: OperatorContext, behind: _Behind) -> None:
    if behind.completions:
        event = merge_completions(behind.completions)
        behind.completions = []
        behind.pending.append(asyncio.create_task(_post(ctx, event, OPERATION_COMPLETED)))


@contextlib.asynccontextmanager
async def posting_behind(ctx: OperatorContext) -> AsyncIterator[None]:
    """Events posted within run beside the caller's next steps; held completions are
    released at the end; all are awaited (or, if the caller is cancelled, cancelled,
    held completions dropped) before the scope ends."""
    behind = _Behind()
    token = _behind.set(behind)
    try:
        yield
    except BaseException:
        for task in behind.pending:
            task.cancel()
        raise
    else:
        _release(ctx, behind)
    finally:
        _behind.reset(token)
        if behind.pending:
            await asyncio.gather(*behind.pending, return_exceptions=True)


async def _post(ctx: OperatorContext, event: Obj, reason: str) -> None:
    try:
        await ctx.api.post_event(event["metadata"]["namespace"], event)
        ctx.metrics.events_posted.labels(reason=reason).inc()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("could not post event %s for %s: %s", reason, event["involvedObject"], exc)
