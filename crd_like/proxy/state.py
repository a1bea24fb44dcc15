"""What the proxy's handlers share (one per server app)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from codehub.crd_like.server.auth import Identity
from codehub.crd_like.server.context import ServerContext
from codehub.crd_like.store.activity import ActivityStore
from codehub.crd_like.store.interface import Obj

from .activity import ActivityTracker
from .endpoints import EndpointCache
from .metrics import ProxyMetrics
from .routing import Forward


@dataclass(frozen=True)
class Caller:
    identity: Identity
    #: "bearer" or "cookie": a cookie caller is a browser, held to the Origin check.
    via: str


#: Answers a request for a workspace that has no endpoint (not RUNNING). The default
#: answers 503 with Retry-After; auto-wake replaces it (``add_routes(not_running=...)``).
NotRunning = Callable[[web.Request, Obj, Caller, Forward], Awaitable[web.StreamResponse]]


@dataclass
class ProxyState:
    ctx: ServerContext
    secret: bytes
    activity: ActivityStore
    tracker: ActivityTracker
    metrics: ProxyMetrics
    not_running: NotRunning
    session: aiohttp.ClientSession | None = None
    #: Running workspaces from a store watch; None (tests, or not started) reads the store.
    endpoints: EndpointCache | None = None
    clock: Callable[[], float] = time.time

    @property
    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the proxy's client session is not open yet")
        return self.session


PROXY_KEY: web.AppKey[ProxyState] = web.AppKey("codehub_proxy")


def state_of(request: web.Request) -> ProxyState:
    return request.app[PROXY_KEY]
