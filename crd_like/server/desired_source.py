"""Who changed ``spec.desired_state``, and when: stamped by the server on every change.

The TTL Manager must never undo a user's decision made after a workspace's idle period
began (docs/activity-and-ttl.md), so it needs the time of the last change and whether
the TTL itself made it. The server is the one place that sees every write, so on each
write that changes ``spec.desired_state`` it sets:

- ``codehub.io/desired-state-changed-at``: the server's time of the change;
- ``codehub.io/desired-state-source``: the writer's declared source when the write
  declares one (a patch that sets the annotation, or any write that changes its value;
  the TTL Manager declares ``ttl``), else ``api``. So a user who changes desired_state
  after the TTL did is recorded as ``api`` even though the annotation still said ``ttl``.

Writes that leave desired_state alone leave both annotations as they are.
"""

from __future__ import annotations

from typing import Any

from codehub.crd_like.identity import DESIRED_CHANGED_AT_ANNOTATION, DESIRED_SOURCE_ANNOTATION
from codehub.crd_like.store.interface import Obj
from codehub.vocabulary.timestamps import now_rfc3339

SOURCE = DESIRED_SOURCE_ANNOTATION
CHANGED_AT = DESIRED_CHANGED_AT_ANNOTATION
DEFAULT_SOURCE = "api"
_SOURCE_POINTER = "/metadata/annotations/" + SOURCE.replace("~", "~0").replace("/", "~1")


def stamp(old: Obj | None, new: Obj, patch: Any = None, now: str | None = None) -> Obj:
    """Stamp ``new`` (in place, returned) if its desired_state differs from ``old``'s.

    ``patch`` is the request's merge patch (a dict) or JSON Patch (a list), if any.
    """
    if old is None or _desired(old) == _desired(new):
        return new
    meta = new.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    before = ((old.get("metadata") or {}).get("annotations") or {}).get(SOURCE)
    source = annotations.get(SOURCE)
    if not (isinstance(source, str) and source and (source != before or declares(patch))):
        source = DEFAULT_SOURCE
    annotations[SOURCE] = source
    annotations[CHANGED_AT] = now or now_rfc3339()
    meta["annotations"] = annotations
    return new


def declares(patch: Any) -> bool:
    """Whether a merge patch or JSON Patch sets the source annotation itself."""
    if isinstance(patch, dict):
        meta = patch.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        return isinstance(annotations, dict) and isinstance(annotations.get(SOURCE), str)
    if isinstance(patch, list):
        for op in patch:
            if not isinstance(op, dict) or op.get("op") not in ("add", "replace"):
                continue
            path, value = op.get("path"), op.get("value")
            if path == _SOURCE_POINTER:
                return True
            if path == "/metadata/annotations" and isinstance(value, dict) and SOURCE in value:
                return True
    return False


def _desired(obj: Obj) -> Any:
    spec = obj.get("spec")
    return spec.get("desired_state") if isinstance(spec, dict) else None
