"""The Archive GC: a leader component that deletes orphaned archives (docs/archive-gc.md).

Every ``GC_INTERVAL`` a pass

1. builds the protected set by listing every workspace through the API, page by page;
2. streams the bucket's ``archives/`` listing page by page, and for each page loads the
   stored first-seen times of the key range it covers, applies ``archive_gc_plan.decide``
   and carries the decision out: batched deletes, then one forget and one mark;
3. drops the stored times past the last listed key (those objects are gone).

Memory is one page plus the protected set; queries and object-store calls grow with the
number of pages, not objects. Safety comes first: if the workspace list, the bucket
listing or the database fails, the pass stops there and is counted as skipped. Pages
already done stay done (each was decided against the complete protected set); nothing
is deleted from an incomplete view. A failed delete is logged and retried next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from codehub.adapters.interfaces import ObjectInfo, ObjectStore
from codehub.crd_like.client.api import workspaces_path
from codehub.operator.archive_gc_plan import ARCHIVES_PREFIX, PageDecision, Protection, decide
from codehub.operator.archive_gc_store import FirstSeen, FirstSeenStore
from codehub.operator.clock import Clock, SystemClock, run_every

if TYPE_CHECKING:
    from codehub.operator.coordinator import LeaderTerm

log = logging.getLogger(__name__)

#: Workspaces per API list page while building the protected set.
API_PAGE = 500
#: Objects per listing page (S3 answers at most 1000 per request).
OBJECT_PAGE = 1000


class GcMetrics:
    """The ``codehub_gc_*`` collectors, created once per registry (terms come and go)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.objects_seen = Gauge(
            "codehub_gc_objects_seen", "Objects under archives/ in the last pass.", registry=r
        )
        self.orphans = Gauge(
            "codehub_gc_orphans", "Orphaned objects found by the last pass.", registry=r
        )
        self.deleted = Counter(
            "codehub_gc_deleted_total", "Objects deleted by the Archive GC.", registry=r
        )
        self.reclaimed = Counter(
            "codehub_gc_reclaimed_bytes_total", "Bytes freed by the Archive GC.", registry=r
        )
        self.pass_seconds = Histogram(
            "codehub_gc_pass_seconds",
            "Duration of one complete Archive GC pass.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=r,
        )
        self.skipped = Counter(
            "codehub_gc_skipped_passes_total",
            "Passes skipped because a listing or the database failed.",
            ["reason"],
            registry=r,
        )
        self.last_success = Gauge(
            "codehub_gc_last_success_timestamp_seconds",
            "Unix time of the last complete Archive GC pass.",
            registry=r,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, GcMetrics] = weakref.WeakKeyDictionary()


def gc_metrics(registry: CollectorRegistry) -> GcMetrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _METRICS[registry] = GcMetrics(registry)
    return found


@dataclass
class GcPassReport:
    """What one pass saw and did (for tests, the benchmark and the logs)."""

    workspaces: int = 0
    objects: int = 0
    protected: int = 0
    orphans: int = 0
    marked: int = 0
    forgotten: int = 0
    waiting: int = 0
    deleted: int = 0
    reclaimed_bytes: int = 0
    delete_failures: int = 0
    pages: int = 0
    queries: int = 0
    skipped: str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class PreviewRow:
    """One orphan as ``codehub gc preview`` shows it."""

    key: str
    size: int
    first_seen: datetime | None
    #: From when the GC deletes it if it stays an orphan (``first_seen`` + delay; for an
    #: object not seen yet, the next pass's time + delay).
    due: datetime


class SkipPass(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def load_protection(api: Any, page: int = API_PAGE) -> Protection:
    """Every workspace's archive key and current op folder, streamed page by page."""
    protection = Protection()
    request = getattr(api, "request", None)
    if request is None:  # an API fake without raw requests: one List
        for item in (await api.list(None)).get("items") or []:
            protection.add_workspace(item)
        return protection
    params: dict[str, Any] = {"limit": page}
    while True:
        body = await request("GET", workspaces_path(None), params=params)
        if not isinstance(body, Mapping) or not isinstance(body.get("items"), list):
            raise ValueError("workspace list: unexpected answer")
        for item in body["items"]:
            protection.add_workspace(item)
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return protection
        params["continue"] = token


class ArchiveGC:
    """Passes over the bucket; see the module docstring."""

    def __init__(
        self,
        *,
        api: Any,
        objects: ObjectStore,
        first_seen: Callable[[], FirstSeen] | str,
        interval: float,
        orphan_delay: float,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        page_size: int = OBJECT_PAGE,
    ) -> None:
        self.api = api
        self.objects = objects
        #: A database URL, or a factory of first-seen stores (unit tests use memory).
        self.first_seen: Callable[[], FirstSeen] = (
            (lambda: FirstSeenStore(first_seen)) if isinstance(first_seen, str) else first_seen
        )
        self.interval = interval
        self.delay = timedelta(seconds=orphan_delay)
        self.clock = clock or SystemClock()
        self.metrics = gc_metrics(registry if registry is not None else CollectorRegistry())
        self.page_size = page_size

    async def run(self) -> None:
        """Pass, sleep ``interval``, repeat until cancelled."""
        await run_every(self.clock, self.interval, self.pass_once, log, "archive GC")

    async def pass_once(self) -> GcPassReport:
        report = GcPassReport()
        start = time.monotonic()
        store = self.first_seen()
        try:
            protection = await self._protection()
            report.workspaces = protection.workspaces
            async with _database(store):
                await self._sweep(protection, store, report)
        except SkipPass as skip:
            report.skipped = skip.reason
            self.metrics.skipped.labels(reason=skip.reason).inc()
            log.warning("archive GC pass skipped: %s failed; nothing more deleted", skip.reason)
        finally:
            report.queries = store.queries
            report.duration = time.monotonic() - start
        if report.skipped is None:
            m = self.metrics
            m.objects_seen.set(report.objects)
            m.orphans.set(report.orphans)
            m.pass_seconds.observe(report.duration)
            m.last_success.set(time.time())
            log.info(
                "archive GC: %d objects, %d orphans, %d deleted (%d bytes), %d waiting",
                report.objects,
                report.orphans,
                report.deleted,
                report.reclaimed_bytes,
                report.waiting,
            )
        return report

    async def _protection(self) -> Protection:
        try:
            return await load_protection(self.api)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("archive GC: cannot list workspaces: %s", exc)
            raise SkipPass("listing") from exc

    async def _sweep(self, protection: Protection, store: FirstSeen, report: GcPassReport) -> None:
        now = self.clock.now()
        last = ""
        async for page in self._pages():
            report.pages += 1
            up_to = page[-1].key
            decision = decide(protection, page, await store.in_range(last, up_to), now, self.delay)
            await self._apply(decision, store, now, report)
            report.objects += len(page) - decision.ignored
            report.protected += decision.protected
            report.orphans += decision.orphans
            last = up_to
        await store.forget_after(last)

    async def _apply(
        self, decision: PageDecision, store: FirstSeen, now: datetime, report: GcPassReport
    ) -> None:
        gone: list[ObjectInfo] = []
        if decision.to_delete:
            try:
                failed = set(await self.objects.delete_many(o.key for o in decision.to_delete))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("archive GC: delete failed, retried next pass: %s", exc)
                failed = {o.key for o in decision.to_delete}
            gone = [o for o in decision.to_delete if o.key not in failed]
            report.delete_failures += len(failed)
        await store.forget([*decision.to_forget, *(o.key for o in gone)])
        await store.mark(decision.to_mark, now)
        reclaimed = sum(o.size for o in gone)
        report.deleted += len(gone)
        report.reclaimed_bytes += reclaimed
        report.marked += len(decision.to_mark)
        report.forgotten += len(decision.to_forget)
        report.waiting += len(decision.waiting)
        self.metrics.deleted.inc(len(gone))
        self.metrics.reclaimed.inc(reclaimed)

    async def _pages(self) -> AsyncIterator[list[ObjectInfo]]:
        """The listing, with its failures turned into a skipped pass."""
        pages = self.objects.iter_objects(ARCHIVES_PREFIX, self.page_size)
        while True:
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("archive GC: cannot list the bucket: %s", exc)
                raise SkipPass("listing") from exc
            if page:
                yield page

    async def preview(self) -> AsyncIterator[PreviewRow]:
        """The orphans a pass would find now and when each would go; deletes nothing
        and stores no first-seen time."""
        protection = await load_protection(self.api)
        now = self.clock.now()
        async with self.first_seen() as store:
            last = ""
            async for page in self.objects.iter_objects(ARCHIVES_PREFIX, self.page_size):
                if not page:
                    continue
                times = await store.in_range(last, page[-1].key)
                decision = decide(protection, page, times, now, self.delay)
                for obj in decision.to_delete:
                    yield PreviewRow(obj.key, obj.size, times[obj.key], now)
                for w in decision.waiting:
                    yield PreviewRow(w.obj.key, w.obj.size, w.first_seen, w.due)
                sizes = {o.key: o.size for o in page}
                for key in decision.to_mark:
                    yield PreviewRow(key, sizes[key], None, now + self.delay)
                last = page[-1].key


async def run_archive_gc(term: LeaderTerm) -> None:
    """The leader component: the term's archive bucket (built with the other adapters at
    the composition root) and the coordinator's database for first-seen times."""
    ctx = term.ctx
    settings = ctx.settings
    if ctx.objects is None:
        raise RuntimeError("this term's context has no archive bucket for the Archive GC")
    gc = ArchiveGC(
        api=ctx.api,
        objects=ctx.objects,
        first_seen=settings.database_url,
        interval=settings.gc_interval,
        orphan_delay=settings.gc_orphan_delay,
        registry=ctx.metrics.registry,
        clock=ctx.clock,
    )
    term.mark_running("archive-gc")
    await gc.run()


class _database:
    """``async with`` over the first-seen store, turning database errors into a skip."""

    def __init__(self, store: FirstSeen) -> None:
        self.store = store

    async def __aenter__(self) -> FirstSeen:
        try:
            return await self.store.__aenter__()
        except (psycopg.Error, OSError) as exc:
            log.warning("archive GC: database unavailable: %s", exc)
            raise SkipPass("database") from exc

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.store.__aexit__(exc_type, exc, tb)
        if isinstance(exc, psycopg.Error):
            log.warning("archive GC: database failed mid-pass: %s", exc)
            raise SkipPass("database") from exc
