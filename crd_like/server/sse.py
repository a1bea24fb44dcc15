"""Server-Sent Events (docs/events.md), fed by the same store watch as the Kubernetes watch.

On connect the stream sends one ``state_changed`` per visible workspace (the current
state, so a loading page needs no separate GET), then one on every change of the
tracked fields, ``error`` when ``error_info`` changes to a new error, and ``heartbeat``
every ``sse_heartbeat_interval``. Each event carries ``id: <resourceVersion>``; a
client reconnecting with ``Last-Event-ID`` resumes after it without the initial burst.
History the store has compacted ends the stream with an ``expired`` event (reconnect
without ``Last-Event-ID``).

``/api/v1/workspaces/events`` follows every namespace the caller may see: all of them
for the operator and administrators, the caller's own for a plain user.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from codehub.crd_like.models import derive_display
from codehub.crd_like.store.interface import Gone, Obj, Selectors, StoreError
from codehub.vocabulary.timestamps import now_rfc3339

from .context import (
    WORKSPACES,
    authorize,
    ctx_of,
    identity_of,
    mark,
    stream_slot,
    tracked_stream,
)
from .status import bad_request, from_store_error
from .watch import EventQueue, await_revision

TRACKED = ("observed_status", "display", "operation", "desired_state")


def state_of(obj: Obj, *, deleted: bool = False) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    observed = "DELETED" if deleted else status.get("observed_status")
    display = status.get("display")
    if deleted:
        display = "DELETED"
    elif display is None and observed is not None:
        try:
            display = derive_display(observed, status.get("archive_key")).value
        except ValueError:
            display = None
    return {
        "workspace": meta.get("name"),
        "namespace": meta.get("namespace"),
        "observed_status": observed,
        "display": display,
        "operation": status.get("operation"),
        "desired_state": spec.get("desired_state"),
    }


def error_of(obj: Obj) -> dict[str, Any] | None:
    info = (obj.get("status") or {}).get("error_info")
    if not isinstance(info, dict):
        return None
    return {
        "workspace": (obj.get("metadata") or {}).get("name"),
        "message": info.get("message", ""),
        "error_count": info.get("error_count", (obj.get("status") or {}).get("error_count", 0)),
        "reason": info.get("reason"),
    }


def _key(obj: Obj) -> str:
    """Workspaces are named per namespace; the all-namespaces stream sees several."""
    meta = obj["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}"


def frame(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events_stream(request: web.Request) -> web.StreamResponse:
    namespace = request.match_info.get("namespace")
    name = request.match_info.get("name")
    mark(request, "sse", "workspaces")
    if namespace is None:
        # The all-namespaces stream: every workspace the identity may see.
        ident = identity_of(request)
        namespace = None if ident.privileged else ident.user
    authorize(request, "watch", WORKSPACES, namespace, name=name or "")
    ctx = ctx_of(request)
    selectors = Selectors(fields={"metadata.name": name}) if name else None
    last_id = request.headers.get("Last-Event-ID", "").strip()
    states: dict[str, dict[str, Any]] = {}
    errors: dict[str, Any] = {}
    initial: list[Obj] = []
    try:
        if last_id:
            if not last_id.isdigit():
                raise bad_request("Last-Event-ID must be a resourceVersion", "Last-Event-ID")
            since = int(last_id)
            await await_revision(ctx.store, since)
        else:
            result = await ctx.store.list(
                WORKSPACES.plural, namespace=namespace, selectors=selectors
            )
            initial, since = result.items, result.revision
        source = ctx.store.watch(
            WORKSPACES.plural,
            since=since,
            namespace=namespace,
            selectors=selectors,
            bookmark_interval=ctx.config.bookmark_interval,
        )
    except StoreError as exc:
        raise from_store_error(
            exc, resource="workspaces", group=WORKSPACES.group, kind="Workspace", name=name or ""
        ) from None
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    with stream_slot(request):
        await response.prepare(request)
        ctx.metrics.open_sse.inc()
        events = EventQueue(source)
        interval = ctx.config.sse_heartbeat_interval
        try:
            with tracked_stream(request):
                await _pump_sse(response, events, initial, states, errors, name, interval)
        except ConnectionResetError:
            pass
        finally:
            ctx.metrics.open_sse.dec()
            await events.close()
    return response


async def _pump_sse(
    response: web.StreamResponse,
    events: EventQueue,
    initial: list[Obj],
    states: dict[str, dict[str, Any]],
    errors: dict[str, Any],
    name: str | None,
    interval: float,
) -> None:
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + interval
    for obj in initial:
        key = _key(obj)
        states[key] = state_of(obj)
        errors[key] = error_of(obj)
        await response.write(
            frame("state_changed", states[key], obj["metadata"].get("resourceVersion"))
        )
    while True:
        item = await events.get(max(0.0, next_beat - loop.time()))
        if loop.time() >= next_beat:
            await response.write(frame("heartbeat", {"time": now_rfc3339()}))
            next_beat = loop.time() + interval
        if item is None:
            if events.task.done() and events.queue.empty():
                break
            continue
        if isinstance(item, Gone):
            # Not ``error``: that event is reserved for error_info changes.
            await response.write(frame("expired", {"workspace": name, "message": str(item)}))
            break
        if isinstance(item, Exception) or item.type == "BOOKMARK" or item.object is None:
            if isinstance(item, Exception):
                break
            continue
        obj = item.object
        key = _key(obj)
        rv = str(item.revision)
        state = state_of(obj, deleted=item.type == "DELETED")
        if states.get(key) != state:
            states[key] = state
            await response.write(frame("state_changed", state, rv))
        err = None if item.type == "DELETED" else error_of(obj)
        if err != errors.get(key):
            errors[key] = err
            if err is not None:
                await response.write(frame("error", err, rv))
        if item.type == "DELETED":
            states.pop(key, None)
            errors.pop(key, None)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/workspaces/events", events_stream)
    app.router.add_get("/api/v1/namespaces/{namespace}/workspaces/events", events_stream)
    app.router.add_get("/api/v1/namespaces/{namespace}/workspaces/{name}/events", events_stream)
