"""Server-Sent Events (docs/events.md), fed by the same store watch as the Kubernetes watch.

On connect the stream sends one ``state_changed`` per visible workspace (the current
state, so a loading page needs no separate GET), then one on every change of the
tracked fields, ``error`` when ``error_info`` changes to a new error, ``heartbeat``
every ``sse_heartbeat_interval``, and ``idle_warning`` shortly before the standby TTL acts
(``idle_warning.py``). ``state_changed`` and ``error`` carry ``id: <resourceVersion>``; a
client reconnecting with ``Last-Event-ID`` resumes after it without the initial burst.
History the store has compacted ends the stream with an ``expired`` event (reconnect
without ``Last-Event-ID``).

``/api/v1/workspaces/events`` follows every namespace the caller may see: all of them
for the operator and administrators, the caller's own for a plain user.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from codehub.crd_like.models import derive_display
from codehub.crd_like.store.interface import (
    Gone,
    NotFound,
    Obj,
    Selectors,
    StoreError,
    WatchEvent,
)
from codehub.vocabulary.timestamps import now_rfc3339, utc_now

from .context import (
    WORKSPACES,
    ServerContext,
    authorize,
    ctx_of,
    identity_of,
    mark,
    stream_slot,
    tracked_stream,
)
from .idle_warning import EVENT as IDLE_WARNING
from .idle_warning import IdleWarnings
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
        # bytes done of a running archive or restore, for the loading page; None otherwise
        "progress": None if deleted else status.get("progress"),
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
    initial, source = await _open(request, ctx, namespace, name)
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
        warnings = IdleWarnings(ctx.config.idle_warning_seconds)
        stream = _Stream(response, warnings, ctx.metrics.idle_warnings)
        try:
            with tracked_stream(request):
                await _pump_sse(stream, events, initial, name, interval)
        except ConnectionResetError:
            pass
        finally:
            ctx.metrics.open_sse.dec()
            await events.close()
    return response


async def _open(
    request: web.Request, ctx: ServerContext, namespace: str | None, name: str | None
) -> tuple[list[Obj], AsyncIterator[WatchEvent]]:
    """The workspaces to announce at once and the watch that follows them: from a fresh
    list, or, with ``Last-Event-ID``, from the log after that revision."""
    selectors = Selectors(fields={"metadata.name": name}) if name else None
    last_id = request.headers.get("Last-Event-ID", "").strip()
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
            if name and not initial:
                # A stream of one workspace that does not exist would send only
                # heartbeats: a mistyped name gets the 404 a GET gets. (With
                # Last-Event-ID the client resumes, and a deletion since is replayed.)
                raise NotFound(name)
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
    return initial, source


@dataclass
class _Stream:
    """One SSE connection's memory: the last state and error sent per workspace, and
    the idle warnings it owes."""

    response: web.StreamResponse
    warnings: IdleWarnings
    counter: Any
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)

    async def warn(self) -> None:
        for data in self.warnings.due(utc_now()):
            self.counter.inc()
            await self.response.write(frame(IDLE_WARNING, data))

    async def on_object(self, obj: Obj, rv: str, deleted: bool) -> None:
        key = _key(obj)
        state = state_of(obj, deleted=deleted)
        if self.states.get(key) != state:
            self.states[key] = state
            await self.response.write(frame("state_changed", state, rv))
        err = None if deleted else error_of(obj)
        if err != self.errors.get(key):
            self.errors[key] = err
            if err is not None:
                await self.response.write(frame("error", err, rv))
        self.warnings.track(key, None if deleted else obj)
        if deleted:
            self.states.pop(key, None)
            self.errors.pop(key, None)
        await self.warn()


async def _pump_sse(
    stream: _Stream, events: EventQueue, initial: list[Obj], name: str | None, interval: float
) -> None:
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + interval
    for obj in initial:
        key = _key(obj)
        stream.states[key] = state_of(obj)
        stream.errors[key] = error_of(obj)
        stream.warnings.track(key, obj)
        rv = obj["metadata"].get("resourceVersion")
        await stream.response.write(frame("state_changed", stream.states[key], rv))
    await stream.warn()
    while True:
        wait = next_beat - loop.time()
        soon = stream.warnings.seconds_to_next(utc_now())
        item = await events.get(max(0.0, wait if soon is None else min(wait, soon)))
        if loop.time() >= next_beat:
            await stream.response.write(frame("heartbeat", {"time": now_rfc3339()}))
            next_beat = loop.time() + interval
        await stream.warn()
        if item is None:
            if events.task.done() and events.queue.empty():
                break
            continue
        if isinstance(item, Gone):
            # Not ``error``: that event is reserved for error_info changes.
            await stream.response.write(frame("expired", {"workspace": name, "message": str(item)}))
            break
        if isinstance(item, Exception):
            break
        if item.type == "BOOKMARK" or item.object is None:
            continue
        await stream.on_object(item.object, str(item.revision), item.type == "DELETED")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/workspaces/events", events_stream)
    app.router.add_get("/api/v1/namespaces/{namespace}/workspaces/events", events_stream)
    app.router.add_get("/api/v1/namespaces/{namespace}/workspaces/{name}/events", events_stream)
