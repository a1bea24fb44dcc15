"""An aiohttp access logger that never writes a sign-in link's token.

``codehub server`` runs without an access log; whoever turns one on passes
``access_log_class=RedactingAccessLogger`` so the URLs it writes stay credential-free.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .routing import redact


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.3fs',
            request.remote,
            request.method,
            redact(request.raw_path),
            response.status,
            time,
        )
