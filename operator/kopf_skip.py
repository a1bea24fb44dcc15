"""kopf passes over the status-only events of workspaces it has already handled.

Every status write the reconciler makes (about three per new workspace) comes back to
kopf as a MODIFIED watch event. kopf runs its whole per-event machinery on each — a
memory lookup, three loggers, a patch, the essence built and diffed, the cause detected,
the finalizer checked — only to find its *noop* cause: the essence (spec, labels,
annotations) is the one it last handled, and no handler runs. That was about a third of
kopf's share of the coordinator's CPU while thousands converge
(docs/adr/0014-kopf-writes.md, "2026-11-28, session 6").

kopf has no hook before that machinery (its filters are applied after the cause is
detected), so ``install`` wraps the function kopf's ``spawn_tasks`` binds as the
processor of every watch event, ``kopf._core.reactor.processing.process_resource_event``
(looked up when kopf starts, so installing before ``kopf.operator`` is enough). The
wrapper returns at once, as kopf's own processing of a noop returns, when all of these
hold, and otherwise hands the event to kopf untouched:

- the event is a MODIFIED one (never the initial listing, ADDED or DELETED);
- kopf's last-handled essence lives in ``TermDiffBaseStorage`` and the event's spec,
  labels and annotations are exactly those of the body kopf last handled (``unchanged``:
  a digest of those parts, so the essence, a function of them, is the same);
- the workspace is not being deleted and carries the finalizer (else kopf adds it);
- kopf's memory of it says fully handled, nothing left to patch, no daemon;
- the registry has no per-event, daemon or index handlers for the resource (those
  need every event; ours has none).

What kopf would have done for such an event: nothing but debug logs (the noop cause runs
no handler, patches nothing, sleeps for nothing). Deletions, spec and metadata changes,
creates and resumes still reach kopf. Reactions to status changes never came from kopf:
observations go through the reconcile gate (HealthMonitor, safety net).

When kopf did process an event whose parts differ but whose essence is the handled one
(its own progress annotations purged after a retry, say), the digest is moved to that
body (``TermDiffBaseStorage.adopt``), so the later status events skip again.

``tests/unit/operator/test_kopf_skip.py`` pins the kopf internals this relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kopf._core.reactor import processing

from codehub.operator.kopf_memory import TermDiffBaseStorage

__all__ = ["install", "installed", "skippable", "skipped"]

log = logging.getLogger(__name__)

_ATTR = "__codehub_skips_status_only__"
#: Events passed over since the process started (every kopf run in it; tests, benchmark).
_skipped = [0]


def skipped() -> int:
    return _skipped[0]


def installed() -> bool:
    return bool(getattr(processing.process_resource_event, _ATTR, False))


def install() -> None:
    """Wrap kopf's per-event processor (idempotent; process-wide, for every kopf run)."""
    if installed():
        return
    original = processing.process_resource_event

    async def process_resource_event(**kwargs: Any) -> str | None:
        raw_event = kwargs["raw_event"]
        settings: kopf.OperatorSettings = kwargs["settings"]
        storage = settings.persistence.diffbase_storage
        if not isinstance(storage, TermDiffBaseStorage) or raw_event.get("type") != "MODIFIED":
            return await original(**kwargs)
        try:
            skip = await skippable(storage=storage, **kwargs)
        except Exception:  # outside kopf's error throttling: an error here would stop kopf
            log.exception("kopf_skip: cannot tell a status-only event; kopf processes it")
            skip = False
        if skip:
            _skipped[0] += 1
            return None
        result = await original(**kwargs)
        try:
            storage.adopt(raw_event["object"], settings.persistence.progress_storage)
        except Exception:
            log.exception("kopf_skip: cannot adopt the parts of a processed event")
        return result

    setattr(process_resource_event, _ATTR, True)
    process_resource_event.__wrapped__ = original  # type: ignore[attr-defined]
    processing.process_resource_event = process_resource_event  # type: ignore[assignment]


async def skippable(
    *,
    storage: TermDiffBaseStorage,
    raw_event: Mapping[str, Any],
    settings: kopf.OperatorSettings,
    registry: kopf.OperatorRegistry,
    resource: kopf.Resource,
    memories: Any,
    memobase: Any = None,
    **_: Any,
) -> bool:
    """Whether kopf's processing of ``raw_event`` would find a noop (module docstring)."""
    body = raw_event.get("object")
    if raw_event.get("type") != "MODIFIED" or not isinstance(body, Mapping):
        return False
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    if settings.persistence.finalizer not in (meta.get("finalizers") or ()):
        return False
    if not storage.unchanged(body):
        return False
    if (
        registry._watching.has_handlers(resource=resource)
        or registry._spawning.has_handlers(resource=resource)
        or registry._indexing.has_handlers(resource=resource)
    ):
        return False
    memory = await memories.recall(body, memobase=memobase, noticed_by_listing=False)
    return bool(
        memory.fully_handled_once
        and not memory.remaining_patch
        and memory.daemons_memory.live_fresh_body is None
    )
