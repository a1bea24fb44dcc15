"""kopf's last-handled essence of each workspace, kept in memory for the leader's term.

kopf compares each event's *essence* (spec, labels, annotations) with the essence it last
handled, to tell a create from an update from a status-only change, and to hand the
update handler its diff. Its stock storage keeps that essence in an annotation, which
costs a PATCH after every handled create and every spec change (and, through that
PATCH, a watch event for every watcher and one more event for kopf to process). Nothing
here needs it to survive the term: create, resume and update all call the same
level-triggered reconcile, so a new term that sees every workspace as new (kopf's
*create* cause) reconciles each once, as a resume would
(docs/adr/0014-kopf-writes.md).

What is lost: a desired-state change made while no coordinator watched is reconciled
like any other workspace on the new term, but not counted in
``codehub_desired_state_changes_total`` (a per-process counter; the change itself is
still recorded by the annotations the API server stamps, docs/resource.md).

Entries are keyed by uid and dropped when the workspace is seen being deleted: a deleting
object's cause (delete, free, gone) never depends on the stored essence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

__all__ = ["TermDiffBaseStorage"]

#: Top-level keys that are never part of the essence (kopf's DiffBaseStorage.build).
_NOT_ESSENCE = frozenset({"apiVersion", "kind", "metadata", "status"})


class TermDiffBaseStorage(kopf.DiffBaseStorage):
    """See the module docstring. One instance per kopf run (``configure_kopf``)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._essences)

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        """kopf's own essence, computed from the part of the body it keeps: kopf deep-copies
        the whole body (status and managed fields included) before dropping all but spec,
        labels and annotations, on every watch event. Handlers with field filters
        (``extra_fields``) may look into status, so they get kopf's way."""
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        raw = cast(Mapping[str, Any], body)
        meta = raw.get("metadata") or {}
        slim: dict[str, Any] = {k: v for k, v in raw.items() if k not in _NOT_ESSENCE}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        uid = _uid(body)
        encoded = self._essences.pop(uid, None) if _deleting(body) else self._essences.get(uid)
        return None if encoded is None else cast(kopf.BodyEssence, json.loads(encoded))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Remember ``essence``; nothing goes into ``patch``, so kopf writes nothing."""
        if _deleting(body):
            return  # going away: nothing will be compared with it any more
        self._essences[_uid(body)] = json.dumps(essence, separators=(",", ":"))


def _uid(body: kopf.Body) -> str:
    return str(body.metadata.uid or f"{body.metadata.namespace}/{body.metadata.name}")


def _deleting(body: kopf.Body) -> bool:
    return bool(body.metadata.deletion_timestamp)
