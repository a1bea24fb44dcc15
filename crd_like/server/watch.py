"""Watch streams: newline-delimited JSON events over one chunked HTTP response.

Clients (kopf above all) rely on three properties: every write's resourceVersion
eventually shows up, bookmarks arrive at least every ``bookmark_interval`` so a
reconnect resumes without a re-list, and the only ERROR event is the 410 that says
"history is gone, re-list" — kopf stops the whole operator on any other ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from codehub.crd_like.store.interface import Gone, Obj, Selectors, WatchEvent

from .context import ResourceKind, ctx_of, query_bool, query_int, tracked_stream
from .status import bad_request, status_body
from .table import build_table

log = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"

Transform = Callable[[Obj], Obj]

_END = object()


async def pump(source: AsyncIterator[WatchEvent], queue: asyncio.Queue[Any]) -> None:
    """Move store events into a queue so the consumer can wait with a deadline without
    cancelling the store's iterator mid-step."""
    try:
        async for event in source:
            await queue.put(event)
        await queue.put(_END)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to the consumer, which decides what the client sees
        await queue.put(exc)
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class EventQueue:
    """A store watch running in a task, read with timeouts."""

    def __init__(self, source: AsyncIterator[WatchEvent]) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        self.task = asyncio.create_task(pump(source, self.queue))

    async def get(self, wait: float | None) -> WatchEvent | Exception | None:
        """The next event, the store's exception, or None on timeout or end of stream."""
        try:
            async with asyncio.timeout(wait):
                item = await self.queue.get()
        except TimeoutError:
            return None
        if item is _END:
            return None
        assert isinstance(item, WatchEvent | Exception)
        return item

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


def bookmark(rk: ResourceKind, revision: int, *, initial_end: bool = False) -> Obj:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"apiVersion": rk.api_version, "kind": rk.kind, "metadata": meta}


def gone_event(message: str) -> dict[str, Any]:
    return {"type": "ERROR", "object": status_body(410, message, "Expired")}


async def stream_watch(
    request: web.Request,
    rk: ResourceKind,
    *,
    namespace: str | None,
    selectors: Selectors | None,
    list_items: Callable[[], Awaitable[tuple[list[Obj], int]]],
    allowed: Callable[[Obj], bool] | None = None,
    as_table: bool = False,
    include_object: str = "Metadata",
) -> web.StreamResponse:
    """Serve ``?watch=true`` for ``rk``: initial state when asked, then the store's log."""
    ctx = ctx_of(request)
    raw_rv = request.query.get("resourceVersion", "")
    send_initial = query_bool(request, "sendInitialEvents")
    bookmarks = query_bool(request, "allowWatchBookmarks")
    timeout = query_int(request, "timeoutSeconds")
    limit = float(timeout) if timeout else ctx.config.default_watch_timeout
    initial: list[Obj] = []
    if raw_rv in ("", "0") or send_initial:
        initial, since = await list_items()
    else:
        try:
            since = int(raw_rv)
        except ValueError:
            raise bad_request(
                f"resourceVersion must be an integer, got {raw_rv!r}", "resourceVersion"
            ) from None
    source = ctx.store.watch(
        rk.plural,
        since=since,
        namespace=namespace,
        selectors=selectors,
        bookmark_interval=ctx.config.bookmark_interval,
    )
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
    )
    gauge = ctx.metrics.open_watches.labels(rk.plural)
    gauge.inc()
    events = EventQueue(source)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit

    def shape(obj: Obj) -> Obj:
        if as_table:
            return build_table([obj], list(rk.columns), include_object=include_object)
        return obj

    async def send(type_: str, obj: Obj) -> None:
        line = json.dumps({"type": type_, "object": obj}, separators=(",", ":"))
        await response.write(line.encode() + b"\n")

    try:
        await response.prepare(request)
        with tracked_stream(request):
            for obj in initial:
                await send("ADDED", shape(obj))
            if send_initial and bookmarks:
                await send("BOOKMARK", bookmark(rk, since, initial_end=True))
            while (remaining := deadline - loop.time()) > 0:
                item = await events.get(remaining)
                if item is None:
                    break
                if isinstance(item, Gone):
                    await send("ERROR", gone_event(str(item))["object"])
                    break
                if isinstance(item, Exception):
                    log.warning("watch of %s ended by a store error: %r", rk.plural, item)
                    break
                if item.type == "BOOKMARK":
                    if bookmarks:
                        await send("BOOKMARK", bookmark(rk, item.revision))
                    continue
                if item.object is None or (allowed is not None and not allowed(item.object)):
                    continue
                await send(item.type, shape(item.object))
    except ConnectionResetError:
        pass
    finally:
        gauge.dec()
        await events.close()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response
