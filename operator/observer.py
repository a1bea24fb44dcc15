"""Observing one workspace and writing what was seen (docs/observation.md).

The only module that decides ``observed_status``, ``display``, ``endpoint`` and
``observed_at``. The HealthMonitor's batch pass and the reconciler (after a failure, or
when its write could not carry them) call it to observe and write: plain calls, no
callback, and it never calls the reconciler back. An ERROR that no terminal error
explains yet (data vanished, a container without its volume) is *not* written here: the
caller hands the workspace to the reconcile gate, whose reconcile records why
(``error_info`` with ``previous_status`` still intact) and then observes.

A completed operation's observation is computed here too (``fields``, pure) but written
by the reconciler, inside the write that records the completion: the facts that decided
the completion are the observation's facts, so gathering them again and writing a second
time would cost an engine round trip, a status write and a watch event for nothing
(docs/adr/0013-fewer-writes-per-operation.md).

Every write is a JSON Patch conditional on the resourceVersion the observation was
computed from (status read first, so the facts are the newer of the two): an observation
made from stale facts never overwrites a newer one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from codehub.crd_like.client.api import ApiError
from codehub.crd_like.models import derive_display
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.observation import observe_detail
from codehub.operator.planning import Display, InstanceState, ObservedStatus, Operation, parse_enum
from codehub.operator.reconcile_view import Facts, gather_facts
from codehub.vocabulary.timestamps import format_rfc3339, parse_rfc3339

log = logging.getLogger(__name__)

_CONSISTENT_READ_ATTEMPTS = 3
#: Stand-in facts where the rules do not read them (a terminal error: rule 1).
NO_FACTS = Facts(InstanceState.ABSENT, False)


@dataclass(frozen=True)
class Seen:
    """One observation: what to write, and whether it still needs the reconciler."""

    observed: ObservedStatus
    display: Display
    endpoint: str | None
    uid: str = ""
    #: ERROR not explained by a terminal error: never written before it is recorded.
    unexplained: bool = False


def compute(obj: Obj, facts: Facts) -> Seen:
    """The observation of ``obj`` given ``facts`` (pure)."""
    status = obj.get("status") or {}
    archive_key = status.get("archive_key") or None
    terminal = is_terminal(obj)
    observation = observe_detail(
        facts.instance,
        facts.volume,
        terminal_error=terminal,
        previous=parse_enum(ObservedStatus, status.get("observed_status")),
        operation=parse_enum(Operation, status.get("operation"), Operation.NONE) or Operation.NONE,
        archive_key=archive_key,
        previous_status=parse_enum(ObservedStatus, status.get("previous_status")),
    )
    observed = observation.status
    running = observed is ObservedStatus.RUNNING and facts.instance is InstanceState.RUNNING
    return Seen(
        observed,
        derive_display(observed, archive_key),
        facts.endpoint if running else None,
        uid=str((obj.get("metadata") or {}).get("uid") or ""),
        unexplained=observed is ObservedStatus.ERROR and not terminal,
    )


def fields(obj: Obj, facts: Facts, now: datetime) -> dict[str, Any] | None:
    """The status fields that record the observation of ``obj`` given ``facts`` at
    ``now`` (pure): what a writer carrying the observation puts into ``/status``.

    None for an ERROR no terminal error explains: that is never written before the
    reconciler has recorded why, so no write may carry it.
    """
    seen = compute(obj, facts)
    if seen.unexplained:
        return None
    return _recorded(seen, now)


def _recorded(seen: Seen, now: datetime) -> dict[str, Any]:
    return {
        "observed_status": seen.observed.value,
        "display": seen.display.value,
        "endpoint": seen.endpoint,
        "observed_at": format_rfc3339(now, micro=True),
    }


def changed(obj: Obj, seen: Seen) -> bool:
    status = obj.get("status") or {}
    return (
        status.get("observed_status") != seen.observed.value
        or status.get("display") != seen.display.value
        or status.get("endpoint") != seen.endpoint
    )


#: An unchanged status's ``observed_at`` is rewritten once it is this many stale
#: thresholds old (an hour by default). Freshness does not depend on it: the
#: HealthMonitor measures staleness from its passes (docs/observation.md), so one write
#: per workspace per minute, 170 writes/s at 10,000 workspaces, buys nothing.
REFRESH_THRESHOLDS = 30

#: Confirmation writes a pass may always make, however few workspaces there are.
MIN_REFRESHES_PER_PASS = 16


def refresh_after(ctx: OperatorContext) -> float:
    """Seconds after which an unchanged status is confirmed again (docs/observation.md)."""
    return ctx.settings.health_monitor_stale_threshold * REFRESH_THRESHOLDS


def refresh_budget(workspaces: int, interval: float, period: float) -> int:
    """Confirmation writes one pass may make: twice the steady rate (``workspaces``
    each once per ``period``, passes every ``interval``), so a backlog drains (say, 10,000
    workspaces created in the same minute) without a pass that writes all of them."""
    steady = workspaces * max(interval, 0.0) / max(period, 1e-9)
    return max(MIN_REFRESHES_PER_PASS, math.ceil(2 * steady))


def due_refreshes(ages: Mapping[str, float], period: float, budget: int) -> set[str]:
    """The keys of ``ages`` (seconds since ``observed_at``) at least ``period`` old,
    oldest first, at most ``budget`` of them (pure)."""
    due = sorted(((age, key) for key, age in ages.items() if age >= period), reverse=True)
    return {key for _, key in due[: max(budget, 0)]}


def observed_age(obj: Obj, now: datetime) -> float | None:
    """Seconds since ``status.observed_at``; None if it is missing (never confirmed)."""
    at = parse_rfc3339((obj.get("status") or {}).get("observed_at"))
    return None if at is None else (now - at).total_seconds()


def needs_write(obj: Obj, seen: Seen, now: datetime, refresh: float) -> bool:
    """A change, or a confirmation worth writing: ``observed_at`` missing (never
    confirmed, or just recovered) or at least ``refresh`` seconds old."""
    if changed(obj, seen):
        return True
    age = observed_age(obj, now)
    return age is None or age >= refresh


async def write(ctx: OperatorContext, obj: Obj, seen: Seen) -> bool:
    """Write ``seen`` onto the status it was computed from; False if the workspace moved
    meanwhile (then it must be observed afresh). A vanished workspace counts as written."""
    return await _write(ctx, obj, seen) is not None


async def _write(ctx: OperatorContext, obj: Obj, seen: Seen) -> Obj | None:
    """``write``, answering the server's copy of the written workspace (``{}`` if it
    vanished) or None if the write was refused."""
    meta = obj.get("metadata") or {}
    status = {**(obj.get("status") or {}), **_recorded(seen, ctx.clock.now())}
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv(obj)},
        {"op": "add", "path": "/status", "value": status},
    ]
    written: Obj = {}
    try:
        written = await ctx.api.patch_json(
            str(meta.get("namespace")), str(meta.get("name")), ops, status=True
        )
    except ApiError as exc:
        if exc.conflict or exc.invalid:
            return None
        if not exc.not_found:
            raise
    log.info("%s: observed %s (display %s)", ref(obj), seen.observed.value, seen.display.value)
    return written if isinstance(written, dict) else {}


async def observe_one(ctx: OperatorContext, ns: str, name: str) -> Seen | None:
    """Observe one workspace now and write it if it changed.

    None if it is gone or kept moving. An unexplained ERROR is returned unwritten, and
    only from a still picture (status, facts, status with the same resourceVersion).
    """
    seen, _ = await observe_latest(ctx, ns, name)
    return seen


async def observe_latest(
    ctx: OperatorContext, ns: str, name: str, *, known: Obj | None = None
) -> tuple[Seen | None, Obj | None]:
    """``observe_one``, also answering the newest copy of the workspace it saw (the
    server's answer to its write, else what it read), so a caller can plan from it
    without reading again.

    ``known``: the server's answer to a write the caller just made; it stands in for the
    first read (the facts are still gathered after it, so they are the newer of the two).
    """
    for _ in range(_CONSISTENT_READ_ATTEMPTS):
        if known is not None and rv(known):
            obj, known = known, None
        else:
            try:
                obj = await ctx.api.get(ns, name)
            except ApiError as exc:
                if exc.not_found:
                    return None, None
                raise
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        # rule 1 needs no engine: a terminal error shows ERROR even while it is down
        facts = NO_FACTS if is_terminal(obj) else await gather_facts(ctx, uid)
        seen = compute(obj, facts)
        if seen.unexplained:
            if rv(await ctx.api.get(ns, name)) != rv(obj):
                continue  # read status, facts, status: trust only a still picture
            return seen, obj
        if needs_write(obj, seen, ctx.clock.now(), refresh_after(ctx)):
            written = await _write(ctx, obj, seen)
            if written is None:
                continue
            return seen, (written if rv(written) else None)
        return seen, obj
    log.info("%s/%s kept changing; observation deferred to the next pass", ns, name)
    return None, None


def is_terminal(obj: Obj) -> bool:
    err = (obj.get("status") or {}).get("error_info")
    return bool(isinstance(err, dict) and err.get("is_terminal"))


def rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def ref(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
