"""One error hierarchy for the whole product, mapping to SPEC §6 reasons and §8 codes.

Adapters translate every error of docker, minio and the network into one of these at the
boundary (chained with ``from``); the operator records ``reason``/``code`` in
``status.error_info`` and decides retry versus terminal from ``retryable``. Messages must
never contain credentials: build them from ids and codes, not from client exceptions that
may echo request URLs or headers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """SPEC §6 reasons, as written into ``status.error_info.reason``."""

    UNREACHABLE = "Unreachable"
    ACTION_FAILED = "ActionFailed"
    MISMATCH = "Mismatch"
    TIMEOUT = "Timeout"
    RETRY_EXCEEDED = "RetryExceeded"
    DATA_LOST = "DataLost"


class ErrorCode(StrEnum):
    """SPEC §8 codes, as printed by job containers (``CODEHUB_ERROR=...``)."""

    S3_ACCESS_ERROR = "S3_ACCESS_ERROR"
    ARCHIVE_NOT_FOUND = "ARCHIVE_NOT_FOUND"
    META_NOT_FOUND = "META_NOT_FOUND"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    TAR_EXTRACT_FAILED = "TAR_EXTRACT_FAILED"
    DISK_FULL = "DISK_FULL"
    IMAGE_PULL_FAILED = "IMAGE_PULL_FAILED"
    CONTAINER_CREATE_FAILED = "CONTAINER_CREATE_FAILED"
    VOLUME_NOT_FOUND = "VOLUME_NOT_FOUND"
    UNKNOWN = "UNKNOWN"


#: SPEC §6: how many retries each reason gets before the error becomes terminal.
RETRY_BUDGET: dict[Reason, int] = {
    Reason.UNREACHABLE: 3,
    Reason.ACTION_FAILED: 3,
    Reason.MISMATCH: 3,
    Reason.TIMEOUT: 0,
    Reason.RETRY_EXCEEDED: 0,
    Reason.DATA_LOST: 0,
}


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


class RetryExceededError(CodehubError):
    """The retry budget of an operation is spent."""

    reason = Reason.RETRY_EXCEEDED


class DataLostError(CodehubError):
    """Archive missing, checksum mismatch, or data vanished: never retried."""

    reason = Reason.DATA_LOST
