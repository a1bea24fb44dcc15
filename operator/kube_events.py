"""core/v1 Events for workspace transitions, so `codehub describe` tells the story.

Posting is best effort: an event that cannot be posted is logged and dropped, never
allowed to fail or delay a reconcile beyond one API call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Literal

from codehub.operator.context import Obj, OperatorContext
from codehub.vocabulary.timestamps import format_rfc3339

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

OPERATION_STARTED = "OperationStarted"
OPERATION_COMPLETED = "OperationCompleted"
OPERATION_RETRYING = "OperationRetrying"
OPERATION_FAILED = "OperationFailed"
DATA_LOST = "DataLost"

_MAX_MESSAGE = 1024


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
    try:
        await ctx.api.post_event(event["metadata"]["namespace"], event)
        ctx.metrics.events_posted.labels(reason=reason).inc()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("could not post event %s for %s: %s", reason, event["involvedObject"], exc)
