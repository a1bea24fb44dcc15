"""Kubernetes ``Status`` error bodies and the mapping from exceptions to them.

Every refusal the server sends is a Status, because kubectl, kopf and client libraries
parse that shape (``reason``, ``code``, ``details.causes``) to decide what to do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from codehub.crd_like.status_reasons import STATUS_REASONS
from codehub.crd_like.store.interface import (
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    StoreError,
)

REASONS = STATUS_REASONS
#: Longest message a Status carries; values are quoted as short prefixes anyway.
MAX_MESSAGE = 2048
_EXC_CLASS = re.compile(r"\s*\((?:[A-Za-z_.]*(?:Error|Violation|Exception))\)")
log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal that becomes a Status body. ``extra`` adds top-level keys (docs/limits.md)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        causes: Sequence[Mapping[str, str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "..."
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details: dict[str, Any] = dict(details or {})
        if causes:
            self.details["causes"] = [dict(c) for c in causes]
        self.extra: dict[str, Any] = dict(extra or {})

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, self.details, self.extra)


def status_body(
    code: int,
    message: str,
    reason: str,
    details: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    if extra:
        body.update(extra)
    return body


def qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def invalid(
    kind: str, name: str, group: str, resource: str, causes: Sequence[tuple[str, str]]
) -> ApiError:
    """422 like the real server: ``Workspace.codehub.io "x" is invalid: field: message``."""
    text = ", ".join(f"{f}: {m}" if f else m for f, m in causes)
    qualified_kind = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        f'{qualified_kind} "{name}" is invalid: {text}',
        details={"name": name, "group": group, "kind": kind},
        causes=[{"reason": _cause_reason(m), "message": m, "field": f} for f, m in causes],
    )


def bad_request(message: str, field: str = "") -> ApiError:
    causes = (
        [{"reason": "FieldValueInvalid", "message": message, "field": field}] if field else None
    )
    return ApiError(400, message, causes=causes)


def _cause_reason(message: str) -> str:
    if message.startswith("Required value"):
        return "FieldValueRequired"
    if message.startswith("Unsupported value"):
        return "FieldValueNotSupported"
    if message.startswith("Forbidden"):
        return "FieldValueForbidden"
    return "FieldValueInvalid"


def from_store_error(
    exc: StoreError, *, resource: str, group: str, kind: str, name: str = ""
) -> ApiError:
    """Translate a storage error for the resource the request addressed."""
    what = qualified(resource, group)
    details = {"name": name, "group": group, "kind": resource}
    if isinstance(exc, NotFound):
        return ApiError(404, f'{what} "{name}" not found', details=details)
    if isinstance(exc, AlreadyExists):
        return ApiError(
            409, f'{what} "{name}" already exists', reason="AlreadyExists", details=details
        )
    if isinstance(exc, Conflict):
        return ApiError(
            409,
            f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            reason="Conflict",
            details=details,
        )
    if isinstance(exc, Gone):
        text = str(exc)
        if "too old resource version" not in text:
            text = f"too old resource version: {text}"
        return ApiError(410, text, reason="Expired")
    if isinstance(exc, Invalid):
        return invalid(kind, name, group, resource, [(exc.field, _public(str(exc)))])
    log.error("storage error on %s %r: %r", what, name, exc)
    return ApiError(500, "internal storage error", reason="InternalError")


def _public(message: str) -> str:
    """A store message without the database exception class it may name (logged)."""
    cleaned = _EXC_CLASS.sub("", message)
    if cleaned != message:
        log.info("store refused a value: %s", message)
    return cleaned
