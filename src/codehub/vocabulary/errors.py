"""The error vocabulary: reasons recorded in ``status.error_info`` and storage error codes.

Both the resource models (``crd_like``) and the adapters that raise typed errors need
these names; keeping them here lets neither import the other. Meanings and retry budgets
are described in docs/errors.md.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an operation failed, as written into ``status.error_info.reason``."""

    UNREACHABLE = "Unreachable"
    ACTION_FAILED = "ActionFailed"
    MISMATCH = "Mismatch"
    TIMEOUT = "Timeout"
    RETRY_EXCEEDED = "RetryExceeded"
    DATA_LOST = "DataLost"


class ErrorCode(StrEnum):
    """Machine-readable failure codes, as printed by job containers (``CODEHUB_ERROR=...``)."""

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


#: How many retries each reason gets before the error becomes terminal (docs/errors.md).
RETRY_BUDGET: dict[Reason, int] = {
    Reason.UNREACHABLE: 3,
    Reason.ACTION_FAILED: 3,
    Reason.MISMATCH: 3,
    Reason.TIMEOUT: 0,
    Reason.RETRY_EXCEEDED: 0,
    Reason.DATA_LOST: 0,
}
