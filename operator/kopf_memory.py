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

Beside the essence, a digest of the handled body's essential parts (every top-level key
but apiVersion, kind, metadata and status; labels; annotations) answers ``unchanged``:
the same parts make the same essence, so ``kopf_skip`` can tell a status-only event
without building and diffing one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

__all__ = ["KeyCachingProgressStorage", "TermDiffBaseStorage"]

#: Top-level keys that are never part of the essence (kopf's DiffBaseStorage.build).
_NOT_ESSENCE = frozenset({"apiVersion", "kind", "metadata", "status"})


class TermDiffBaseStorage(kopf.DiffBaseStorage):
    """See the module docstring. One instance per kopf run (``configure_kopf``)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, str] = {}
        #: uid -> digest of the parts of the body whose essence is in ``_essences``.
        self._handled: dict[str, bytes] = {}

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
        slim = _parts(_raw(body))
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        uid = _uid(body)
        if _deleting(body):
            self._handled.pop(uid, None)
            encoded = self._essences.pop(uid, None)
        else:
            encoded = self._essences.get(uid)
        return None if encoded is None else cast(kopf.BodyEssence, json.loads(encoded))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Remember ``essence``; nothing goes into ``patch``, so kopf writes nothing."""
        if _deleting(body):
            return  # going away: nothing will be compared with it any more
        raw = _raw(body)
        uid = _raw_uid(raw)
        self._essences[uid] = json.dumps(essence, separators=(",", ":"))
        self._handled[uid] = _digest(raw)

    def unchanged(self, raw: Mapping[str, Any]) -> bool:
        """Whether ``raw`` has exactly the essential parts of the body last handled."""
        handled = self._handled.get(_raw_uid(raw))
        return handled is not None and handled == _digest(raw)

    def adopt(self, raw: Mapping[str, Any], progress: kopf.ProgressStorage) -> None:
        """After kopf processed ``raw``: if its parts differ from the handled body's but
        its essence is the handled one (a noop to kopf, which then stores nothing), let
        ``unchanged`` answer for these parts from now on."""
        uid = _raw_uid(raw)
        encoded = self._essences.get(uid)
        if (
            encoded is None
            or self.unchanged(raw)
            or (raw.get("metadata") or {}).get("deletionTimestamp")
        ):
            return
        handled = progress.clear(essence=cast(kopf.BodyEssence, json.loads(encoded)))
        essence = progress.clear(essence=self.build(body=kopf.Body(cast(kopf.RawBody, raw))))
        if essence == handled:
            self._handled[uid] = _digest(raw)


class KeyCachingProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage, with each handler's annotation names formed
    once instead of several times per handled event (kopf forms, hashes and marks them
    anew in every fetch, store and purge). The names depend on the handler id, the
    prefix, and on the body only for a ReplicaSet owned by a Deployment (kopf's
    ``mark_key``), which is left to kopf."""

    def __init__(self, *, prefix: str) -> None:
        super().__init__(prefix=prefix)
        self._keys: dict[str, tuple[str, ...]] = {}

    def make_keys(self, key: str, *, body: kopf.Body | None = None) -> Iterable[str]:
        if body is not None and cast(Mapping[str, Any], body).get("kind") == "ReplicaSet":
            return super().make_keys(key, body=body)
        keys = self._keys.get(key)
        if keys is None:
            keys = self._keys[key] = tuple(super().make_keys(key))
        return keys


def _parts(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a body its essence is made of (not copied)."""
    meta = raw.get("metadata") or {}
    slim: dict[str, Any] = {k: v for k, v in raw.items() if k not in _NOT_ESSENCE}
    slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    return slim


def _digest(raw: Mapping[str, Any]) -> bytes:
    encoded = json.dumps(_parts(raw), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(encoded.encode(), digest_size=16).digest()


def _raw_uid(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


def _raw(body: kopf.Body) -> Mapping[str, Any]:
    """The raw dict under kopf's body view, read directly: through the view, every key
    is resolved from the root again (kopf's ``MappingView``). The view itself when it is
    not a whole body."""
    src = getattr(body, "_src", None)
    if isinstance(src, Mapping) and not getattr(body, "_path", None):
        return src
    return cast(Mapping[str, Any], body)


def _uid(body: kopf.Body) -> str:
    return _raw_uid(_raw(body))


def _deleting(body: kopf.Body) -> bool:
    return bool((_raw(body).get("metadata") or {}).get("deletionTimestamp"))
