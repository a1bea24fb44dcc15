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
from codehub.crd_like.identity import API_VERSION, GROUP, KIND, SINGULAR
from codehub.vocabulary.timestamps import human_duration, parse_rfc3339

Obj = dict[str, Any]

HEADERS = ["NAME", "DESIRED", "OBSERVED", "OPERATION", "DISPLAY", "AGE"]
WIDE_HEADERS = ["IMAGE", "OP_ID", "ERRORS", "REASON", "LAST-ACTIVITY", "CONNS", "IDLE-ACTION"]
RESOURCE = f"{SINGULAR}.{GROUP}"
_NONE = "<none>"


def age(timestamp: Any, now: datetime) -> str:
    when = parse_rfc3339(timestamp)
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
    """The status' display, or (for an object nobody has observed yet) derived as in
    docs/state-machine.md."""
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
            last_activity(obj, now),
            _text(_get(obj, "status", "open_connections")),
            idle_action(obj, now),
        ]
    if all_namespaces:
        row.insert(0, _text(_get(obj, "metadata", "namespace")))
    return row


def last_activity(obj: Obj, now: datetime) -> str:
    """``websocket 2m``: what touched the workspace last, and how long ago."""
    when = _get(obj, "status", "last_access_at")
    if not when:
        return _NONE
    source = _get(obj, "status", "last_activity_source")
    ago = age(when, now)
    return f"{source} {ago}" if source else ago


def idle_action(obj: Obj, now: datetime) -> str:
    """``standby in 4m``: what the idle TTL will do next and when (docs/activity-and-ttl.md)."""
    action = _get(obj, "status", "idle_action")
    when = parse_rfc3339(_get(obj, "status", "idle_action_at"))
    if not action or when is None:
        return _NONE
    left = (when - now).total_seconds()
    return f"{action} in {human_duration(left)}" if left > 0 else f"{action} due"


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


def _hide_managed_fields(obj: Obj) -> Obj:
    """kubectl prints without metadata.managedFields unless asked; so does codehub."""
    if isinstance(obj.get("items"), list):
        return {**obj, "items": [_hide_managed_fields(i) for i in obj["items"]]}
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def render_object(obj: Obj, fmt: str) -> str:
    obj = _hide_managed_fields(obj)
    if fmt == "json":
        return json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return str(yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))


def resource_name(name: str) -> str:
    return f"{RESOURCE}/{name}"


SPEC_KEYS = (
    "desired_state",
    "image_ref",
    "display_name",
    "description",
    "memo",
    "standby_ttl_seconds",
    "archive_ttl_seconds",
)
STATUS_KEYS = (
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
    "last_activity_source",
    "open_connections",
    "idle_action",
    "idle_action_at",
)
ERROR_KEYS = ("reason", "message", "is_terminal", "operation", "error_count", "occurred_at")


def _field(label: str, value: Any, indent: int = 0) -> str:
    return f"{' ' * indent}{label + ':':<{24 - indent}}{_text(value)}"


def describe(obj: Obj, events: list[Obj], now: datetime) -> str:
    """``codehub describe``: metadata, spec, status, error and the recent events."""
    lines = _describe_metadata(obj, now)
    lines += _describe_spec(obj.get("spec") or {})
    lines += _describe_status(obj.get("status") or {})
    lines.append(describe_events(events, now))
    return "\n".join(lines) + "\n"


def _describe_metadata(obj: Obj, now: datetime) -> list[str]:
    meta = obj.get("metadata") or {}
    created = meta.get("creationTimestamp")
    lines = [
        _field("Name", meta.get("name")),
        _field("Namespace", meta.get("namespace")),
        _field("UID", meta.get("uid")),
        _field("API Version", obj.get("apiVersion") or API_VERSION),
        _field("Kind", obj.get("kind") or KIND),
        _field("Created", f"{created} ({age(created, now)} ago)" if created else None),
    ]
    if meta.get("deletionTimestamp"):
        lines.append(_field("Deleting since", meta.get("deletionTimestamp")))
    lines += [
        _field("Labels", _kv(meta.get("labels"))),
        _field("Annotations", _kv(_shown_annotations(meta.get("annotations")))),
        _field("Finalizers", ", ".join(meta.get("finalizers") or []) or None),
        _field("Resource Version", meta.get("resourceVersion")),
        _field("Generation", meta.get("generation")),
    ]
    return lines


def _describe_spec(spec: Obj) -> list[str]:
    lines = ["Spec:"] + [_field(key, spec.get(key), 2) for key in SPEC_KEYS if key in spec]
    resources = spec.get("resources") or {}
    if resources:
        lines.append(_field("resources", ", ".join(f"{k}={v}" for k, v in resources.items()), 2))
    return lines


def _describe_status(status: Obj) -> list[str]:
    lines = ["Status:"]
    if not status:
        lines.append("  <not observed yet>")
    lines += [_field(key, status.get(key), 2) for key in STATUS_KEYS if key in status]
    transfer = transfer_text(status.get("progress"))
    if transfer:
        op = _get(status, "progress", "operation")
        lines.append(_field("progress", f"{op} {transfer}" if op else transfer, 2))
    error = status.get("error_info")
    if not (isinstance(error, dict) and error):
        return [*lines, _field("Error", None)]
    lines.append("Error:")
    lines += [_field(key, error.get(key), 2) for key in ERROR_KEYS if key in error]
    if error.get("context"):
        lines.append(_field("context", _kv(error.get("context")), 2))
    return lines


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
    return parse_rfc3339(_event_time_raw(ev)) or datetime.min.replace(tzinfo=UTC)


def _shown_annotations(annotations: Any) -> Any:
    """Without the last-applied record, as ``kubectl describe`` prints them."""
    if not isinstance(annotations, dict):
        return annotations
    return {k: v for k, v in annotations.items() if k != _LAST_APPLIED}


_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


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
    if err.too_many_requests and err.details.get("limit_type"):
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
    transfer = transfer_text(status.get("progress"))
    if transfer:
        parts.append(f"progress={transfer}")
    reason = _get(status, "error_info", "reason")
    if reason:
        parts.append(f"error={reason} (x{status.get('error_count') or 0})")
    return " ".join(parts)


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB" (binary units, one decimal from KiB up)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def transfer_text(progress: Any) -> str | None:
    """status.progress as "42% (126.0 MiB of 300.0 MiB, 35.2 MiB/s)"; None without one."""
    if not isinstance(progress, dict):
        return None
    done, total = progress.get("bytes_done"), progress.get("bytes_total")
    if not isinstance(done, int):
        return None
    rate = progress.get("bytes_per_second")
    speed = f", {human_bytes(rate)}/s" if isinstance(rate, int | float) else ""
    if isinstance(total, int) and total > 0:
        percent = min(100 * done // total, 100)
        return f"{percent}% ({human_bytes(done)} of {human_bytes(total)}{speed})"
    return f"{human_bytes(done)} done{speed}"


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
