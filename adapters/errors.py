"""One error hierarchy for the whole product, carrying the reasons and codes of docs/errors.md.

Adapters translate every error of docker, minio and the network into one of these at the
boundary (chained with ``from``); the operator records ``reason``/``code`` in
``status.error_info`` and decides retry versus terminal from ``retryable``. Messages must
never contain credentials: build them from ids and codes, not from client exceptions that
may echo request URLs or headers.
"""

from __future__ import annotations

from typing import Any

# Re-exported: callers that raise or catch adapter errors also name their reason and code.
from codehub.vocabulary.errors import RETRY_BUDGET as RETRY_BUDGET
from codehub.vocabulary.errors import ErrorCode as ErrorCode
from codehub.vocabulary.errors import Reason as Reason


class CodehubError(Exception):
    """Base of every error the product raises on purpose.

    ``retryable`` is False for reasons with no retry budget (Timeout, DataLost,
    RetryExceeded): a retry cannot help, so the operator goes terminal at once.
    """

    reason: Reason = Reason.ACTION_FAILED

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.UNKNOWN,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.context: dict[str, Any] = dict(context or {})

    @property
    def retryable(self) -> bool:
        return RETRY_BUDGET[self.reason] > 0

    def __str__(self) -> str:
        return f"{self.reason.value} ({self.code.value}): {self.message}"


class UnreachableError(CodehubError):
    """The engine, S3 or the API could not be reached or answered with a server error."""

    reason = Reason.UNREACHABLE


class ActionFailedError(CodehubError):
    """An actuator ran and failed (job exit code ≠ 0, container create failed)."""

    reason = Reason.ACTION_FAILED


class MismatchError(CodehubError):
    """Observation disagrees with what the operation expected."""

    reason = Reason.MISMATCH


class OperationTimeoutError(CodehubError):
    """An operation or actuator exceeded its limit."""

    reason = Reason.TIMEOUT


class DataLostError(CodehubError):
    """Archive missing, checksum mismatch, or data vanished: never retried."""

    reason = Reason.DATA_LOST
