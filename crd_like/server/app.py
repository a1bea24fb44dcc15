"""The API server application: middlewares, routes, lifecycle and ``run_server``.

Stateless by design (docs/architecture.md): everything lives in the store, so several servers
can share one PostgreSQL. Errors of every kind leave as Kubernetes ``Status`` bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from codehub.crd_like import proxy
from codehub.crd_like.config import ApiConfig
from codehub.crd_like.store.interface import Store, StoreError
from codehub.vocabulary.timestamps import parse_rfc3339, utc_now

from . import discovery, resources, sse
from .admission import LimitExceeded
from .auth import TokenAuthenticator
from .context import (
    CTX_KEY,
    IDENTITY_KEY,
    RESOURCE_KEY,
    VERB_KEY,
    ServerContext,
    ctx_of,
    identity_of,
    json_response,
    mark,
)
from .negotiation import StatusServer, negotiation_middleware
from .status import ApiError, status_body
from .tls import ensure_certificate, server_ssl_context
from .watch import refresh_backlog

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Metrics and the one place where any failure becomes a Status body."""
    ctx = ctx_of(request)
    started = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except ApiError as exc:
        code = exc.code
        if isinstance(exc, LimitExceeded):
            ctx.metrics.admission_refusals.labels(exc.limit_type).inc()
        return json_response(exc.body(), exc.code)
    except web.HTTPException as exc:
        code = exc.status
        if exc.status == 413:
            message = (
                f"the request body is too large: the limit is {ctx.config.max_body_bytes} bytes"
            )
        elif exc.status == 404:
            message = "the server could not find the requested resource"
        elif exc.status == 405:
            message = f"the server does not allow method {request.method} on this resource"
        else:
            message = exc.reason
        reason = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}.get(
            exc.status, exc.reason.replace(" ", "")
        )
        if exc.status < 400:
            raise
        response = json_response(status_body(exc.status, message, reason), exc.status)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except asyncio.CancelledError:
        code = 499
        raise
    except psycopg.OperationalError as exc:  # the pool's timeout included
        # The database is down or unreachable: a retryable 503, not an internal error
        # (docs/security.md); the write was not committed.
        code = 503
        log.warning("database unavailable in %s %s: %s", request.method, request.path, exc)
        body = status_body(503, "the database is unavailable; retry later", "ServiceUnavailable")
        response = json_response(body, 503)
        response.headers["Retry-After"] = "1"
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(status_body(500, "an internal error occurred", "InternalError"), 500)
    finally:
        verb = request.get(VERB_KEY) or request.method.lower()
        resource = request.get(RESOURCE_KEY) or "other"
        labelled(ctx.metrics.requests, verb, resource, str(code)).inc()
        if verb not in ("watch", "sse"):
            labelled(ctx.metrics.latency, verb, resource).observe(time.perf_counter() - started)


_CHILDREN: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def labelled(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the lookup costs about 5 us per request
    (a lock and validation) and every request makes two. The label values are a small
    fixed set (verbs, resources, status codes)."""
    children = _CHILDREN.get(metric)
    if children is None:
        children = _CHILDREN[metric] = {}
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    public = (
        request.path in PUBLIC_PATHS
        or proxy.handles(request.path)
        or (request.path == "/metrics" and ctx_of(request).config.metrics_public)
    )
    if not public:
        ident = ctx_of(request).auth.authenticate(request.headers.get("Authorization"))
        if ident is None:
            raise ApiError(401, "Unauthorized")
        request[IDENTITY_KEY] = ident
    return await handler(request)


async def healthz(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "healthz")
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "readyz")
    try:
        await asyncio.wait_for(ctx_of(request).store.current_revision(), 5.0)
    except Exception as exc:
        log.warning("readiness check failed: %r", exc)
        return web.Response(status=503, text="database unreachable")
    return web.Response(text="ok")


async def metrics(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "metrics")
    ctx = ctx_of(request)
    if not ctx.config.metrics_public and not identity_of(request).privileged:
        raise ApiError(
            403,
            f'metrics are forbidden: User "{identity_of(request).user}" cannot get path "/metrics"',
        )
    await refresh_backlog(ctx.metrics, ctx.store)
    body = generate_latest(ctx_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def expire_events(store: Store, ttl: float, now: datetime.datetime | None = None) -> int:
    """Delete core/v1 events last seen more than ``ttl`` seconds ago; returns how many.

    Events are hints for humans (kubectl describe); without expiry they would grow
    without bound. Several servers may race here: a NotFound just means another won.
    """
    now = now or utc_now()
    removed = 0
    for event in (await store.list("events")).items:
        meta = event.get("metadata") or {}
        stamp = (
            event.get("lastTimestamp") or event.get("eventTime") or meta.get("creationTimestamp")
        )
        when = parse_rfc3339(stamp)
        if when is not None and (now - when).total_seconds() < ttl:
            continue
        with contextlib.suppress(StoreError):
            await store.delete("events", meta.get("namespace"), meta.get("name", ""))
            removed += 1
    return removed


async def _maintenance_loop(ctx: ServerContext) -> None:
    while True:
        await asyncio.sleep(ctx.config.compaction_interval)
        try:
            await expire_events(ctx.store, ctx.config.event_ttl_seconds)
            await ctx.store.compact(ctx.config.compaction_keep_revisions)
        except Exception as exc:
            log.warning("compaction failed: %r", exc)


def create_app(
    config: ApiConfig,
    store: Store,
    *,
    authenticator: TokenAuthenticator | None = None,
    compaction: bool = False,
    close_store: bool = False,
) -> web.Application:
    """The application; ``store`` is used as given (tests pass a MemoryStore)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware, negotiation_middleware],
        client_max_size=config.max_body_bytes,
    )
    ctx = ServerContext(
        config=config, store=store, auth=authenticator or TokenAuthenticator(config.token_file)
    )
    app[CTX_KEY] = ctx
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    sse.add_routes(app)  # before anything generic under /api/v1/namespaces/{ns}/...
    discovery.add_routes(app)
    resources.add_routes(app)
    proxy.add_routes(app)  # /w/...: its own auth (bearer or session cookie)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_maintenance_loop(ctx)) if compaction else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if close_store:
            await store.close()

    async def end_streams(app: web.Application) -> None:
        for task in list(ctx.streams):
            task.cancel()

    app.on_shutdown.append(end_streams)
    app.cleanup_ctx.append(lifecycle)
    return app


def use_status_errors(runner: web.BaseRunner) -> None:
    """Make aiohttp's own protocol errors Status bodies too (see negotiation.py)."""
    server = runner.server
    if server is not None and type(server) is web.Server:
        server.__class__ = StatusServer


async def open_store(config: ApiConfig) -> Store:
    """The PostgreSQL store, migrated (idempotent) before the server accepts requests."""
    from codehub.crd_like.store import postgres

    return await postgres.PostgresStore.open(
        config.database_url,
        watch_poll_interval=config.watch_poll_interval,
        max_size=20,
        acquire_timeout=config.database_acquire_timeout,
    )


#: Listen backlog of the API server (docs/security.md).
BACKLOG = 2048


async def serve(
    config: ApiConfig,
    host: str,
    port: int,
    insecure_http: bool,
    stop: asyncio.Event | None = None,
    *,
    own_process: bool = False,
) -> None:
    """Serve until ``stop`` is set or the task is cancelled.

    A stop requested while still starting (a SIGTERM during start-up) is honoured as
    soon as the server is up, never lost. ``own_process``: the process is the server's
    alone (``codehub server``), so its garbage collector is tuned (``tune_gc``) once
    the app is set up; tests serving in their own process leave it alone.
    """
    ssl_context = None
    if not insecure_http:
        if config.tls_cert and config.tls_key:
            cert, key = config.tls_cert, config.tls_key
        else:
            cert_path, key_path = ensure_certificate(config.state_dir)
            cert, key = str(cert_path), str(key_path)
        ssl_context = server_ssl_context(cert, key)
    store = await open_store(config)
    app = create_app(config, store, compaction=True, close_store=True)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=1.0,
        # aiohttp closes a connection still waiting for (the rest of) its request headers
        # when this runs out, from the moment it connects: slowloris and idle sockets are
        # bounded by it (docs/security.md). Its default is an hour.
        keepalive_timeout=config.header_timeout,
    )
    await runner.setup()
    use_status_errors(runner)
    # A burst of connections (a thousand idle sockets, say) must not overflow the accept
    # queue and refuse everyone else; aiohttp's default backlog is 128.
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=BACKLOG)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    if own_process:
        tune_gc()
    scheme = "http" if insecure_http else "https"
    log.info("codehub API server listening on %s://%s:%d", scheme, host, port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        log.info("codehub API server stopping")
        await runner.cleanup()
        log.info("codehub API server stopped")


#: Allocations (net of frees) of container objects between young collections;
#: Python's default is 700.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Collect less often, and never walk what startup made.

    Every request decodes and encodes JSON into thousands of short-lived containers,
    so Python's default threshold ran a young collection every few requests and an
    older one every few dozen, each walking the long-lived objects again (3.7 % of
    the server's CPU; docs/adr/0007-api-write-path-performance.md). What is garbage
    here is freed by reference counting; cycles (exceptions with their tracebacks,
    futures) still go, only in larger batches. ``gc.freeze`` moves the modules,
    classes and configuration loaded so far out of every collection's walk."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run_server(config: ApiConfig, host: str, port: int, insecure_http: bool) -> None:
    """Blocking entry point of ``codehub server`` (stops on SIGINT/SIGTERM)."""
    import signal

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, host, port, insecure_http, stop, own_process=True)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop for the server process, asyncio's if uvloop is missing.

    The server's CPU per request is mostly the event loop, the transports and TLS,
    which asyncio runs in Python and uvloop in C: ~10 % less CPU per PATCH over HTTPS
    (docs/adr/0007-api-write-path-performance.md). Nothing in the server depends on
    which loop runs it; the tests serve the app on asyncio's, the e2e tests run this.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency; absent only in odd installs
        return None
    return uvloop.new_event_loop
