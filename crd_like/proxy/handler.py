"""The proxy's request handler: route, authenticate, authorise, find, forward, record."""

from __future__ import annotations

import time

from aiohttp import web

from codehub.crd_like.server.context import mark

from . import pages
from .activity import WorkspaceRef
from .forward import forward_http
from .gate import authenticate, endpoint_of, find_workspace, same_origin, upstream_url
from .routing import Forward, Redirect, route
from .state import state_of
from .websocket import forward_websocket, is_upgrade


async def proxy(request: web.Request) -> web.StreamResponse:
    """Every request under ``/w/`` that is not one of the sign-in pages."""
    state = state_of(request)
    started = time.perf_counter()
    upgrade = is_upgrade(request)
    mark(request, "proxy", "workspaces/proxy")
    response = await _serve(request, upgrade)
    state.metrics.observe(response.status)
    if not upgrade:
        state.metrics.duration.observe(time.perf_counter() - started)
    return response


async def _serve(request: web.Request, upgrade: bool) -> web.StreamResponse:
    state = state_of(request)
    found = route(request.raw_path)
    if isinstance(found, Redirect):
        return web.Response(status=308, headers={"Location": found.location})
    if not isinstance(found, Forward):
        code = "bad_request" if found.status == 400 else "not_found"
        return pages.error(request, found.status, code, f"refused: {found.reason}")
    caller = authenticate(request, state)
    if isinstance(caller, web.Response):
        return caller
    obj = await find_workspace(request, state, caller, found.namespace, found.name)
    if isinstance(obj, web.Response):
        return obj
    if upgrade and (
        (caller.via == "cookie" and "Origin" not in request.headers) or not same_origin(request)
    ):
        return pages.error(request, 403, "forbidden", "cross-origin WebSocket refused")
    base = endpoint_of(obj)
    if base is None:
        return await state.not_running(request, obj, caller, found)
    ref = WorkspaceRef.of(obj)
    if upgrade:
        await state.tracker.connection_opened(ref)
        try:
            response = await forward_websocket(
                request, state.client, upstream_url(base, found, websocket=True), found
            )
        finally:
            await state.tracker.connection_closed(ref)
    else:
        state.tracker.touch_soon(ref, "http")
        response = await forward_http(request, state.client, upstream_url(base, found), found)
    if response.status == 502 and state.endpoints is not None:
        # Maybe a stale endpoint: the next request asks the store.
        state.endpoints.forget(found.namespace, found.name)
    return response
