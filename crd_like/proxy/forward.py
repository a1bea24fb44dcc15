"""HTTP forwarding that streams both ways, in bounded memory, over pooled connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from . import pages
from .edge_trust import SECRET_HEADER, from_edge
from .routing import Forward, redact
from .session import COOKIE_NAME

log = logging.getLogger(__name__)

#: RFC 9110 hop-by-hop fields plus what the proxy sets or keeps to itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    SECRET_HEADER.lower(),
}
CHUNK = 64 * 1024
#: Bodies up to this size (with a Content-Length) are read whole and sent in one write.
SMALL_BODY = CHUNK


def strip_session_cookie(header: str) -> str:
    """The Cookie header without the proxy's own session (the workspace never sees it)."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and part.strip().split("=", 1)[0].strip() != COOKIE_NAME
    ]
    return "; ".join(kept)


def upstream_headers(request: web.Request, fwd: Forward) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop fields and credentials, plus X-Forwarded-*."""
    out: CIMultiDict[str] = CIMultiDict()
    connection_tokens = {
        t.strip().lower() for t in request.headers.get("Connection", "").split(",") if t.strip()
    }
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in _NOT_FORWARDED or lower in connection_tokens:
            continue
        if lower == "cookie":
            value = strip_session_cookie(value)
            if not value:
                continue
        out.add(key, value)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    edge = from_edge(request)
    if edge and prior:  # nginx already appended the client
        out["X-Forwarded-For"] = prior
    else:
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    scheme = request.headers.get("X-Forwarded-Proto") if edge else None
    out["X-Forwarded-Proto"] = scheme or request.scheme
    out["X-Forwarded-Host"] = request.headers.get("Host", "")
    out["X-Forwarded-Prefix"] = fwd.prefix
    return out


def response_headers(upstream: aiohttp.ClientResponse, fwd: Forward) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    tokens = {
        t.strip().lower() for t in upstream.headers.get("Connection", "").split(",") if t.strip()
    }
    for key, value in upstream.headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in tokens or lower == "content-length":
            continue
        if lower == "location" and value.startswith("/") and not value.startswith("//"):
            value = fwd.prefix + value
        out.add(key, value)
    return out


async def forward_http(
    request: web.Request, client: aiohttp.ClientSession, url: yarl.URL, fwd: Forward
) -> web.StreamResponse:
    """Relay one request; upstream failures before the answer starts are a 502."""
    body = request.content if request.body_exists else None
    headers = upstream_headers(request, fwd)
    if body is not None and request.content_length is None:
        headers.pop("Content-Length", None)
    try:
        upstream = await client.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.info("proxy: upstream of %s failed: %r", redact(request.raw_path), exc)
        return pages.error(
            request,
            502,
            "upstream_unreachable",
            "the workspace did not answer; try again in a moment",
        )
    async with upstream:
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY and _has_body(request, upstream):
            return await _relay_small(request, upstream, fwd, length)
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=response_headers(upstream, fwd)
        )
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    return response  # the client left; the upstream connection is released
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # The status line is gone already: the only honest signal left is to cut the
            # connection so the client sees a truncated body, not a complete one.
            _cut(request, exc)
            return response
        await response.write_eof()
    return response


def _has_body(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    """Whether the Content-Length announces bytes that follow (not for HEAD, 1xx, 204, 304)."""
    return request.method != "HEAD" and upstream.status >= 200 and upstream.status not in (204, 304)


class _CoalescedResponse(web.StreamResponse):
    """Headers wait for the body and leave with it: one write, one TLS record."""

    _send_headers_immediately = False


async def _relay_small(
    request: web.Request, upstream: aiohttp.ClientResponse, fwd: Forward, length: int
) -> web.StreamResponse:
    """A body of known small size: read it, then send status, headers and body at once.

    Most of an app's requests are small (scripts, JSON, icons); sending the headers
    apart from the body costs a second TLS record and system call per request. The body
    is bounded (``SMALL_BODY``), so memory stays bounded too.
    """
    response = _CoalescedResponse(
        status=upstream.status, reason=upstream.reason, headers=response_headers(upstream, fwd)
    )
    response.content_length = length
    try:
        body = await upstream.content.readexactly(length) if length else b""
    except (TimeoutError, aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        _cut(request, exc)  # nothing was sent: the client sees the connection end
        return response
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client left
        await response.write_eof(body)
    return response


def _cut(request: web.Request, exc: BaseException) -> None:
    log.info("proxy: upstream of %s broke mid-body: %r", redact(request.raw_path), exc)
    if request.transport is not None:
        request.transport.close()


def client_session() -> aiohttp.ClientSession:
    """One pool for every upstream: keep-alive connections are reused across requests."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=256, keepalive_timeout=60.0, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=None),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )
