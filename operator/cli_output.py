"""Rendering for the ``codehub`` CLI: tables, YAML/JSON, describe, errors, wait progress.

Kept apart from argument handling so it can be unit-tested with plain dicts and a fixed
``now``; nothing here talks to the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

from codehub.crd_like.client.api import ApiConnectionError, ApiError
from codehub.crd_like.identity import API_VERSION

Obj = dict[str, Any]

HEADERS = ["NAME", "DESIRED", "OBSERVED", "OPERATION", "DISPLAY", "AGE"]
WIDE_HEADERS = ["IMAGE", "OP_ID", "ERRORS", "REASON"]
RESOURCE = "workspace.codehub.io"
_NONE = "<none>"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's short ages: 45s, 3m20s, 12m, 5h10m, 3d4h, 30d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = s // 86400
    if days < 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def age(timestamp: Any, now: datetime) -> str:
    when = parse_time(timestamp)
    if when is None:
        return _NONE
    return human_duration((now - when).total_seconds())


def _get(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def _text(value: Any) -> str:
    if value is None or value == "":
        return _NONE
    return str(value)


def display_of(obj: Obj) -> str:
    """The status' display, or (for an object nobody has observed yet) derived per SPEC §3."""
    display = _get(obj, "status", "display")
    if display:
        return str(display)
    observed = _get(obj, "status", "observed_status")
    if observed == "PENDING" and _get(obj, "status", "archive_key"):
        return "ARCHIVED"
    return str(observed) if observed else _NONE


def headers(wide: bool = False, all_namespaces: bool = False) -> list[str]:
    cols = list(HEADERS) + (WIDE_HEADERS if wide else [])
    return (["NAMESPACE", *cols]) if all_namespaces else cols


def workspace_row(
    obj: Obj, now: datetime, wide: bool = False, all_namespaces: bool = False
) -> list[str]:
    row = [
        _text(_get(obj, "metadata", "name")),
        _text(_get(obj, "spec", "desired_state")),
        _text(_get(obj, "status", "observed_status")),
        _text(_get(obj, "status", "operation")),
        display_of(obj),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]
    if wide:
        row += [
            _text(_get(obj, "spec", "image_ref")),
            _text(_get(obj, "status", "op_id")),
            str(_get(obj, "status", "error_count") or 0),
            _text(_get(obj, "status", "error_info", "reason")),
        ]
    if all_namespaces:
        row.insert(0, _text(_get(obj, "metadata", "namespace")))
    return row


def render_rows(rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    if widths is None:
        widths = column_widths(rows)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) if i < ncols - 1 else cell for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    ncols = max(len(r) for r in rows)
    return [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(ncols)]


def render_table(
    items: Iterable[Obj], now: datetime, wide: bool = False, all_namespaces: bool = False
) -> str:
    rows = [headers(wide, all_namespaces)]
    rows += [workspace_row(o, now, wide, all_namespaces) for o in items]
    return render_rows(rows)


def render_list(items: list[Obj], fmt: str, resource_version: str | None = None) -> str:
    """``-o yaml|json`` of several objects: one WorkspaceList, as kubectl prints a List."""
    doc: Obj = {
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": resource_version or ""},
    }
    return render_object(doc, fmt)


def render_object(obj: Obj, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return str(yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))


def resource_name(name: str) -> str:
    return f"{RESOURCE}/{name}"


def describe(obj: Obj, events: list[Obj], now: datetime) -> str:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out: list[str] = []

    def field(label: str, value: Any, indent: int = 0) -> None:
        out.append(f"{' ' * indent}{label + ':':<{24 - indent}}{_text(value)}")

    field("Name", meta.get("name"))
    field("Namespace", meta.get("namespace"))
    field("UID", meta.get("uid"))
    field("API Version", obj.get("apiVersion") or API_VERSION)
    field("Kind", obj.get("kind") or "Workspace")
    created = meta.get("creationTimestamp")
    field("Created", f"{created} ({age(created, now)} ago)" if created else None)
    if meta.get("deletionTimestamp"):
        field("Deleting since", meta.get("deletionTimestamp"))
    field("Labels", _kv(meta.get("labels")))
    field("Annotations", _kv(meta.get("annotations")))
    field("Finalizers", ", ".join(meta.get("finalizers") or []) or None)
    field("Resource Version", meta.get("resourceVersion"))
    field("Generation", meta.get("generation"))
    out.append("Spec:")
    for key in (
        "desired_state",
        "image_ref",
        "display_name",
        "description",
        "memo",
        "standby_ttl_seconds",
        "archive_ttl_seconds",
    ):
        if key in spec:
            field(key, spec.get(key), 2)
    resources = spec.get("resources") or {}
    if resources:
        field("resources", ", ".join(f"{k}={v}" for k, v in resources.items()), 2)
    out.append("Status:")
    if not status:
        out.append("  <not observed yet>")
    for key in (
        "display",
        "observed_status",
        "observed_at",
        "operation",
        "op_id",
        "op_started_at",
        "archive_key",
        "error_count",
        "previous_status",
        "last_access_at",
    ):
        if key in status:
            field(key, status.get(key), 2)
    error = status.get("error_info")
    if isinstance(error, dict) and error:
        out.append("Error:")
        for key in ("reason", "message", "is_terminal", "operation", "error_count", "occurred_at"):
            if key in error:
                field(key, error.get(key), 2)
        context = error.get("context")
        if context:
            field("context", _kv(context), 2)
    else:
        field("Error", None)
    out.append(describe_events(events, now))
    return "\n".join(out) + "\n"


def describe_events(events: list[Obj], now: datetime, limit: int = 20) -> str:
    if not events:
        return "Events:                 <none>"
    ordered = sorted(events, key=_event_time)[-limit:]
    rows = [["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]]
    for ev in ordered:
        count = ev.get("count")
        when = age(_event_time_raw(ev), now)
        if isinstance(count, int) and count > 1:
            when = f"{when} (x{count})"
        source = ev.get("reportingComponent") or _get(ev, "source", "component")
        rows.append(
            [
                _text(ev.get("type")),
                _text(ev.get("reason")),
                when,
                _text(source),
                " ".join(str(ev.get("message") or "").split()),
            ]
        )
    body = render_rows(rows).rstrip("\n")
    return "Events:\n" + "\n".join("  " + line for line in body.split("\n"))


def _event_time_raw(ev: Obj) -> Any:
    return (
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("firstTimestamp")
        or _get(ev, "metadata", "creationTimestamp")
    )


def _event_time(ev: Obj) -> datetime:
    return parse_time(_event_time_raw(ev)) or datetime.min.replace(tzinfo=UTC)


def _kv(mapping: Any) -> str | None:
    if not isinstance(mapping, dict) or not mapping:
        return None
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_api_error(err: ApiError) -> str:
    """One line for any API failure, kubectl-style; 422 lists the field causes."""
    if isinstance(err, ApiConnectionError):
        return one_line(f"Unable to connect to the server: {err.message}")
    message = one_line(err.message)
    causes = []
    for cause in err.causes:
        field = cause.get("field") or ""
        text = one_line(str(cause.get("message") or cause.get("reason") or ""))
        item = f"{field}: {text}" if field else text
        if item and item not in message and text not in message:
            causes.append(item)
    if causes:
        message = f"{message}: {'; '.join(causes)}" if message else "; ".join(causes)
    if err.status == 429 and err.details.get("limit_type"):
        d = err.details
        message += f" (limit {d.get('limit_type')}: {d.get('current')}/{d.get('max')} running)"
    return f"Error from server ({err.reason}): {message}"


def progress_text(obj: Obj | None) -> str:
    if obj is None:
        return "deleted"
    status = obj.get("status") or {}
    parts = [
        f"desired={_text(_get(obj, 'spec', 'desired_state'))}",
        f"observed={_text(status.get('observed_status'))}",
        f"operation={_text(status.get('operation'))}",
        f"display={display_of(obj)}",
    ]
    reason = _get(status, "error_info", "reason")
    if reason:
        parts.append(f"error={reason} (x{status.get('error_count') or 0})")
    return " ".join(parts)


class Progress:
    """A status line on stderr: rewritten in place on a terminal, one line per change else."""

    def __init__(self, stream: TextIO, prefix: str, enabled: bool = True) -> None:
        self._stream = stream
        self._prefix = prefix
        self._enabled = enabled
        self._last: str | None = None
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._width = 0

    def update(self, text: str, elapsed: float) -> None:
        if not self._enabled or text == self._last:
            return
        self._last = text
        line = f"{self._prefix}: {text} [{human_duration(elapsed)}]"
        if self._tty:
            pad = max(0, self._width - len(line))
            self._stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._tty and self._width:
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0
