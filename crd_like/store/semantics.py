"""Pure rules shared by every Store backend, so PostgreSQL and memory behave identically.

Nothing here does I/O: the backends read, lock and write; these functions decide what a
create, update or delete turns into, whether an object matches selectors, which watch
event a log entry becomes, and how continue tokens are encoded.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from codehub.crd_like.store.interface import (
    Conflict,
    Gone,
    Invalid,
    Obj,
    RawListResult,
    Selectors,
)

__all__ = ["RawListResult"]

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

IMMUTABLE_METADATA = ("uid", "name", "namespace", "creationTimestamp")
_SCALARS = (str, int, float, bool, type(None))
_T = TypeVar("_T")


def clone(obj: _T) -> _T:
    """A deep copy of a JSON-shaped value, about five times faster than ``copy.deepcopy``
    (no memo: JSON has no cycles); other types are deep-copied the usual way. Every
    write copies the object at least once, so this is on the hot path
    (docs/adr/0007-api-write-path-performance.md)."""
    kind = type(obj)
    if kind is dict:
        return {k: clone(v) for k, v in obj.items()}  # type: ignore[attr-defined,return-value]
    if kind is list:
        return [clone(v) for v in obj]  # type: ignore[attr-defined,return-value]
    if kind in _SCALARS:
        return obj
    return copy.deepcopy(obj)


def ns_key(namespace: str | None) -> str:
    """Cluster-scoped objects are stored under the empty namespace."""
    return namespace or ""


def meta(obj: Obj) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        raise Invalid("metadata must be an object", "metadata")
    return m


def prepare_create(obj: Obj, namespace: str | None, timestamp: str) -> Obj:
    """The object to insert, minus its revision: server-set metadata filled in.

    A deletionTimestamp on a new object is meaningless and dropped, as Kubernetes does.
    """
    new = clone(obj)
    m = meta(new)
    name = m.get("name")
    if not isinstance(name, str) or not name:
        raise Invalid("a name is required", "metadata.name")
    if namespace:
        m["namespace"] = namespace
    else:
        m.pop("namespace", None)
    m["uid"] = str(uuid.uuid4())
    m["creationTimestamp"] = timestamp
    m["generation"] = 1
    m.pop("resourceVersion", None)
    m.pop("deletionTimestamp", None)
    m.pop("deletionGracePeriodSeconds", None)
    return new


def _without_rv(obj: Obj) -> Obj:
    out = dict(obj)
    m = dict(out.get("metadata") or {})
    m.pop("resourceVersion", None)
    out["metadata"] = m
    return out


@dataclass(frozen=True)
class UpdatePlan:
    """What an update turns into: the new object (without its resourceVersion) and
    whether it is to be removed (deletionTimestamp set and no finalizers left)."""

    obj: Obj
    remove: bool


def apply_update(current: Obj, result: Obj, subresource: str | None) -> UpdatePlan | None:
    """Merge a mutator's ``result`` into ``current`` under Kubernetes update rules.

    Returns None when nothing changes (no revision is allocated for a no-op write).
    ``status`` comes from ``result`` only for the status subresource; for a main-resource
    update it is kept from ``current``. Immutable metadata may be omitted (kept) but not
    changed. ``deletionTimestamp`` can only be set by delete and never cleared; a
    deletion in progress accepts no new finalizers.
    """
    if not isinstance(result, dict):
        raise Invalid("the object must be a JSON object", "")
    if subresource == "status":
        new = _status_update(current, result)
    elif subresource is None:
        new = _main_update(current, result)
    else:
        raise Invalid(f"unknown subresource {subresource!r}", "")
    if _without_rv(new) == _without_rv(current):
        return None
    new_meta = meta(new)
    new_meta.pop("resourceVersion", None)
    remove = bool(new_meta.get("deletionTimestamp")) and not new_meta.get("finalizers")
    return UpdatePlan(new, remove)


def _status_update(current: Obj, result: Obj) -> Obj:
    """``current`` with the result's status: the old status is replaced, so it is not
    copied (a status write's copies are most of its cost in the store)."""
    new = {k: None if k == "status" else clone(v) for k, v in current.items()}
    if "status" in result and result["status"] is not None:
        new["status"] = clone(result["status"])
    else:
        new.pop("status", None)
    return new


def _main_update(current: Obj, result: Obj) -> Obj:
    cur_meta = meta(current)
    new = clone(result)
    if "status" in current:
        new["status"] = clone(current["status"])
    else:
        new.pop("status", None)
    new_meta = meta(new)
    for key in IMMUTABLE_METADATA:
        if key not in cur_meta:
            continue
        if key not in new_meta or new_meta[key] is None:
            new_meta[key] = cur_meta[key]
        elif new_meta[key] != cur_meta[key]:
            raise Invalid(f"field is immutable: metadata.{key}", f"metadata.{key}")
    for key in ("apiVersion", "kind"):
        if key in current:
            new[key] = current[key]
    new_meta["generation"] = cur_meta.get("generation", 1)
    _keep_deletion(cur_meta, new_meta)
    if not new_meta.get("finalizers"):
        new_meta.pop("finalizers", None)
    if new.get("spec") != current.get("spec"):
        new_meta["generation"] = int(new_meta["generation"]) + 1
    return new


def _keep_deletion(cur_meta: dict[str, Any], new_meta: dict[str, Any]) -> None:
    """Only delete sets deletionTimestamp and nothing clears it; a deletion in progress
    accepts no new finalizers."""
    if not cur_meta.get("deletionTimestamp"):
        new_meta.pop("deletionTimestamp", None)
        new_meta.pop("deletionGracePeriodSeconds", None)
        return
    new_meta["deletionTimestamp"] = cur_meta["deletionTimestamp"]
    if "deletionGracePeriodSeconds" in cur_meta:
        new_meta["deletionGracePeriodSeconds"] = cur_meta["deletionGracePeriodSeconds"]
    added = set(new_meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
    if added:
        raise Invalid(
            "no new finalizers can be added if the object is being deleted, "
            f"found new finalizers {sorted(added)}",
            "metadata.finalizers",
        )


def check_delete_preconditions(
    current: Obj, expected_resource_version: str | None, expected_uid: str | None
) -> None:
    m = meta(current)
    if expected_uid is not None and m.get("uid") != expected_uid:
        raise Conflict(
            f"Precondition failed: UID in precondition: {expected_uid}, "
            f"UID in object meta: {m.get('uid')}"
        )
    if expected_resource_version is not None and m.get("resourceVersion") != str(
        expected_resource_version
    ):
        raise Conflict(
            "Precondition failed: ResourceVersion in precondition: "
            f"{expected_resource_version}, ResourceVersion in object meta: "
            f"{m.get('resourceVersion')}"
        )


def mark_deleting(current: Obj, timestamp: str) -> Obj:
    """The object with deletionTimestamp set; generation goes up, as in Kubernetes."""
    new = clone(current)
    m = meta(new)
    m["deletionTimestamp"] = timestamp
    m["deletionGracePeriodSeconds"] = 0
    m["generation"] = int(m.get("generation", 1)) + 1
    m.pop("resourceVersion", None)
    return new


def with_revision(obj: Obj, revision: int) -> Obj:
    meta(obj)["resourceVersion"] = str(revision)
    return obj


def lookup(obj: Any, dotted: str) -> Any:
    node = obj
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _field_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return None
    return str(value)


def matches(obj: Obj | None, selectors: Selectors | None) -> bool:
    """Equality label selectors; field selectors as dotted-path equality on the body."""
    if obj is None:
        return False
    if selectors is None:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for key, value in selectors.labels.items():
        if labels.get(key) != value:
            return False
    for key, value in selectors.not_labels.items():
        if labels.get(key) == value:
            return False
    for path, value in selectors.fields.items():
        actual = _field_text(lookup(obj, path))
        if path == "metadata.namespace" and actual is None:
            actual = ""
        if actual != value:
            return False
    return True


def watch_type(
    event_type: str, prev: Obj | None, new: Obj | None, selectors: Selectors | None
) -> EventType | None:
    """The event a watcher with ``selectors`` sees for one log entry (None: nothing).

    As Kubernetes does: an object that starts matching is ADDED, one that stops
    matching is DELETED (carrying its new state), one that matched before and after is
    MODIFIED.
    """
    if event_type == "DELETED":
        return "DELETED" if matches(new, selectors) else None
    now_ok = matches(new, selectors)
    if event_type == "ADDED":
        return "ADDED" if now_ok else None
    if selectors is None or not (selectors.labels or selectors.fields or selectors.not_labels):
        return "MODIFIED"
    was_ok = matches(prev, selectors)
    if now_ok:
        return "MODIFIED" if was_ok else "ADDED"
    return "DELETED" if was_ok else None


@dataclass(frozen=True)
class ContinueToken:
    """Where a paginated list resumes: the first page's revision and the last key."""

    revision: int
    namespace: str
    name: str

    def encode(self) -> str:
        raw = json.dumps({"v": 1, "rv": self.revision, "ns": self.namespace, "n": self.name})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode(token: str) -> ContinueToken:
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            return ContinueToken(int(data["rv"]), str(data["ns"]), str(data["n"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise Invalid("invalid continue token", "continue") from exc


def gone(revision: int, floor: int) -> Gone:
    return Gone(
        f"too old resource version: {revision} ({floor}): the history before it was compacted"
    )
