"""The watch side: one hub per store, the shared log cache, catch-up and compaction.

NOTIFY carries only the revision as a wake-up. The hub LISTENs on a dedicated
connection and also polls the counter every ``interval``, so a lost notification only
delays. It reads each new stretch of the log once into a bounded cache that every
watcher of the store follows: N watches cost one connection and one log read per
change, not N. A watcher older than the cache catches up from the database, which also
answers Gone below the compaction floor (docs/storage.md, docs/api.md "Watch").
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import Obj, Selectors, WatchEvent
from codehub.crd_like.store.pg.schema import NOTIFY_CHANNEL, WATCH_BATCH, log

Pool = AsyncConnectionPool[Any]
#: Only the newest entries keep their decoded body (``LogRow.view``) for the watchers
#: still to read them; an entry further behind decodes again if a late watcher asks.
VIEW_WINDOW = 512
#: How long the hub waits for this process's writes in flight to fill a gap before
#: it reads the log (the gap may be another writer's).
OFFER_GRACE = 0.01


class LogRow:
    """One cached log entry, kept as the JSON text the database sent, and the
    ``EventBody`` of every watch event made from it: decoded at most once for all
    watchers (``view``: selectors, the server's shared line), and again only for a
    watcher that asks for its own object (``fresh``), by parsing the text, several times
    cheaper than ``copy.deepcopy`` of the decoded body."""

    __slots__ = (
        "_body",
        "_keep",
        "_prev",
        "body_text",
        "kind",
        "namespace",
        "prev_text",
        "revision",
        "type",
    )

    def __init__(
        self,
        revision: int,
        kind: str,
        namespace: str,
        type_: str,
        body_text: str,
        prev_text: str | None,
        prev: Obj | None = None,
    ) -> None:
        self.revision = revision
        self.kind = kind
        self.namespace = namespace
        self.type: sem.EventType = type_  # type: ignore[assignment]
        self.body_text = body_text  # a write's own text lacks resourceVersion: see below
        self.prev_text = prev_text
        self._body: Obj | None = None
        self._prev: Obj | None = prev
        self._keep = True

    @property
    def body(self) -> Obj:
        """Shared, decoded once, with its resourceVersion: never handed out to change."""
        return self.view()

    @property
    def prev(self) -> Obj | None:
        if self._prev is None and self.prev_text is not None:
            prev: Obj = json.loads(self.prev_text)
            if not self._keep:
                return prev
            self._prev = prev
        return self._prev

    def forget(self) -> None:
        """Drop what was decoded (it is decoded again if asked): far behind the head,
        a decoded body would only keep memory and the garbage collector busy."""
        self._keep = False
        self._body = None
        if self.prev_text is not None:
            self._prev = None

    def view(self) -> Obj:
        if self._body is None:
            body: Obj = json.loads(self.body_text)
            if isinstance(body.get("metadata"), dict):
                sem.with_revision(body, self.revision)
            if not self._keep:
                return body
            self._body = body
        return self._body

    def fresh(self) -> Obj:
        return sem.with_revision(json.loads(self.body_text), self.revision)


class Hub:
    """One per store: learns that the revision moved (NOTIFY, a poll, or this process's
    own write), loads the new log entries once into a bounded in-memory cache, and wakes
    every watcher. Watchers positioned inside the cache never query the database; one
    that is further behind catches up from the database first.

    This process's own writes are ``offer``ed with their entry right after they commit
    and go into the cache without a query once every lower revision is there; only a
    revision someone else wrote (another server, a write whose result this process has
    not seen yet) is read from the log (docs/adr/0007-api-write-path-performance.md)."""

    def __init__(
        self, database_url: str, pool: Pool, interval: float, listen: bool, cache_size: int
    ) -> None:
        self._url = database_url
        self._pool = pool
        self.interval = interval
        self.listen = listen
        self.cache_size = max(1, cache_size)
        self.head = 0  # highest revision known to exist
        self.loaded = 0  # the cache holds every entry in (cache_floor, loaded]
        self.cache_floor = 0
        self.db_floor = 0  # the database's compaction floor, as last seen
        self.listening = False
        self._rows: list[LogRow] = []
        self._revs: list[int] = []
        self._pending: dict[int, LogRow] = {}  # offered, above a gap
        self._offered = asyncio.Event()
        self._writing = 0
        self.queries = 0  # log reads, for benchmarks
        self.offered = 0
        self._event = asyncio.Event()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def event(self) -> asyncio.Event:
        """Set (and replaced) whenever ``loaded`` moves."""
        return self._event

    def advance(self, revision: int) -> None:
        if revision > self.head:
            self.head = revision
            self._dirty.set()

    def offer(self, row: LogRow) -> None:
        """A committed write of this process: its entry, so the log need not be read."""
        self.offered += 1
        if row.revision > self.loaded:
            if len(self._pending) >= self.cache_size:
                self._pending.clear()  # the loader is stuck; it reads the log instead
            self._pending[row.revision] = row
            self._offered.set()
            self.advance(row.revision)
            if row.revision == self.loaded + 1:
                # Next in line: into the cache now, watchers woken, no loader hop.
                self._take_pending()
            self._dirty.set()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a write of this process until it is offered (or failed): while any
        is open, a gap in the cache is most likely one of them, so the loader waits
        for the offer instead of reading the log."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
            if not self._writing:
                self._offered.set()

    async def _await_offer(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OFFER_GRACE):
                while (
                    self._writing
                    and self.loaded < self.head
                    and self.loaded + 1 not in self._pending
                ):
                    self._offered.clear()
                    await self._offered.wait()

    def _take_pending(self) -> bool:
        """Move the offered entries that continue the cache into it."""
        run: list[LogRow] = []
        while (row := self._pending.pop(self.loaded + 1 + len(run), None)) is not None:
            run.append(row)
        if run:
            self._extend(run, run[-1].revision)
            self._wake()
        return bool(run)

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def note_floor(self, floor: int) -> None:
        """Cached entries at or below the database's floor must not outlive it: a
        resume from before the compaction is Gone, whichever store serves it."""
        if floor <= self.db_floor:
            return
        self.db_floor = floor
        if self.cache_floor < floor:
            drop = bisect.bisect_right(self._revs, floor)
            del self._rows[:drop]
            del self._revs[:drop]
            self.cache_floor = min(floor, self.loaded)

    def after(self, revision: int) -> tuple[list[LogRow], int]:
        """Cached entries above ``revision`` and the revision they reach."""
        start = bisect.bisect_right(self._revs, revision)
        return self._rows[start:], self.loaded

    async def start(self) -> None:
        rev = await self._read_head()
        self.head = self.loaded = self.cache_floor = rev
        self._tasks.append(asyncio.create_task(self._load_loop(), name="store-hub-load"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="store-hub-poll"))
        if self.listen:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="store-hub-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _read_head(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT rev, compact_rev FROM revision_counter")
            row = await cur.fetchone()
        assert row is not None
        self.note_floor(int(row[1]))
        return int(row[0])

    async def _load_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                while self.loaded < self.head:
                    if self._take_pending():
                        continue
                    if self._writing:
                        await self._await_offer()
                        if self._take_pending():
                            continue
                    if self.loaded < self.head:
                        await self._load_more()
                for rev in [r for r in self._pending if r <= self.loaded]:
                    del self._pending[rev]
            except Exception as exc:
                log.warning("watch cache load failed: %s", type(exc).__name__)
                await asyncio.sleep(self.interval)
                self._dirty.set()

    async def _load_more(self) -> None:
        """Read the gap from the log: up to the first entry already offered, not past it
        (those are in hand; under load a gap of one revision below dozens of offered
        ones read them all again, bodies and previous bodies converted to text)."""
        query = (
            "SELECT c.rev, c.compact_rev, e.revision, e.kind, e.namespace, e.type,"
            " e.body::text, e.prev_body::text"
            " FROM revision_counter c LEFT JOIN LATERAL ("
            " SELECT revision, kind, namespace, type, body, prev_body FROM event_log"
            " WHERE revision > %s AND revision <= LEAST(c.rev, %s)"
            " ORDER BY revision LIMIT %s) e ON true"
        )
        offered = min((r for r in self._pending if r > self.loaded), default=None)
        below = None if offered is None else offered - 1
        self.queries += 1
        async with self._pool.connection() as conn:
            params = (self.loaded, below, WATCH_BATCH)
            cur = await conn.execute(query.encode(), params, prepare=True)
            rows = await cur.fetchall()
        head = int(rows[0][0])
        entries = [LogRow(int(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows if r[2]]
        entries.sort(key=lambda e: e.revision)
        if head > self.head:
            self.head = head
        self._append(entries, head if below is None else min(head, below))
        self.note_floor(int(rows[0][1]))
        self._wake()

    def _append(self, entries: list[LogRow], head: int) -> None:
        full = len(entries) >= WATCH_BATCH
        if entries and entries[-1].revision <= self.loaded:
            return  # offered while the query ran: the loop reads on from ``loaded``
        entries = [e for e in entries if e.revision > self.loaded]
        if (entries and entries[0].revision != self.loaded + 1) or (
            not entries and head > self.loaded
        ):
            # Compacted before we read it: restart the cache above the gap; watchers
            # below it go to the database, which answers Gone.
            self._rows.clear()
            self._revs.clear()
            self.cache_floor = self.loaded = head
            return
        self._extend(entries, entries[-1].revision if full else max(head, self.loaded))

    def _extend(self, entries: list[LogRow], loaded: int) -> None:
        end = len(self._rows) - VIEW_WINDOW
        for row in self._rows[max(0, end) : max(0, end + len(entries))]:
            row.forget()  # now VIEW_WINDOW entries behind the newest
        self._rows.extend(entries)
        self._revs.extend(e.revision for e in entries)
        self.loaded = loaded
        excess = len(self._rows) - self.cache_size
        if excess > 0:
            self.cache_floor = self._revs[excess - 1]
            del self._rows[:excess]
            del self._revs[:excess]

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.advance(await self._read_head())
            except Exception as exc:  # keep polling; the database may come back
                log.warning("store poll failed: %s", type(exc).__name__)

    async def _listen_loop(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening = True
                    self.advance(await self._read_head())
                    async for note in conn.notifies():
                        with contextlib.suppress(ValueError):
                            self.advance(int(note.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "store listener lost (%s); polling until it is back", type(exc).__name__
                )
            finally:
                self.listening = False
            await asyncio.sleep(self.interval)


async def _read_log(
    pool: Pool, kind: str, namespace: str | None, after: int, with_prev: bool
) -> tuple[int, int, list[tuple[int, str, Obj, Obj | None]]]:
    """Head, floor and the next log entries, all from one snapshot."""
    ns_cond = " AND l.namespace = %(ns)s" if namespace is not None else ""
    prev = "l.prev_body" if with_prev else "NULL::jsonb"
    query = (
        "SELECT c.rev, c.compact_rev, e.revision, e.type, e.body, e.prev_body"
        " FROM revision_counter c LEFT JOIN LATERAL ("
        f" SELECT l.revision, l.type, l.body, {prev} AS prev_body FROM event_log l"
        " WHERE l.kind = %(kind)s AND l.revision > %(after)s AND l.revision <= c.rev"
        f"{ns_cond} ORDER BY l.revision LIMIT %(batch)s) e ON true ORDER BY e.revision"
    )
    params = {"kind": kind, "after": after, "ns": namespace, "batch": WATCH_BATCH}
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        rows = await cur.fetchall()
    head, floor = int(rows[0][0]), int(rows[0][1])
    entries = [(int(r[2]), r[3], r[4], r[5]) for r in rows if r[2] is not None]
    return head, floor, entries


async def _from_database(
    pool: Pool,
    hub: Hub,
    kind: str,
    namespace: str | None,
    examined: int,
    selectors: Selectors | None,
    with_prev: bool,
) -> tuple[list[WatchEvent], int]:
    """One batch of catch-up below the cache: the events and the revision examined."""
    head, floor, rows = await _read_log(pool, kind, namespace, examined, with_prev)
    if examined < floor:
        raise sem.gone(examined, floor)
    hub.advance(head)
    events = []
    for revision, type_, body, prev in rows:
        examined = revision
        seen = sem.watch_type(type_, prev, body, selectors)
        if seen is not None:
            events.append(WatchEvent(seen, revision, body))
    if len(rows) < WATCH_BATCH:
        examined = max(examined, head)
    return events, examined


def _from_cache(
    hub: Hub, kind: str, namespace: str | None, examined: int, selectors: Selectors | None
) -> tuple[list[WatchEvent], int, bool]:
    """The cached events after ``examined``, the revision examined, whether any was."""
    cached, upto = hub.after(examined)
    events = []
    for row in cached:
        examined = row.revision
        if row.kind != kind or (namespace is not None and row.namespace != namespace):
            continue
        seen: sem.EventType | None = row.type  # the log's CHECK constraint allows no other
        if selectors is not None:
            seen = sem.watch_type(row.type, row.prev, row.body, selectors)
        if seen is not None:
            events.append(WatchEvent(seen, row.revision, body=row))
    return events, max(examined, upto), bool(cached)


async def watch(
    pool: Pool,
    hub: Hub,
    kind: str,
    since: int,
    namespace: str | None,
    selectors: Selectors | None,
    bookmark_interval: float | None,
) -> AsyncIterator[WatchEvent]:
    """Every change of ``kind`` after ``since``, in revision order, with bookmarks."""
    with_prev = selectors is not None and bool(
        selectors.labels or selectors.fields or selectors.not_labels
    )
    loop = asyncio.get_running_loop()
    examined = since
    last_sent = loop.time()
    while True:
        wake = hub.event
        if examined < hub.db_floor:
            raise sem.gone(examined, hub.db_floor)
        if examined < hub.cache_floor:
            events, examined = await _from_database(
                pool, hub, kind, namespace, examined, selectors, with_prev
            )
            any_cached = True
        else:
            events, examined, any_cached = _from_cache(hub, kind, namespace, examined, selectors)
        for event in events:
            yield event
            last_sent = loop.time()
        if any_cached or hub.loaded > examined:
            continue
        timeout = None
        if bookmark_interval is not None:
            timeout = max(0.0, last_sent + bookmark_interval - loop.time())
        try:
            async with asyncio.timeout(timeout):
                await wake.wait()
        except TimeoutError:
            yield WatchEvent("BOOKMARK", examined)
            last_sent = loop.time()


async def compact(pool: Pool, hub: Hub, keep_revisions: int) -> int:
    """Raise the floor first (briefly locking the counter), then delete below it, so
    a reader sees either the old floor with all entries or the new floor."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE revision_counter SET compact_rev ="
            " GREATEST(compact_rev, rev - %s) RETURNING compact_rev",
            (max(0, keep_revisions),),
        )
        row = await cur.fetchone()
        assert row is not None
        floor = int(row[0])
        await conn.execute("DELETE FROM event_log WHERE revision <= %s", (floor,))
    hub.note_floor(floor)
    return floor + 1
