"""Administrator recovery of a workspace in ERROR, done by the server (docs/errors.md).

An administrator asks for it by setting the annotation ``codehub.io/recover`` (any
value), from kubectl (``kubectl annotate ws NAME codehub.io/recover=$(date +%s)``) or
with ``codehub recover``. The server then, within the one request:

1. refuses anyone who is not an administrator (403), before writing anything;
2. writes the recovered status: ``error_info`` and ``op_started_at`` removed,
   ``error_count`` 0, ``operation`` NONE, ``op_id`` kept (an archive the failed operation
   already uploaded is reused), and an ``observed_status`` of ERROR replaced by the
   ``previous_status`` recorded with the error (or removed when there is none), with the
   matching ``display`` and without ``observed_at`` (not confirmed by an observation yet);
3. writes the metadata change without ``codehub.io/recover`` but with
   ``codehub.io/recovered-at`` (the time). That annotation change is what the operator's
   watch reacts to (a status-only change starts no reconcile), and the reconcile it
   starts reads the already recovered status and observes the workspace.

The annotation is never stored, so a later write does not recover again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from codehub.crd_like.models import derive_display
from codehub.crd_like.store.interface import Store, StoreError

from .auth import Identity
from .context import ResourceKind, store_error
from .status import ApiError

RECOVER_ANNOTATION = "codehub.io/recover"
RECOVERED_AT_ANNOTATION = "codehub.io/recovered-at"
_JSON_POINTER = "/metadata/annotations/" + RECOVER_ANNOTATION.replace("~", "~0").replace("/", "~1")

Obj = dict[str, Any]


def requested(doc: Any) -> bool:
    """Whether a PUT body, merge patch or JSON Patch sets the recover annotation."""
    if isinstance(doc, Mapping):
        meta = doc.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
        return isinstance(annotations, Mapping) and annotations.get(RECOVER_ANNOTATION) is not None
    if isinstance(doc, list):
        for op in doc:
            if not isinstance(op, Mapping) or op.get("op") not in ("add", "replace"):
                continue
            path, value = op.get("path"), op.get("value")
            if path == _JSON_POINTER:
                return True
            if path == "/metadata" and isinstance(value, Mapping):
                value = value.get("annotations")
            elif path != "/metadata/annotations":
                continue
            if isinstance(value, Mapping) and value.get(RECOVER_ANNOTATION) is not None:
                return True
    return False


def refuse_unless_admin(identity: Identity | None, kind: str, group: str, name: str) -> None:
    if identity is not None and identity.is_admin:
        return
    user = identity.user if identity is not None else "system:anonymous"
    raise ApiError(
        403,
        f'{kind}.{group} "{name}" is forbidden: User "{user}" cannot recover workspaces: '
        f"the {RECOVER_ANNOTATION} annotation is reserved to administrators",
        details={"name": name, "group": group, "kind": kind},
    )


def recovered_status(status: Mapping[str, Any] | None) -> Obj:
    """The status after recovery; see the module docstring. Pure."""
    out: Obj = copy.deepcopy(dict(status or {}))
    out.pop("error_info", None)
    out.pop("op_started_at", None)
    out["error_count"] = 0
    out["operation"] = "NONE"
    if out.get("observed_status") == "ERROR":
        # What comes back is what was seen before the error, not a fresh observation:
        # without observed_at it reads as unconfirmed until the operator observes it.
        out.pop("observed_at", None)
        previous = out.get("previous_status")
        if previous and previous != "ERROR":
            out["observed_status"] = previous
            out["display"] = derive_display(previous, out.get("archive_key")).value
        else:
            out.pop("observed_status", None)
            out.pop("display", None)
    out.pop("previous_status", None)
    return out


def with_recovered_status(obj: Obj) -> Obj:
    """``obj`` with its status recovered (the status-subresource mutator)."""
    out = copy.deepcopy(obj)
    out["status"] = recovered_status(obj.get("status"))
    return out


async def write_recovered_status(store: Store, plural: str, namespace: str, name: str) -> Obj:
    """Step 2, on the status subresource: its own revision, before the metadata write."""
    return await store.update(plural, namespace, name, with_recovered_status, subresource="status")


async def begin(
    store: Store,
    identity: Identity | None,
    rk: ResourceKind,
    namespace: str,
    name: str,
    *,
    dry_run: bool,
) -> None:
    """Steps 1 and 2, before the request's own write (which then calls ``finish``)."""
    refuse_unless_admin(identity, rk.plural, rk.group, name)
    if dry_run:
        return
    try:
        await write_recovered_status(store, rk.plural, namespace, name)
    except StoreError as exc:
        raise store_error(exc, rk, name) from None


def finish(result: Obj, recovering: bool, now: str) -> Obj:
    """Step 3 on the metadata write's result; on any other write, drop a request
    annotation that got in some other way (a JSON Patch ``copy``), never storing it."""
    if recovering:
        return consume(result, now)
    strip(result)
    return result


def consume(obj: Obj, now: str) -> Obj:
    """Drop the request annotation and record when the recovery happened."""
    meta = obj.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(RECOVER_ANNOTATION, None)
    annotations[RECOVERED_AT_ANNOTATION] = now
    meta["annotations"] = annotations
    return obj


def strip(obj: Obj) -> bool:
    """Remove a stored-to-be recover annotation; whether there was one."""
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict) or RECOVER_ANNOTATION not in annotations:
        return False
    del annotations[RECOVER_ANNOTATION]
    if not annotations:
        meta.pop("annotations", None)  # type: ignore[union-attr]
    return True
