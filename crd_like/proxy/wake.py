"""Auto-wake: a browser opening a sleeping workspace wakes it (docs/activity-and-ttl.md).

Only a page load wakes: a ``GET`` that asks for HTML and, when the browser says so
(``Sec-Fetch-Mode``), is a navigation. Scripts, assets and WebSocket upgrades get the
503 of a sleeping workspace, so a background tab cannot keep a workspace awake.

The wake is the same write as a user's ``codehub start``: ``spec.desired_state =
RUNNING`` with ``codehub.io/desired-state-source: wake``, through the store's atomic
admission check (docs/limits.md), so concurrent navigations never wake more
workspaces than the running limits allow.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from codehub.crd_like.server import desired_source
from codehub.crd_like.server.admission import LimitExceeded
from codehub.crd_like.store.interface import AdmissionCheck, Obj, Store, StoreError

from . import wake_pages
from .activity import WorkspaceRef
from .gate import default_not_running
from .routing import Forward
from .state import Caller, state_of

log = logging.getLogger(__name__)

WAKE_SOURCE = "wake"
Decision = Literal["wake", "wait", "error", "refuse"]


def is_navigation(method: str, headers: Any) -> bool:
    """A page load: GET asking for HTML, not an upgrade, and a navigation if the browser says."""
    if method != "GET" or headers.get("Upgrade", "").lower() == "websocket":
        return False
    if "text/html" not in headers.get("Accept", ""):
        return False
    mode = headers.get("Sec-Fetch-Mode")
    return mode is None or mode == "navigate"


def decide(obj: Obj) -> Decision:
    """What a page load of a workspace without an endpoint does (pure).

    ``wake`` writes desired RUNNING; ``wait`` shows the loading page without a write
    (it already asks to run); ``error`` shows the error page; ``refuse`` is the plain
    503 (being deleted).
    """
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "refuse"
    status = obj.get("status") or {}
    if status.get("observed_status") == "ERROR" or status.get("display") == "ERROR":
        return "error"
    if (obj.get("spec") or {}).get("desired_state") == "RUNNING":
        return "wait"
    return "wake"


class _Skip(Exception):
    """The stored object changed since the decision: nothing to write."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class WakeOutcome:
    result: Literal["woken", "limited", "failed", "unchanged"]
    limit: LimitExceeded | None = None


async def request_wake(store: Store, admit: AdmissionCheck | None, obj: Obj) -> WakeOutcome:
    """Set desired RUNNING (source ``wake``) on ``obj`` if it is still the same workspace.

    The admission check runs inside the store's writing transaction, as for a user's
    change: at the limit the write is refused and nothing is stored.
    """
    meta = obj.get("metadata") or {}
    uid = meta.get("uid")

    def mutate(current: Obj) -> Obj:
        cur_meta = current.get("metadata") or {}
        if cur_meta.get("uid") != uid or cur_meta.get("deletionTimestamp"):
            raise _Skip("replaced or being deleted")
        if (current.get("spec") or {}).get("desired_state") == "RUNNING":
            raise _Skip("already asked to run")
        old = copy.deepcopy(current)
        current["spec"] = {**(current.get("spec") or {}), "desired_state": "RUNNING"}
        annotations = dict(cur_meta.get("annotations") or {})
        annotations[desired_source.SOURCE] = WAKE_SOURCE
        current["metadata"] = {**cur_meta, "annotations": annotations}
        declared = {"metadata": {"annotations": {desired_source.SOURCE: WAKE_SOURCE}}}
        return desired_source.stamp(old, current, declared)

    try:
        await store.update(
            "workspaces", str(meta.get("namespace")), str(meta.get("name")), mutate, admit=admit
        )
    except _Skip:
        return WakeOutcome("unchanged")
    except LimitExceeded as exc:
        return WakeOutcome("limited", exc)
    except StoreError as exc:
        log.warning("proxy: wake of %s/%s failed: %r", meta.get("namespace"), meta.get("name"), exc)
        return WakeOutcome("failed")
    return WakeOutcome("woken")


async def wake_not_running(
    request: web.Request, obj: Obj, caller: Caller, fwd: Forward
) -> web.StreamResponse:
    """The proxy's answer for a workspace without an endpoint: wake, wait, or explain."""
    if not is_navigation(request.method, request.headers):
        return await default_not_running(request, obj, caller, fwd)
    decision = decide(obj)
    if decision == "refuse":
        return await default_not_running(request, obj, caller, fwd)
    if decision == "error":
        return wake_pages.error_page(obj)
    state = state_of(request)
    woke = False
    if decision == "wake":
        outcome = await request_wake(state.ctx.store, state.ctx.admit, obj)
        if outcome.result in ("woken", "limited", "failed"):
            state.metrics.wakes.labels(outcome.result).inc()
        if outcome.limit is not None:
            state.ctx.metrics.admission_refusals.labels(outcome.limit.limit_type).inc()
            return wake_pages.limited_page(outcome.limit, fwd.namespace, fwd.name)
        if outcome.result == "failed":
            return await default_not_running(request, obj, caller, fwd)
        woke = outcome.result == "woken"
        if woke:
            state.tracker.touch_soon(WorkspaceRef.of(obj), WAKE_SOURCE)
    return wake_pages.loading_page(obj, fwd, woken=woke)
