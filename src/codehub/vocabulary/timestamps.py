"""RFC 3339 timestamps and kubectl-style human durations, written once for every layer.

Kubernetes writes ``metav1.Time`` with second precision and ``metav1.MicroTime`` with
microseconds, always in UTC with a ``Z`` suffix; clients (kubectl, kopf) parse both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def parse_rfc3339(value: object) -> datetime | None:
    """Parse an RFC 3339 string into an aware datetime; ``None`` for anything else.

    A naive value is taken as UTC, because every writer in the product writes UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_rfc3339(value: datetime, *, micro: bool = False) -> str:
    """Format as ``2026-01-02T03:04:05Z`` (or with ``.ffffff`` when ``micro``), always UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if micro:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339(*, micro: bool = False) -> str:
    """The current UTC time, formatted by :func:`format_rfc3339`."""
    return format_rfc3339(utc_now(), micro=micro)


def rfc3339_before(seconds: float) -> str:
    """The UTC time ``seconds`` ago, formatted by :func:`format_rfc3339`."""
    return format_rfc3339(utc_now() - timedelta(seconds=seconds))


def human_duration(seconds: float | timedelta) -> str:
    """kubectl's short ages (apimachinery's ``HumanDuration``): 45s, 3m20s, 12m, 5h10m, 3d4h.

    Both the server's Table output and the CLI print ages, and users compare the two, so
    there is exactly one rule.
    """
    total = int(seconds.total_seconds() if isinstance(seconds, timedelta) else seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 60 * 2:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        rest = days % 365
        return f"{days // 365}y{rest}d" if rest else f"{days // 365}y"
    return f"{days // 365}y"
