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
import weakref
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
        self._ended = False

    async def get(self, wait: float | None) -> WatchEvent | Exception | None:
        """The next event, the store's exception, or None on timeout or end of stream."""
        if self._ended:
            return None
        if not self.queue.empty() or wait is None:
            item = await self.queue.get()  # no timer to arm when it cannot be needed
        else:
            try:
                async with asyncio.timeout(wait):
                    item = await self.queue.get()
            except TimeoutError:
                return None
        if item is _END:
            self._ended = True
            return None
        assert isinstance(item, WatchEvent | Exception)
        return item

    async def get_batch(
        self, wait: float | None, limit: int = 256
    ) -> list[WatchEvent | Exception] | None:
        """The next event and every other one already queued behind it (up to ``limit``,
        stopping after an exception), or None on timeout or end of stream: a watcher
        that wakes up once for several events writes them all at once."""
        first = await self.get(wait)
        if first is None:
            return None
        items = [first]
        while len(items) < limit and not isinstance(items[-1], Exception):
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is _END:
                self._ended = True
                break
            items.append(item)
        return items

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


#: Initial events are written in chunks of this many lines.
INITIAL_CHUNK = 256


#: ``json.dumps(..., separators=(",", ":"))`` without making an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def encode_line(type_: str, obj: Obj) -> bytes:
    return f'{{"type":"{type_}","object":{_COMPACT.encode(obj)}}}\n'.encode()


class LineCache:
    """The encoded lines of a store's recent events, shared by all its plain watches.

    A revision names one entry of the store's log, so the line of (revision, type) is
    the same bytes for every watcher that gets it unshaped: N watchers cost one
    ``json.dumps`` per event, not N. Bounded; the oldest lines go first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = max(1, size)
        self._lines: dict[tuple[int, str], bytes] = {}
        self.encoded = 0  # for tests and benchmarks

    def line(self, event: WatchEvent) -> bytes:
        key = (event.revision, event.type)
        hit = self._lines.get(key)
        if hit is None:
            obj = event.shared  # encoded, not kept: no copy needed
            assert obj is not None
            hit = self._lines[key] = encode_line(event.type, obj)
            self.encoded += 1
            if len(self._lines) > self._size:
                del self._lines[next(iter(self._lines))]
        return hit


_LINE_CACHES: weakref.WeakKeyDictionary[Store, LineCache] = weakref.WeakKeyDictionary()


def line_cache(store: Store) -> LineCache | None:
    """The store's shared line cache (None for a store that cannot be weakly keyed)."""
    try:
        cache = _LINE_CACHES.get(store)
        if cache is None:
            cache = _LINE_CACHES[store] = LineCache()
    except TypeError:
        return None
    return cache


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
                await stream.run(events, initial, since, send_initial, limit, line_cache(ctx.store))
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

    def event_line(self, event: WatchEvent, lines: LineCache | None) -> bytes:
        """Shaped from the event's shared body: it is only read and encoded here."""
        if lines is None or self.as_table:
            obj = event.shared
            assert obj is not None
            return encode_line(event.type, self.shape(obj))
        return lines.line(event)

    async def run(
        self,
        events: EventQueue,
        initial: list[Obj],
        since: int,
        send_initial: bool,
        limit: float,
        lines: LineCache | None,
    ) -> None:
        """Each wake-up writes every event queued by then in one write: a TLS record
        and a ``send()`` per event and watcher was most of the fan-out's cost
        (docs/adr/0007-api-write-path-performance.md)."""
        out = [encode_line("ADDED", self.shape(obj)) for obj in initial]
        if send_initial and self.bookmarks:
            out.append(encode_line("BOOKMARK", bookmark(self.rk, since, initial_end=True)))
        for start in range(0, len(out), INITIAL_CHUNK):
            await self.response.write(b"".join(out[start : start + INITIAL_CHUNK]))
        # One timer for the whole stream, not one per wait.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while (batch := await events.get_batch(None)) is not None:
                    out = []
                    ended = self._lines_of(batch, out, lines)
                    if out:
                        await self.response.write(b"".join(out))
                    if ended:
                        break

    def _lines_of(
        self, batch: list[WatchEvent | Exception], out: list[bytes], lines: LineCache | None
    ) -> bool:
        """Append the lines ``batch`` gives this watcher to ``out``; True: end the stream."""
        for item in batch:
            if isinstance(item, Gone):
                out.append(encode_line("ERROR", gone_event(str(item))["object"]))
                return True
            if isinstance(item, Exception):
                log.warning("watch of %s ended by a store error: %r", self.rk.plural, item)
                return True
            self._positions[self] = max(self._positions.get(self, 0), item.revision)
            if item.type == "BOOKMARK":
                if self.bookmarks:
                    out.append(encode_line("BOOKMARK", bookmark(self.rk, item.revision)))
                continue
            obj = item.shared
            if obj is None or (self.allowed is not None and not self.allowed(obj)):
                continue
            out.append(self.event_line(item, lines))
        return False
