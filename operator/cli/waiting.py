"""Waiting for a workspace condition by watch (no polling), with a progress line.

Used by ``wait`` and by the ``--wait`` of ``delete``, ``start``, ``stop`` and ``archive``.
A timeout, a workspace in ERROR, or one deleted under the wait ends it with ``WaitFailed``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.crd_like.models import DesiredState, Display, ObservedStatus, Operation
from codehub.operator.cli.console import CliError, WaitFailed
from codehub.operator.cli.output import Progress, display_of, progress_text

Obj = dict[str, Any]
Check = Callable[[Obj | None], bool]


def gone(obj: Obj | None) -> bool:
    return obj is None


def display_is(value: str) -> Check:
    return lambda obj: obj is not None and display_of(obj) == value


_VALUES: dict[str, tuple[str, ...]] = {
    "display": tuple(Display),
    "observed_status": tuple(ObservedStatus),
    "operation": tuple(Operation),
    "desired_state": tuple(DesiredState),
}


def parse_condition(text: str) -> tuple[str, Check]:
    """``delete``, ``display=RUNNING``, ``observed_status=STANDBY``, ``operation=NONE``,
    ``desired_state=RUNNING`` (also with ``status.``/``spec.`` prefixes)."""
    raw = text.strip()
    if raw.lower() in ("delete", "deleted"):
        return "delete", gone
    key, sep, value = raw.partition("=")
    if not sep or not value:
        raise CliError(f"--for: expected delete or FIELD=VALUE, got {text!r}")
    key = key.strip().removeprefix("status.").removeprefix("spec.").lower()
    value = value.strip().upper()
    allowed = _VALUES.get("observed_status" if key == "observed" else key)
    if allowed is not None and value not in allowed:
        # A value the field never takes would wait out the whole timeout.
        raise CliError(f"--for: {key} is never {value!r}; it is one of {', '.join(allowed)}")
    if key == "display":
        return f"display={value}", display_is(value)
    if key in ("observed_status", "observed", "operation", "error_count"):
        field_name = "observed_status" if key == "observed" else key

        def check_status(obj: Obj | None) -> bool:
            return obj is not None and str((obj.get("status") or {}).get(field_name)) == value

        return f"{field_name}={value}", check_status
    if key == "desired_state":

        def check_spec(obj: Obj | None) -> bool:
            return obj is not None and str((obj.get("spec") or {}).get("desired_state")) == value

        return f"desired_state={value}", check_spec
    raise CliError(
        f"--for: unknown field {key!r} (use display, observed_status, operation, "
        "desired_state or delete)"
    )


@dataclass
class _Watcher:
    """One wait: judges each version of the workspace seen and keeps the progress line."""

    ns: str
    name: str
    check: Check
    label: str
    bar: Progress
    started: float = field(default_factory=time.monotonic)
    last: Obj | None = None

    def examine(self, obj: Obj | None) -> bool:
        self.last = obj
        self.bar.update(progress_text(obj), time.monotonic() - self.started)
        if self.check(obj):
            return True
        if obj is None:
            raise WaitFailed(
                f"workspace {self.ns}/{self.name} was deleted while waiting for {self.label}"
            )
        if display_of(obj) == "ERROR":
            info = (obj.get("status") or {}).get("error_info") or {}
            why = (
                ": ".join(str(x) for x in (info.get("reason"), info.get("message")) if x)
                or "no error_info"
            )
            raise WaitFailed(
                f"workspace {self.ns}/{self.name} is in ERROR ({' '.join(why.split())}); "
                f"an administrator can run `codehub recover {self.name} -n {self.ns}`"
            )
        return False

    async def follow(self, api: ApiClient) -> Obj | None:
        """GET, then watch from that version; a 410 or an ended stream starts over."""
        while True:
            try:
                obj: Obj | None = await api.get(self.ns, self.name)
            except ApiError as exc:
                if not exc.not_found:
                    raise
                obj = None
            if self.examine(obj):
                return obj
            assert obj is not None
            try:
                async for etype, event_obj in api.watch(
                    self.ns,
                    resource_version=obj["metadata"].get("resourceVersion"),
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=60,
                ):
                    if (event_obj.get("metadata") or {}).get("name") != self.name:
                        continue
                    seen = None if etype == "DELETED" else event_obj
                    if self.examine(seen):
                        return seen
            except ApiError as exc:
                if not exc.gone:
                    raise


async def wait_for(
    api: ApiClient,
    ns: str,
    name: str,
    check: Check,
    timeout_s: float,
    label: str,
    progress: bool = True,
    stream: TextIO | None = None,
) -> Obj | None:
    """Follow one workspace until ``check`` holds; the object that satisfied it (None
    once deleted)."""
    bar = Progress(stream or sys.stderr, f"waiting for {name} {label}", enabled=progress)
    watcher = _Watcher(ns, name, check, label, bar)
    try:
        return await asyncio.wait_for(watcher.follow(api), timeout_s)
    except TimeoutError:
        now_text = progress_text(watcher.last) if watcher.last is not None else "unknown"
        raise WaitFailed(
            f"timed out after {timeout_s:g}s waiting for {ns}/{name} {label} (now: {now_text})"
        ) from None
    finally:
        bar.finish()
