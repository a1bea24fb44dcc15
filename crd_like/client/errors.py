"""The client's errors: every refusal is an ``ApiError`` parsed from the Kubernetes
``Status`` body, every transport failure an ``ApiConnectionError`` with one clean line
(docs/errors.md). The bearer token never appears in either."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from codehub.crd_like.status_reasons import STATUS_REASONS

MAX_TEXT = 300
_REASONS = STATUS_REASONS


class ApiError(Exception):
    """A request the server refused (or could not be made).

    ``status`` is the HTTP code (0 for transport failures), ``reason`` the Kubernetes
    reason (``NotFound``, ``Conflict``, ``Invalid``...), ``causes`` the field-level causes
    of a 422 as ``[{"field", "reason", "message"}]``.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        causes: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        if causes is None:
            raw = self.details.get("causes")
            causes = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
        self.causes: list[dict[str, Any]] = causes

    @property
    def not_found(self) -> bool:
        """404: the object (or its namespace) does not exist, or is not visible to us."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a resourceVersion precondition failed, or the name is taken."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        """410: the requested resourceVersion is older than the kept history."""
        return self.status == 410

    @property
    def invalid(self) -> bool:
        """422: the body failed validation, or a JSON Patch ``test`` failed."""
        return self.status == 422

    @property
    def too_many_requests(self) -> bool:
        """429: a running limit refused the change."""
        return self.status == 429

    @property
    def forbidden(self) -> bool:
        """403: authenticated, but not allowed."""
        return self.status == 403

    @property
    def unauthorized(self) -> bool:
        """401: no or a wrong token."""
        return self.status == 401

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, reason={self.reason!r}, message={self.message!r})"

    @classmethod
    def from_body(cls, status: int, body: bytes, http_reason: str = "") -> ApiError:
        """Build from a response body: a Kubernetes Status, the limit body
        (docs/limits.md), or text."""
        text = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        default_reason = _REASONS.get(status, http_reason or "Error")
        if isinstance(data, dict):
            if data.get("kind") == "Status" or "reason" in data or "code" in data:
                details = data.get("details") if isinstance(data.get("details"), dict) else {}
                return cls(
                    status,
                    str(data.get("reason") or default_reason),
                    str(data.get("message") or http_reason or f"HTTP {status}"),
                    details,
                )
            if "error" in data:
                details = data.get("details") if isinstance(data.get("details"), dict) else {}
                return cls(
                    status,
                    str(data.get("error")),
                    str(data.get("message") or data.get("error")),
                    details,
                )
        snippet = " ".join(text.split())[:MAX_TEXT]
        message = f"HTTP {status} {http_reason}".strip()
        if snippet:
            message = f"{message}: {snippet}"
        return cls(status, default_reason, message)


class ApiConnectionError(ApiError, ConnectionError):
    """The server could not be reached (refused, TLS failure, timeout, disconnect)."""

    def __init__(self, message: str) -> None:
        ApiError.__init__(self, 0, "ConnectionError", message)

    def __str__(self) -> str:
        return self.message


def connection_error(server: str, exc: BaseException) -> ApiConnectionError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ApiConnectionError(
            f"TLS certificate of {server} is not trusted (pass --ca-file / CODEHUB_CA_FILE)"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return ApiConnectionError(f"TLS handshake with {server} failed")
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or type(exc.os_error).__name__
        return ApiConnectionError(f"cannot connect to {server}: {detail}")
    if isinstance(exc, asyncio.TimeoutError):
        return ApiConnectionError(f"request to {server} timed out")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ApiConnectionError(f"{server} closed the connection")
    text = str(exc).split("\n", 1)[0][:MAX_TEXT]
    return ApiConnectionError(f"cannot talk to {server}: {text or type(exc).__name__}")
