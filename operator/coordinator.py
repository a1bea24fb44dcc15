"""The coordinator process: leader election, then the background components
(docs/coordinator.md).

Every coordinator serves ``/healthz`` and ``/metrics`` and campaigns for the PostgreSQL
advisory lock (``leader.LeaderElector``). The winner starts a *leader term*: the
informer (a watch-fed cache of every workspace), kopf with the reconciler handlers, the
reconcile gate's workers, the safety net, the HealthMonitor, the TTL Manager, the Archive
GC and the orphan sweeper (``leader_components``). This module is the composition root of
a term: it builds the context, the one ``ReconcileGate`` and the one ``Informer`` and
hands each component what it needs;
the components never call each other (docs/adr/0005-one-reconcile-gate.md). Losing the
lock connection stops the term at once; the node goes back to standby and campaigns again.

A term runs in its own thread and event loop. kopf's ``operator()`` treats every task
created after it started as its own, waits for them and cancels them when it stops, and
it takes over SIGINT/SIGTERM when it runs on the main thread. Confining kopf to a
throw-away loop keeps the election, the HTTP endpoints and signal handling out of its
reach, and makes "stop everything and wait until it stopped" a thread join. Everything
one term uses (API client session, adapters) is created inside its loop and closed
with it, so no state leaks from one term to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from codehub.operator.components import (
    KOPF_GRACE,
    ComponentRun,
    ComponentState,
    ContextFactory,
    LeaderComponent,
    build_context,
    build_informer,
    close_context,
    leader_components,
)
from codehub.operator.gate import ReconcileGate
from codehub.operator.leader import LeaderElector
from codehub.operator.settings import Settings

if TYPE_CHECKING:
    from codehub.crd_like.client.informer import Informer

__all__ = [
    "KOPF_GRACE",
    "ComponentRun",
    "ComponentState",
    "Coordinator",
    "LeaderComponent",
    "LeaderTerm",
    "build_context",
    "close_context",
    "leader_components",
    "run_coordinator",
    "serve",
]

log = logging.getLogger(__name__)

#: How long a stopping term may take before the coordinator reports it and moves on.
TERM_STOP_TIMEOUT = 60.0
#: Restart delays of a component that crashed, growing to the last value.
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)

# --- one leadership term ---------------------------------------------------------------


class LeaderTerm:
    """The components of one leadership term, in a thread of their own."""

    def __init__(
        self,
        coordinator: Coordinator,
        components: Sequence[LeaderComponent],
    ) -> None:
        self.coordinator = coordinator
        self.settings = coordinator.settings
        self.components = list(components)
        self.ctx: Any = None
        self._gate: ReconcileGate | None = None
        self._informer: Informer | None = None
        self.stopping = False
        self.graceful = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_callbacks: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started = threading.Event()
        self._ended: asyncio.Future[None] | None = None
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="codehub-leader-term")
        self.error: BaseException | None = None

    def start(self) -> None:
        """Called from the coordinator's loop; ``ended()`` then resolves there."""
        self._owner_loop = asyncio.get_running_loop()
        self._ended = self._owner_loop.create_future()
        self._thread.start()
        self._started.wait()

    async def ended(self) -> None:
        assert self._ended is not None
        await asyncio.shield(self._ended)

    def stop(self, graceful: bool = False) -> None:
        """Thread-safe: cancel every component now (or after its grace, if ``graceful``)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just finished
                loop.call_soon_threadsafe(self._request_stop, graceful)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def finished(self) -> bool:
        return self._started.is_set() and not self._thread.is_alive()

    @property
    def gate(self) -> ReconcileGate:
        """The term's one reconcile gate, built from its context on first use."""
        if self._gate is None:
            self._gate = ReconcileGate(self.ctx)
        return self._gate

    @property
    def informer(self) -> Informer:
        """The term's one workspace cache, built from its context on first use."""
        if self._informer is None:
            self._informer = build_informer(self.ctx)
        return self._informer

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._stop_callbacks.append(callback)

    def _is_stopping(self) -> bool:
        return self.stopping

    def mark_running(self, name: str) -> None:
        self.coordinator.state(name).set("running")

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported, never lost silently
            self.error = exc
            log.exception("leader term failed")
        finally:
            self._started.set()
            if self._owner_loop is not None and self._ended is not None:
                with contextlib.suppress(RuntimeError):
                    self._owner_loop.call_soon_threadsafe(_resolve, self._ended)

    def _request_stop(self, graceful: bool = False) -> None:
        if not graceful:
            for task in self._tasks:
                task.cancel()
        if self.stopping:
            return
        self.stopping = True
        self.graceful = graceful
        for callback in self._stop_callbacks:
            with contextlib.suppress(Exception):
                callback()
        for component, task in zip(self.components, self._tasks, strict=False):
            if not graceful or component.grace <= 0:
                task.cancel()
        if self._stop is not None:
            self._stop.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        coordinator = self.coordinator
        try:
            self.ctx = await coordinator.context_factory(
                self.settings, coordinator.scope_labels, coordinator.metrics
            )
        except Exception as exc:
            log.exception("leader term: cannot build the operator context")
            self.error = exc
            return
        try:
            for component in self.components:
                coordinator.state(component.name).set("starting")
                self._tasks.append(
                    asyncio.create_task(self._supervise(component), name=component.name)
                )
                await asyncio.sleep(0)
            await self._stop.wait()
        finally:
            self.stopping = True
            grace = max((c.grace for c in self.components), default=0.0)
            if self.graceful and grace > 0 and self._tasks:
                await asyncio.wait(self._tasks, timeout=grace)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for component in self.components:
                coordinator.state(component.name).set("stopped")
            await close_context(self.ctx)

    async def _supervise(self, component: LeaderComponent) -> None:
        """Keep one component running for the whole term; a crash is logged and retried."""
        state = self.coordinator.state(component.name)
        attempt = 0
        while not self._is_stopping():
            try:
                await component.run(self)
                if self._is_stopping():
                    return
                raise RuntimeError(f"{component.name} returned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._is_stopping():
                    return
                delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]
                attempt += 1
                state.restarts += 1
                state.set("restarting", f"{type(exc).__name__}: {exc}"[:300])
                log.exception("component %s failed; restarting in %.0fs", component.name, delay)
                await asyncio.sleep(delay)
                state.set("starting")


# --- the coordinator ---------------------------------------------------------------------


class Coordinator:
    """Campaign, lead, step down; serve /healthz and /metrics the whole time."""

    def __init__(
        self,
        settings: Settings,
        *,
        scope_labels: Mapping[str, str] | None = None,
        components: Callable[[], Sequence[LeaderComponent]] = leader_components,
        context_factory: ContextFactory = build_context,
        elector: LeaderElector | None = None,
        registry: CollectorRegistry | None = None,
        metrics: Any = None,
    ) -> None:
        self.settings = settings
        self.scope_labels = dict(scope_labels or {})
        self._components = components
        self.context_factory = context_factory
        self.elector = elector or LeaderElector(
            settings.database_url,
            node_id=settings.node_id,
            retry_interval=settings.coordinator_retry_interval,
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = metrics if metrics is not None else _make_metrics(self.registry)
        self._leader_gauge = _leader_gauge(self.metrics, self.registry)
        self._leader_gauge.set(0)
        self._states: dict[str, ComponentState] = {}
        self._term: LeaderTerm | None = None
        self.terms = 0
        self.elector.on_lost(self._on_lost)

    @property
    def node_id(self) -> str:
        return self.elector.node_id

    def state(self, name: str) -> ComponentState:
        return self._states.setdefault(name, ComponentState())

    def _on_lost(self) -> None:
        """Runs inside the elector the instant the lock connection is found dead."""
        self._leader_gauge.set(0)
        term = self._term
        if term is not None:
            term.stop()

    def health(self) -> dict[str, Any]:
        return {
            "leader": self.elector.is_leader,
            "node_id": self.node_id,
            "terms": self.terms,
            "components": {
                name: {"state": s.state, "restarts": s.restarts, "last_error": s.last_error}
                for name, s in sorted(self._states.items())
            },
        }

    # -- HTTP --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- election loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: campaign, run a term while the lock holds, then start over."""
        for component in self._components():
            self.state(component.name)
        while not stop.is_set():
            won = await _first(self.elector.campaign(), stop.wait())
            if not won:
                break
            await self._lead(stop)
            if stop.is_set():
                break
            if not self.elector.lost.is_set():
                # The term ended on its own (context failure): step down, let others try.
                await self.elector.release()
            # A node whose term just ended waits one standby period before campaigning
            # again, so a standby that has been polling takes over (docs/coordinator.md);
            # campaigning at once let the node that lost its session win the lock back.
            await _first(asyncio.sleep(self.elector.retry_interval), stop.wait())
        await self.elector.release()

    async def _lead(self, stop: asyncio.Event) -> None:
        self.terms += 1
        term = LeaderTerm(self, self._components())
        self._term = term
        self._leader_gauge.set(1)
        log.info("coordinator %s: leader term %d starts", self.node_id, self.terms)
        term.start()
        holding = asyncio.create_task(self.elector.hold(), name="leader-hold")
        ended = asyncio.create_task(term.ended(), name="term-ended")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({holding, ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Still holding the lock (SIGTERM): let kopf shut down cleanly. Lost: at once.
            term.stop(graceful=stopping.done() and self.elector.is_leader)
            if not await asyncio.to_thread(term.join, TERM_STOP_TIMEOUT):
                log.error("coordinator: leader term did not stop within %ss", TERM_STOP_TIMEOUT)
            self._term = None
            self._leader_gauge.set(0)
            for task in (holding, ended, stopping):
                task.cancel()
            await asyncio.gather(holding, ended, stopping, return_exceptions=True)
            log.info("coordinator %s: leader term %d ended", self.node_id, self.terms)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _first(main: Awaitable[Any], stopper: Awaitable[Any]) -> bool:
    """Run ``main`` until done (True) unless ``stopper`` finishes first (False)."""
    main_task = asyncio.ensure_future(main)
    stop_task = asyncio.ensure_future(stopper)
    done, _ = await asyncio.wait({main_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in (main_task, stop_task):
        if task not in done:
            task.cancel()
    await asyncio.gather(main_task, stop_task, return_exceptions=True)
    if main_task in done:
        main_task.result()
        return True
    return False


def _make_metrics(registry: CollectorRegistry) -> Any:
    from codehub.operator.metrics import Metrics

    return Metrics(registry)


def _leader_gauge(metrics: Any, registry: CollectorRegistry) -> Any:
    gauge = getattr(metrics, "leader", None)
    if gauge is None:
        gauge = Gauge("codehub_leader", "1 while this coordinator is leader", registry=registry)
    return gauge


# --- entry point ---------------------------------------------------------------------


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    scope_labels: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """The coordinator on the running loop until ``stop`` (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    coordinator = Coordinator(settings, scope_labels=scope_labels)
    runner = web.AppRunner(coordinator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("coordinator %s listening on http://%s:%d", coordinator.node_id, host, port)
    try:
        await coordinator.run(stop)
    finally:
        await runner.cleanup()
        for sig in installed:
            loop.remove_signal_handler(sig)
        log.info("coordinator %s stopped", coordinator.node_id)


def run_coordinator(
    settings: Settings,
    host: str,
    port: int,
    *,
    scope_labels: Mapping[str, str] | None = None,
) -> None:
    """Blocking entry point of ``codehub coordinator``; returns after SIGTERM/SIGINT."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    # kopf logs every successful timer run per workspace at INFO: noise at scale.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if not settings.database_url:
        raise SystemExit("CODEHUB_DATABASE_URL is required for leader election")
    asyncio.run(serve(settings, host, port, scope_labels=scope_labels))
