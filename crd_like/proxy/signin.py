"""Browser sign-in: a page where a token is pasted, and single-use sign-in links.

Both end in the session cookie (scoped to ``/w/``, where the proxy and these pages
live) and a redirect to the workspace. A link is minted by an authenticated API caller
(``POST /proxy/v1/signin-links``) for a workspace they may use, lives at most 60 s, and
is recorded as used in PostgreSQL on first use, so no replica accepts it twice.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from typing import Any

from aiohttp import web

from codehub.crd_like.server.context import IDENTITY_KEY, mark
from codehub.crd_like.server.status import ApiError
from codehub.crd_like.store.interface import NotFound

from . import pages
from .gate import identity_by_user, may_pass, same_origin
from .routing import SIGNIN_PATH, is_label, safe_next
from .session import TokenError, cookie_header, issue_link, issue_session, read_link
from .state import ProxyState, state_of

log = logging.getLogger(__name__)

LINKS_PATH = "/proxy/v1/signin-links"


def _form(next_path: str | None, message: str = "") -> str:
    note = f"<p role=alert><strong>{html.escape(message)}</strong></p>" if message else ""
    hidden = f'<input type=hidden name=next value="{html.escape(next_path)}">' if next_path else ""
    return pages.page(
        "Sign in to codehub",
        f"{note}<form method=post action={SIGNIN_PATH}>"
        "<label for=token>Paste your access token</label>"
        "<input id=token name=token type=password autocomplete=off required autofocus>"
        f"{hidden}<button type=submit>Sign in</button></form>"
        "<p>Or run <code>codehub open NAME</code> for a one-time sign-in link.</p>",
    )


async def signin_page(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "signin")
    return pages.html_response(_form(safe_next(request.query.get("next"))))


def _signed_in(state: ProxyState, user: str, location: str) -> web.Response:
    ttl = state.ctx.config.session_ttl
    token = issue_session(state.secret, user, state.clock(), ttl)
    return web.Response(
        status=303,
        headers={
            "Location": location,
            "Set-Cookie": cookie_header(token, int(ttl)),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


async def signin_submit(request: web.Request) -> web.StreamResponse:
    """The pasted token becomes a session; a cross-site form post is refused."""
    mark(request, "create", "signin")
    state = state_of(request)
    if not same_origin(request):
        return pages.error(request, 403, "forbidden", "cross-site sign-in is not allowed")
    form = await request.post()
    token = str(form.get("token", "")).strip()
    next_path = safe_next(str(form.get("next", "")) or None)
    ident = state.ctx.auth.authenticate(f"Bearer {token}") if token else None
    if ident is None:
        return pages.html_response(_form(next_path, "That token is not valid."), 401)
    return _signed_in(state, ident.user, next_path or SIGNIN_PATH + "/done")


async def signed_in_page(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "signin")
    return pages.html_response(
        pages.page("Signed in", "<p>Open a workspace at <code>/w/NAMESPACE/NAME/</code>.</p>")
    )


async def use_link(request: web.Request) -> web.StreamResponse:
    """Forged, expired, replayed or revoked links all get one answer and change nothing."""
    mark(request, "get", "signin-link")
    state = state_of(request)
    refused = pages.error(
        request,
        401,
        "link_invalid",
        "this sign-in link is expired, already used or not valid; ask for a new one",
    )
    try:
        link = read_link(state.secret, request.match_info["token"], state.clock())
    except TokenError as exc:
        log.info("proxy: sign-in link refused (%s)", exc)
        return refused
    ident = identity_by_user(state, link.user)
    if ident is None or not may_pass(ident, link.namespace):
        return refused
    expires = dt.datetime.fromtimestamp(link.expires_at, dt.UTC)
    try:
        first_use = await state.activity.use_link(link.link_id, expires)
    except Exception as exc:  # handled here: the generic handler would log the token's URL
        log.warning("proxy: sign-in link store unavailable: %r", exc)
        return pages.error(
            request, 503, "unavailable", "try again in a moment", {"Retry-After": "5"}
        )
    if not first_use:
        log.info("proxy: sign-in link used twice")
        return refused
    return _signed_in(state, ident.user, f"/w/{link.namespace}/{link.name}/")


async def mint_link(request: web.Request) -> web.StreamResponse:
    """``{namespace, name}`` -> ``{url, expires_at}`` for a bearer caller who may pass."""
    mark(request, "create", "signin-links")
    state = state_of(request)
    ident = request[IDENTITY_KEY]
    try:
        body: Any = await request.json()
    except ValueError:
        raise ApiError(400, "the request body must be JSON {namespace, name}") from None
    namespace = body.get("namespace") if isinstance(body, dict) else None
    name = body.get("name") if isinstance(body, dict) else None
    if not (isinstance(namespace, str) and isinstance(name, str)):
        raise ApiError(400, "namespace and name are required strings")
    missing = ApiError(404, f'workspace "{namespace}/{name}" not found', reason="NotFound")
    if not (is_label(namespace) and is_label(name)) or not may_pass(ident, namespace):
        raise missing
    try:
        await state.ctx.store.get("workspaces", namespace, name)
    except NotFound:
        raise missing from None
    cfg = state.ctx.config
    token, link = issue_link(
        state.secret, ident.user, namespace, name, state.clock(), cfg.signin_link_ttl
    )
    url = f"{request.scheme}://{request.host}/w/-/link/{token}"
    expires = dt.datetime.fromtimestamp(link.expires_at, dt.UTC)
    return web.json_response(
        {"url": url, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        status=201,
        headers={"Cache-Control": "no-store"},
    )
