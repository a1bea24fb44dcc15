"""The front door: who is asking, may they pass, and where does their workspace listen."""

from __future__ import annotations

import logging
from urllib.parse import quote

import yarl
from aiohttp import web

from codehub.crd_like.server.auth import Identity
from codehub.crd_like.store.interface import NotFound, Obj, StoreError

from . import pages
from .routing import SIGNIN_PATH, Forward
from .session import COOKIE_NAME, TokenError, clear_cookie_header, read_session
from .state import Caller, ProxyState

log = logging.getLogger(__name__)

NOT_RUNNING_HEADER = "X-Codehub-Not-Running"


def identity_by_user(state: ProxyState, user: str) -> Identity | None:
    """The user's identity as the token file says now (revoked users have none)."""
    groups: set[str] = set()
    found: Identity | None = None
    for ident in state.ctx.auth.users():
        if ident.user == user:
            found = found or ident
            groups |= ident.groups
    return None if found is None else Identity(found.user, found.uid, frozenset(groups))


def authenticate(request: web.Request, state: ProxyState) -> Caller | web.Response:
    """A caller, or the answer for someone unknown (401, or the sign-in page for browsers).

    A bearer header is decisive when present: a wrong token is 401 even with a cookie.
    """
    header = request.headers.get("Authorization")
    if header:
        ident = state.ctx.auth.authenticate(header)
        if ident is None:
            return pages.error(
                request,
                401,
                "unauthorized",
                "the bearer token is not valid",
                {"WWW-Authenticate": 'Bearer realm="codehub"'},
            )
        return Caller(ident, "bearer")
    raw = request.cookies.get(COOKIE_NAME)
    stale = False
    if raw:
        try:
            session = read_session(state.secret, raw, state.clock())
        except TokenError as exc:
            log.info("proxy: session cookie refused (%s)", exc)
            stale = True
        else:
            ident = identity_by_user(state, session.user)
            if ident is not None:
                return Caller(ident, "cookie")
            stale = True
    return sign_in_required(request, clear=stale)


def sign_in_required(request: web.Request, *, clear: bool = False) -> web.Response:
    headers = {"Set-Cookie": clear_cookie_header()} if clear else {}
    if pages.wants_html(request) and request.method in ("GET", "HEAD"):
        target = quote(request.raw_path, safe="")
        headers["Location"] = f"{SIGNIN_PATH}?next={target}"
        headers["Cache-Control"] = "no-store"
        return web.Response(status=303, headers=headers)
    headers["WWW-Authenticate"] = 'Bearer realm="codehub"'
    return pages.error(request, 401, "unauthorized", "sign in or send a bearer token", headers)


def may_pass(ident: Identity, namespace: str) -> bool:
    return ident.user == namespace or ident.is_admin


async def find_workspace(
    request: web.Request, state: ProxyState, caller: Caller, namespace: str, name: str
) -> Obj | web.Response:
    """The workspace if ``caller`` may use it; otherwise exactly the answer for a missing one."""
    if not may_pass(caller.identity, namespace):
        return pages.not_found(request, namespace, name)
    cached = state.endpoints.get(namespace, name) if state.endpoints is not None else None
    if cached is not None:
        return cached
    try:
        obj = await state.ctx.store.get("workspaces", namespace, name)
    except NotFound:
        return pages.not_found(request, namespace, name)
    except StoreError as exc:
        log.warning("proxy: store error for %s/%s: %r", namespace, name, exc)
        return pages.error(
            request,
            503,
            "unavailable",
            "the workspace cannot be looked up now",
            {"Retry-After": "5"},
        )
    return obj


def endpoint_of(obj: Obj) -> yarl.URL | None:
    """The upstream base URL, when the workspace is running and has one."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return None
    raw = (obj.get("status") or {}).get("endpoint")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        url = yarl.URL(raw)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return url


def upstream_url(base: yarl.URL, fwd: Forward, *, websocket: bool = False) -> yarl.URL:
    """``base`` + the raw rest of the path + the query, without re-encoding anything."""
    scheme = base.scheme
    if websocket:
        scheme = "wss" if scheme == "https" else "ws"
    root = base.raw_path.rstrip("/")
    return yarl.URL.build(
        scheme=scheme,
        host=base.raw_host or "",
        port=base.explicit_port,
        path=root + fwd.path,
        query_string=fwd.query,
        encoded=True,
    )


async def default_not_running(
    request: web.Request, obj: Obj, caller: Caller, fwd: Forward
) -> web.StreamResponse:
    """The workspace is asleep, come back later (no state change).

    ``X-Codehub-Not-Running`` tells the loading page's probe that the answer is the
    proxy's and not the app's.
    """
    return pages.error(
        request,
        503,
        "workspace_not_running",
        f'workspace "{fwd.namespace}/{fwd.name}" is not running',
        {"Retry-After": "10", NOT_RUNNING_HEADER: "1"},
    )


def same_origin(request: web.Request) -> bool:
    """Origin (when sent) names this server; a cookie caller must send one."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        url = yarl.URL(origin)
    except ValueError:
        return False
    host = request.headers.get("Host", "")
    port = url.explicit_port
    netloc = f"{url.raw_host}:{port}" if port is not None else str(url.raw_host)
    return bool(url.raw_host) and netloc.lower() == host.lower()
