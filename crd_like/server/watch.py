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

from codehub.crd_like.store.interface import Gone, Obj, Selectors, Store, WatchEvent

from .context import ResourceKind, ctx_of, query_bool, query_int, stream_slot, tracked_stream
from .metrics import ApiMetrics
from .status import ApiError, bad_request, status_body
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


#: How long a watch or SSE stream from a resourceVersion the store has not reached yet
#: waits for it before the 504 kube-apiserver sends ("Too large resource version").
RV_WAIT_SECONDS = 3.0


def too_large_rv(wanted: int, current: int) -> ApiError:
    return ApiError(
        504,
        f"Timeout: Too large resource version: {wanted}, current: {current}",
        reason="Timeout",
        details={
            "causes": [
                {
                    "reason": "ResourceVersionTooLarge",
                    "message": "Too large resource version",
                }
            ],
            "retryAfterSeconds": 1,
        },
    )


async def await_revision(store: Store, wanted: int) -> None:
    """Return once the store has reached ``wanted``; 504 after ``RV_WAIT_SECONDS``.

    Without this a watch from a future revision would answer 200 and then skip every
    event up to it, silently.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RV_WAIT_SECONDS
    while (current := await store.current_revision()) < wanted:
        if loop.time() >= deadline:
            raise too_large_rv(wanted, current)
        await asyncio.sleep(min(0.1, RV_WAIT_SECONDS))


async def refresh_backlog(metrics: ApiMetrics, store: Store) -> None:
    """Set ``codehub_api_watch_backlog_events``: the head revision minus the slowest open
    watch's position (0 without watches). Called on scrape; reading the head costs a
    query, so sending events only records positions."""
    if not metrics.watch_positions:
        metrics.watch_backlog.set(0)
        return
    try:
        head = await store.current_revision()
    except Exception as exc:  # a scrape still answers; the gauge keeps its last value
        log.warning("cannot read the head revision for the watch backlog: %r", exc)
        return
    slowest = min(metrics.watch_positions.values(), default=head)
    metrics.watch_backlog.set(max(head - slowest, 0))


def parse_revision(raw: str, what: str = "resourceVersion") -> int:
    if not raw.isdigit():
        raise bad_request(f"{what} must be an integer, got {raw[:64]!r}", what)
    return int(raw)


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
    timeout = query_int(request, "timeoutSeconds")
    initial: list[Obj] = []
    if raw_rv in ("", "0") or send_initial:
        if raw_rv not in ("", "0"):
            parse_revision(raw_rv)
        initial, since = await list_items()
    else:
        since = parse_revision(raw_rv)
        await await_revision(ctx.store, since)
    with stream_slot(request):
        source = ctx.store.watch(
            rk.plural,
            since=since,
            namespace=namespace,
            selectors=selectors,
            bookmark_interval=ctx.config.bookmark_interval,
        )
        stream = _WatchStream(
            rk,
            bookmarks=query_bool(request, "allowWatchBookmarks"),
            as_table=as_table,
            include_object=include_object,
            allowed=allowed,
        )
        gauge = ctx.metrics.open_watches.labels(rk.plural)
        gauge.inc()
        events = EventQueue(source)
        stream.track(ctx.metrics.watch_positions, since)
        try:
            await stream.response.prepare(request)
            with tracked_stream(request):
                limit = float(timeout) if timeout else ctx.config.default_watch_timeout
                await stream.run(events, initial, since, send_initial, limit)
        except ConnectionResetError:
            pass
        finally:
            gauge.dec()
            ctx.metrics.watch_positions.pop(stream, None)
            await events.close()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await stream.response.write_eof()
    return stream.response


class _WatchStream:
    """One watch response: shapes objects (Table or not) and writes event lines."""

    def __init__(
        self,
        rk: ResourceKind,
        *,
        bookmarks: bool,
        as_table: bool,
        include_object: str,
        allowed: Callable[[Obj], bool] | None,
    ) -> None:
        self.rk = rk
        self.bookmarks = bookmarks
        self.as_table = as_table
        self.include_object = include_object
        self.allowed = allowed
        self.response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        self._positions: dict[object, int] = {}

    def track(self, positions: dict[object, int], since: int) -> None:
        """Report the highest revision examined in ``positions`` (the backlog gauge)."""
        self._positions = positions
        positions[self] = since

    def shape(self, obj: Obj) -> Obj:
        if self.as_table:
            return build_table([obj], list(self.rk.columns), include_object=self.include_object)
        return obj

    async def send(self, type_: str, obj: Obj) -> None:
        line = json.dumps({"type": type_, "object": obj}, separators=(",", ":"))
        await self.response.write(line.encode() + b"\n")

    async def run(
        self,
        events: EventQueue,
        initial: list[Obj],
        since: int,
        send_initial: bool,
        limit: float,
    ) -> None:
        for obj in initial:
            await self.send("ADDED", self.shape(obj))
        if send_initial and self.bookmarks:
            await self.send("BOOKMARK", bookmark(self.rk, since, initial_end=True))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (remaining := deadline - loop.time()) > 0:
            item = await events.get(remaining)
            if item is None:
                break
            if isinstance(item, Gone):
                await self.send("ERROR", gone_event(str(item))["object"])
                break
            if isinstance(item, Exception):
                log.warning("watch of %s ended by a store error: %r", self.rk.plural, item)
                break
            self._positions[self] = max(self._positions.get(self, 0), item.revision)
            if item.type == "BOOKMARK":
                if self.bookmarks:
                    await self.send("BOOKMARK", bookmark(self.rk, item.revision))
                continue
            if item.object is None or (self.allowed is not None and not self.allowed(item.object)):
                continue
            await self.send(item.type, self.shape(item.object))
