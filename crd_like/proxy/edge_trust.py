"""What the server trusts from the native edge, and how it recognises the edge.

Every request nginx passes to the server carries the edge secret (clients cannot send it:
nginx overwrites the header). Such a request's ``X-Forwarded-For`` and
``X-Forwarded-Proto`` were set by nginx, so the Python proxy passes them on instead of
naming nginx as the client (docs/proxy.md, "The native edge").
"""

from __future__ import annotations

import hmac

from aiohttp import web

SECRET_HEADER = "X-Codehub-Edge-Secret"
#: Where the settings read the edge's secret (``ApiConfig.edge_secret``); unset means no
#: edge: its endpoints do not exist, nothing is trusted.
SECRET_ENV = "CODEHUB_EDGE_SECRET"

EDGE_SECRET_KEY: web.AppKey[bytes] = web.AppKey("codehub_edge_secret")


def from_edge(request: web.Request) -> bool:
    """The request came through the edge (it carries the configured secret)."""
    secret = request.app.get(EDGE_SECRET_KEY)
    if not isinstance(secret, bytes) or not secret:  # no edge configured
        return False
    given = request.headers.get(SECRET_HEADER, "").encode()
    return hmac.compare_digest(given, secret)
