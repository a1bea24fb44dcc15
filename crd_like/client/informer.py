"""A watch-fed cache of every Workspace (client-go's shared informer, in small).

One List (in pages), then one watch from the List's resourceVersion whose ADDED,
MODIFIED and DELETED events keep the cache current; periodic readers then look at
memory instead of listing and JSON-decoding every workspace each time
(docs/adr/0011-ten-thousand-workspaces.md, "the informer").

- A stream that ends (the server's ``timeoutSeconds``, a dropped connection) is resumed
  from the last resourceVersion seen, events and bookmarks alike: nothing is re-listed.
- A 410 (history compacted) or any other error re-lists; repeated errors back off, and
  every one is logged.
- A watch silent for ``stall_timeout`` (neither an event nor a bookmark, while the
  server sends a bookmark at least every 15 s by default, docs/api.md) is restarted.
- Every ``resync_period`` the cache is re-listed anyway: a guard against a lost event
  or a stream that stalls unseen. A re-list replaces the cache, so a key the List no
  longer has vanishes.

An optional index keeps the keys whose object satisfies a pure predicate, updated with
each event, so "which keys match" costs the matches, not the cache. An optional
transform (client-go's ``SetTransform``) trims each object before it is cached, e.g.
``without_managed_fields``: the cache holds every object for as long as it runs.

Readers get the cached dicts themselves (no copy): they must not mutate them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from codehub.crd_like.client.errors import ApiError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]

#: Objects per List request.
PAGE_SIZE = 500
#: The server ends a watch after this; the informer resumes where it stopped.
WATCH_TIMEOUT = 300.0
#: Re-list this often even when the watch looks healthy.
RESYNC_PERIOD = 600.0
#: Twice the server's default bookmark period (``CODEHUB_BOOKMARK_INTERVAL``, 15 s).
STALL_TIMEOUT = 30.0
#: Waits before re-listing after consecutive errors, growing to the last value.
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A stream that ended this soon with nothing in it is reopened only after as long.
QUICK_END = 0.5
#: How long a reader waits for the first List before its pass fails.
SYNC_TIMEOUT = 60.0


class NotSynced(RuntimeError):
    """The cache has not been filled by a first List yet (the API is unreachable?)."""


class WatchStream(Protocol):
    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion the stream delivered (events and bookmarks)."""

    def __aiter__(self) -> AsyncIterator[tuple[str, Obj]]: ...

    async def aclose(self) -> None: ...


class InformerClient(Protocol):
    """What the informer needs of ``ApiClient``."""

    async def list(
        self,
        ns: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> Obj: ...

    def watch(
        self,
        ns: str | None = None,
        resource_version: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: float | None = None,
        label_selector: str | None = None,
        bookmarks: bool = False,
    ) -> WatchStream: ...


def without_managed_fields(obj: Obj) -> Obj:
    """``obj`` without ``metadata.managedFields`` (about 40 % of a workspace's decoded
    size), for readers that never write the object back whole."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """The cache and the loop that feeds it; ``run()`` until cancelled."""

    def __init__(
        self,
        client: InformerClient,
        *,
        index: Callable[[Obj], bool] | None = None,
        transform: Callable[[Obj], Obj] | None = None,
        page_size: int = PAGE_SIZE,
        watch_timeout: float = WATCH_TIMEOUT,
        resync_period: float = RESYNC_PERIOD,
        stall_timeout: float = STALL_TIMEOUT,
        backoff: Sequence[float] = BACKOFF,
        sync_timeout: float = SYNC_TIMEOUT,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.resync_period = resync_period
        self.stall_timeout = stall_timeout
        self.backoff = tuple(backoff) or (1.0,)
        self.sync_timeout = sync_timeout
        self._predicate = index
        self._transform = transform
        self._cache: dict[Key, Obj] = {}
        self._index: set[Key] = set()
        self._synced = asyncio.Event()
        self._progress = False
        self.resource_version: str | None = None
        #: Counters for tests, logs and benchmarks.
        self.relists = 0
        self.list_requests = 0
        self.watches = 0
        self.events = 0
        self.errors = 0

    # -- readers ------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, within: float | None = None) -> None:
        """Until the first List is in the cache; ``NotSynced`` after ``within`` seconds."""
        if self._synced.is_set():
            return
        try:
            await asyncio.wait_for(self._synced.wait(), within)
        except TimeoutError:
            raise NotSynced(f"no workspace list within {within:g} s") from None

    def items(self) -> list[Obj]:
        """A snapshot of the cached objects (the list is new, the dicts are shared)."""
        return list(self._cache.values())

    def get(self, ns: str, name: str) -> Obj | None:
        return self._cache.get((ns, name))

    def indexed(self) -> list[Key]:
        """The keys whose object satisfies the index predicate (none without one)."""
        return list(self._index)

    def __len__(self) -> int:
        return len(self._cache)

    async def snapshot(self) -> list[Obj]:
        """``items()`` once synced (the reader interface ``ListingSource`` shares)."""
        await self.wait_synced(self.sync_timeout)
        return self.items()

    async def matching(self) -> list[Key]:
        """``indexed()`` once synced (the reader interface ``ListingSource`` shares)."""
        await self.wait_synced(self.sync_timeout)
        return self.indexed()

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """List, watch, resume, re-list; never returns (cancel it)."""
        failures = 0
        while True:
            self._progress = False
            try:
                await self._relist()
                await self._watch_until(asyncio.get_running_loop().time())
                failures = 0
                log.debug("informer: periodic resync")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                if self._progress:
                    failures = 0  # the watch worked for a while: this is no error streak
                if isinstance(exc, ApiError) and exc.gone and failures == 0:
                    log.info("informer: watch answered 410 (%s); re-listing", exc)
                    failures = 1  # a second 410 in a row waits like any error
                    continue
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
                log.warning("informer: %s: %s; re-listing in %g s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        listing = await self.client.list(None, limit=self.page_size)
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        self.list_requests += max(1, -(-len(items) // self.page_size))
        if self._transform is not None:
            items = [self._transform(obj) for obj in items]
        cache = {key_of(obj): obj for obj in items}
        predicate = self._predicate
        self._index = {k for k, o in cache.items() if predicate(o)} if predicate else set()
        self._cache = cache
        rv = (listing.get("metadata") or {}).get("resourceVersion")
        self.resource_version = str(rv) if rv else None
        self.relists += 1
        self._synced.set()

    async def _watch_until(self, listed_at: float) -> None:
        """Watch streams, each resumed where the last ended, until the resync is due."""
        loop = asyncio.get_running_loop()
        while (left := listed_at + self.resync_period - loop.time()) > 0:
            watch = self.client.watch(
                None,
                resource_version=self.resource_version,
                timeout_seconds=max(1.0, min(self.watch_timeout, left)),
                bookmarks=True,
            )
            self.watches += 1
            opened, delivered = loop.time(), self.events
            silence = asyncio.timeout(self.stall_timeout)
            try:
                async with silence:
                    async for etype, obj in watch:
                        silence.reschedule(loop.time() + self.stall_timeout)
                        self._apply(etype, obj)
                        if watch.resource_version:
                            self.resource_version = watch.resource_version
            except TimeoutError:
                if not silence.expired():
                    raise
                log.warning(
                    "informer: no event or bookmark for %g s; restarting the watch",
                    self.stall_timeout,
                )
            finally:
                await watch.aclose()
            if watch.resource_version:
                self.resource_version = watch.resource_version
            if self.events == delivered and loop.time() - opened < QUICK_END:
                await asyncio.sleep(QUICK_END)  # a server ending streams at once: no busy loop

    def _apply(self, etype: str, obj: Obj) -> None:
        self._progress = True
        if etype == "BOOKMARK":
            return
        self.events += 1
        key = key_of(obj)
        if etype == "DELETED":
            self._cache.pop(key, None)
            self._index.discard(key)
            return
        if etype not in ("ADDED", "MODIFIED"):
            log.warning("informer: unexpected watch event %r ignored", etype)
            return
        if self._transform is not None:
            obj = self._transform(obj)
        self._cache[key] = obj
        if self._predicate is not None:
            if self._predicate(obj):
                self._index.add(key)
            else:
                self._index.discard(key)


class ListingSource:
    """The informer's reader interface over a fresh List per call: for callers built
    without an informer (unit tests, one-off passes)."""

    def __init__(
        self,
        client: Any,
        *,
        index: Callable[[Obj], bool] | None = None,
        page_size: int | None = None,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self._predicate = index
        self.list_requests = 0

    async def snapshot(self) -> list[Obj]:
        if self.page_size:
            listing = await self.client.list(None, limit=self.page_size)
        else:
            listing = await self.client.list(None)
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        pages = -(-len(items) // self.page_size) if self.page_size else 1
        self.list_requests += max(1, pages)
        return items

    async def matching(self) -> list[Key]:
        predicate = self._predicate
        if predicate is None:
            return []
        return [key_of(o) for o in await self.snapshot() if predicate(o)]


class WorkspaceSource(Protocol):
    """What the periodic passes read: ``Informer`` or ``ListingSource``."""

    list_requests: int

    async def snapshot(self) -> list[Obj]: ...

    async def matching(self) -> list[Key]: ...
