"""The workspace proxy at ``/w/{namespace}/{name}/`` (docs/proxy.md).

Part of the server process, not of the Kubernetes-style API: it authenticates with a
bearer token or its own session cookie, finds the upstream in ``status.endpoint`` and
records activity in PostgreSQL. ``add_routes`` mounts it on a server app.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from codehub.crd_like.server.context import CTX_KEY
from codehub.crd_like.store.activity import (
    ActivityStore,
    MemoryActivityStore,
    PostgresActivityStore,
)
from codehub.crd_like.store.memory import MemoryStore

from . import edge, events, signin
from .activity import ActivityTracker, WorkspaceRef
from .endpoints import EndpointCache
from .forward import client_session
from .handler import proxy
from .metrics import ProxyMetrics
from .routing import LINK_PATH, PREFIX, SIGNIN_PATH
from .session import load_secret
from .state import PROXY_KEY, Caller, NotRunning, ProxyState, state_of
from .wake import wake_not_running

__all__ = [
    "PROXY_KEY",
    "ActivityTracker",
    "Caller",
    "NotRunning",
    "ProxyState",
    "WorkspaceRef",
    "add_routes",
    "handles",
    "state_of",
]


def handles(path: str) -> bool:
    """Paths the proxy authenticates itself (bearer or cookie); the API middleware skips them."""
    return path == PREFIX.rstrip("/") or path.startswith(PREFIX)


def add_routes(
    app: web.Application,
    *,
    not_running: NotRunning | None = None,
    activity: ActivityStore | None = None,
) -> ProxyState:
    """Mount the proxy and its pages; ``not_running`` answers sleeping workspaces.

    The default wakes a workspace on a page load (``wake.py``).

    Without ``activity`` the store is PostgreSQL at ``config.database_url``, or memory
    for a server on a MemoryStore (unit tests), which also gets a throwaway secret.
    """
    ctx = app[CTX_KEY]
    config = ctx.config
    in_memory = not config.database_url or isinstance(ctx.store, MemoryStore)
    store = activity or (MemoryActivityStore() if in_memory else _LazyPostgres(config.database_url))
    secret = (
        secrets.token_bytes(32)
        if in_memory and not config.session_secret
        else load_secret(config.session_secret, config.state_dir)
    )
    metrics = ProxyMetrics(ctx.metrics.registry)
    state = ProxyState(
        ctx=ctx,
        secret=secret,
        activity=store,
        tracker=ActivityTracker(ctx.store, store, config, metrics),
        metrics=metrics,
        not_running=not_running or wake_not_running,
    )
    app[PROXY_KEY] = state
    app.router.add_get(SIGNIN_PATH, signin.signin_page)
    app.router.add_post(SIGNIN_PATH, signin.signin_submit)
    app.router.add_get(SIGNIN_PATH + "/done", signin.signed_in_page)
    app.router.add_get(LINK_PATH + "{token}", signin.use_link)
    app.router.add_post(signin.LINKS_PATH, signin.mint_link)
    app.router.add_get(events.ROUTE, events.workspace_events)
    edge.add_route(app, config.edge_secret)
    app.router.add_route("*", "/w", proxy)
    app.router.add_route("*", PREFIX + "{tail:.*}", proxy)
    app.cleanup_ctx.append(_lifecycle(state, owns_store=activity is None))
    return state


def _lifecycle(
    state: ProxyState, *, owns_store: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if isinstance(state.activity, _LazyPostgres):
            await state.activity.start()
        state.session = client_session()
        state.endpoints = EndpointCache(state.ctx.store, state.ctx.config.bookmark_interval)
        loops = [
            asyncio.create_task(state.tracker.run()),
            asyncio.create_task(state.endpoints.run()),
        ]
        yield
        for loop in loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await state.tracker.close()
        await state.session.close()
        if owns_store:
            await state.activity.close()

    return lifecycle


class _LazyPostgres(ActivityStore):
    """PostgreSQL activity store opened on app start-up (the app is built synchronously)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._inner: PostgresActivityStore | None = None

    async def start(self) -> None:
        self._inner = await PostgresActivityStore.open(self._url)

    @property
    def inner(self) -> PostgresActivityStore:
        if self._inner is None:
            raise RuntimeError("activity store not started")
        return self._inner

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()

    async def set_open(self, replica: str, workspace: str, count: int, now: dt.datetime) -> None:
        await self.inner.set_open(replica, workspace, count, now)

    async def heartbeat(self, replica: str, now: dt.datetime) -> None:
        await self.inner.heartbeat(replica, now)

    async def open_connections(self, workspace: str, now: dt.datetime, ttl: float) -> int:
        return await self.inner.open_connections(workspace, now, ttl)

    async def expire(self, now: dt.datetime, ttl: float) -> int:
        return await self.inner.expire(now, ttl)

    async def claim_write(self, workspace: str, now: dt.datetime, interval: float) -> bool:
        return await self.inner.claim_write(workspace, now, interval)

    async def last_write(self, workspace: str) -> dt.datetime | None:
        return await self.inner.last_write(workspace)

    async def use_link(self, link_id: str, expires_at: dt.datetime) -> bool:
        return await self.inner.use_link(link_id, expires_at)
