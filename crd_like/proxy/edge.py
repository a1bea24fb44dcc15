"""The native edge's question to the server: may this request pass, and where to (docs/proxy.md).

nginx in front of the server (``auth_request``) asks this endpoint about every request
under ``/w/`` before moving its bytes itself. The server keeps every decision: the same
routing, authentication, authorisation and workspace lookup as the Python proxy, and it
records the activity. Only a plain forward to a RUNNING workspace on 127.0.0.1 is
answered 200 with where to send it; anything else (sleeping, sign-in, redirects, errors,
WebSocket upgrades) is 401, and nginx then hands the original request to the Python proxy,
which answers exactly as it always has.

The endpoint lives under the proxy's own pages namespace (``/w/-/``), so the API's
authentication middleware leaves it alone; it answers only a request carrying the shared
secret that nginx adds (clients never learn it; nginx blanks the header on everything
it forwards from clients), and 404 otherwise, as if it did not exist.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from .activity import WorkspaceRef
from .edge_trust import EDGE_SECRET_KEY, SECRET_ENV, SECRET_HEADER, from_edge
from .forward import strip_session_cookie
from .gate import authenticate, endpoint_of, find_workspace
from .routing import PAGES_NAMESPACE, PREFIX, Forward, route
from .state import Caller, state_of

__all__ = ["EDGE_AUTH_PATH", "EDGE_POOLS_PATH", "SECRET_ENV", "SECRET_HEADER", "add_route"]

EDGE_AUTH_PATH = f"{PREFIX}{PAGES_NAMESPACE}/edge-auth"
#: The running workspaces' loopback endpoints, for the edge's keep-alive pools.
EDGE_POOLS_PATH = f"{PREFIX}{PAGES_NAMESPACE}/edge-pools"
#: The only upstream host the edge may be sent to: published ports on loopback.
LOOPBACK = "127.0.0.1"
_ORIGINAL = "X-Original-"
_PASSED = ("Host", "Cookie", "Authorization", "Accept", "Origin")


def add_route(app: web.Application, secret: str) -> None:
    app[EDGE_SECRET_KEY] = secret.encode()
    app.router.add_get(EDGE_AUTH_PATH, edge_auth)
    app.router.add_get(EDGE_POOLS_PATH, edge_pools)


def _check_secret(request: web.Request) -> None:
    if not from_edge(request):
        raise web.HTTPNotFound()


async def edge_pools(request: web.Request) -> web.Response:
    """``{"endpoints": ["127.0.0.1:PORT", ...]}`` of running workspaces, from the watch.

    503 until the watch has listed, so the edge keeps its pools rather than drop them.
    """
    _check_secret(request)
    cache = state_of(request).endpoints
    if cache is None or not cache.synced:
        return web.json_response({"error": "not synced"}, status=503)
    found = set()
    for obj in list(cache.objects.values()):
        base = endpoint_of(obj)
        if base is not None and base.scheme == "http" and base.raw_host == LOOPBACK:
            found.add(f"{LOOPBACK}:{base.explicit_port or 80}")
    return web.json_response({"endpoints": sorted(found)})


def _fallback() -> web.Response:
    """Let the Python proxy answer the original request (``error_page 401 = @app``)."""
    return web.Response(status=401, headers={"Cache-Control": "no-store"})


async def edge_auth(request: web.Request) -> web.Response:
    """200 with the upstream for a plain forward; 401 (Python answers) for anything else."""
    _check_secret(request)
    if request.headers.get(_ORIGINAL + "Upgrade"):
        return _fallback()
    found = route(request.headers.get(_ORIGINAL + "URI", ""))
    if not isinstance(found, Forward):
        return _fallback()
    state = state_of(request)
    original = request.clone(
        method=request.headers.get(_ORIGINAL + "Method", "GET"), headers=_original(request)
    )
    caller = authenticate(original, state)
    if not isinstance(caller, Caller):
        return _fallback()
    obj = await find_workspace(original, state, caller, found.namespace, found.name)
    if isinstance(obj, web.Response):
        return _fallback()
    base = endpoint_of(obj)
    if base is None or base.scheme != "http" or base.raw_host != LOOPBACK:
        return _fallback()
    state.tracker.touch_soon(WorkspaceRef.of(obj), "http")
    port = base.explicit_port or 80
    path = base.raw_path.rstrip("/") + found.path + (f"?{found.query}" if found.query else "")
    return web.Response(
        status=200,
        headers={
            "X-Codehub-Upstream": f"{LOOPBACK}:{port}",
            "X-Codehub-Path": path,
            "X-Codehub-Prefix": found.prefix,
            "X-Codehub-Cookie": strip_session_cookie(original.headers.get("Cookie", "")),
        },
    )


def _original(request: web.Request) -> CIMultiDict[str]:
    """The headers of the request nginx asks about, as nginx passed them."""
    out: CIMultiDict[str] = CIMultiDict()
    for name in _PASSED:
        value = request.headers.get(_ORIGINAL + name)
        if value:
            out[name] = value
    return out
