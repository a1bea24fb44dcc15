"""Answers of the proxy itself: an HTML page for browsers, JSON for everything else.

Pages are self-contained (inline style, no external assets, no script) and carry a
strict Content-Security-Policy; every message is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from aiohttp import web

CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}input,button{font:inherit;padding:.4rem;width:100%;"
    "box-sizing:border-box;margin:.3rem 0}code{background:#f2f2f2;padding:0 .2rem}"
)


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def page(title: str, body_html: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )


def html_response(
    text: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    all_headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # Not no-referrer: with it Chromium sends ``Origin: null`` on the sign-in form's
        # POST, which the cross-site check must refuse. Same-origin keeps referrers home.
        "Referrer-Policy": "same-origin",
    }
    all_headers.update(headers or {})
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=all_headers
    )


def error(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The one shape of every proxy error: ``{"error": code, "message": ...}`` or a page."""
    if wants_html(request):
        title = {
            400: "Bad request",
            401: "Sign-in required",
            403: "Forbidden",
            404: "Not found",
            502: "Workspace unreachable",
            503: "Workspace not running",
        }.get(status, "Error")
        return html_response(page(title, f"<p>{html.escape(message)}</p>"), status, headers)
    extra = {"Cache-Control": "no-store"}
    extra.update(headers or {})
    return web.Response(
        body=json.dumps({"error": code, "message": message}).encode(),
        status=status,
        content_type="application/json",
        headers=extra,
    )


def not_found(request: web.Request, namespace: str, name: str) -> web.Response:
    """Missing and not-yours look the same: nothing tells whether the workspace exists."""
    return error(request, 404, "not_found", f'workspace "{namespace}/{name}" not found')
