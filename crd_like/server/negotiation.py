"""What the client may send and expect back: Accept (406), body media types (415), and
Status bodies for the errors aiohttp answers on its own (a malformed request line or
header never reaches a handler).

kube-apiserver answers 406 NotAcceptable when none of the Accept ranges can be served,
and 415 UnsupportedMediaType for a body it cannot decode; clients (kubectl included)
always offer ``application/json`` or a wildcard.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .bodies import short
from .status import ApiError, status_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON_RANGES = frozenset({"application/json", "application/*", "*/*"})
SSE_RANGES = frozenset({"text/event-stream", "text/*", "*/*"})
SERVED = "application/json"


def accepted_ranges(header: str | None) -> list[str]:
    """The media ranges of an Accept header (parameters dropped, q=0 skipped)."""
    if not header:
        return []
    ranges = []
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        if media:
            ranges.append(media.lower())
    return ranges


@functools.lru_cache(maxsize=256)
def acceptable(header: str | None, served: frozenset[str]) -> bool:
    """Remembered: clients send the same few Accept headers on every request, and
    parsing one cost several microseconds per request."""
    ranges = accepted_ranges(header)
    return not ranges or any(r in served for r in ranges)


def not_acceptable(header: str, served: str) -> ApiError:
    return ApiError(
        406,
        f'only the following media types are accepted: {served} (Accept: "{short(header)}")',
        reason="NotAcceptable",
    )


def is_api_path(path: str) -> bool:
    return path.startswith(("/api/", "/apis/", "/openapi/", "/version")) or path in (
        "/api",
        "/apis",
    )


def is_sse_path(path: str) -> bool:
    return path.startswith("/api/v1/namespaces/") and "/workspaces/" in path


@web.middleware
async def negotiation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """406 before any work when the client cannot take what the path serves."""
    accept = request.headers.get("Accept")
    if accept and is_api_path(request.path) and request.path != "/openapi/v2":
        if is_sse_path(request.path):
            if not acceptable(accept, SSE_RANGES):
                raise not_acceptable(accept, "text/event-stream")
        elif not acceptable(accept, JSON_RANGES):
            raise not_acceptable(accept, SERVED)
    return await handler(request)


class StatusRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering its own errors (a NUL in a header, a
    request line over the limit) with a Status body instead of plain text."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        base = super().handle_error(request, status, exc, message)
        reason = {400: "BadRequest", 413: "RequestEntityTooLarge", 414: "RequestURITooLong"}
        text = "the request could not be parsed" if status < 500 else "an internal error occurred"
        if status == 431 or (status == 400 and exc is not None and "too long" in str(exc)):
            text = "a request line or header is too long"
        body = status_body(
            status, text, reason.get(status, "InternalError" if status >= 500 else "BadRequest")
        )
        resp = web.Response(
            status=base.status,
            body=json.dumps(body, separators=(",", ":")).encode(),
            content_type="application/json",
        )
        resp.force_close()
        return resp


class StatusServer(web.Server):
    """``web.Server`` creating :class:`StatusRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return StatusRequestHandler(self, loop=self._loop, **self._kwargs)
