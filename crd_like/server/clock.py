"""The server's "now" for the timestamps a write stamps (managedFields, annotations).

``now_rfc3339`` formats to the second, so the string only changes once a second; a
PATCH stamps it two or three times, and formatting it (an aware ``datetime``,
``astimezone``, ``strftime``) was ~4 % of the server's CPU per PATCH
(docs/adr/0007-api-write-path-performance.md). This keeps the last second's string.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from codehub.vocabulary.timestamps import format_rfc3339

_last: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """``codehub.vocabulary.timestamps.now_rfc3339()``, formatted at most once a second:
    the same instant's whole second, so the same string."""
    global _last
    second = int(time.time())
    if second != _last[0]:
        _last = (second, format_rfc3339(datetime.fromtimestamp(second, UTC)))
    return _last[1]
