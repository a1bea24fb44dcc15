"""Checks on request bodies and on the object a write computes, before anything is stored.

Strict like a real API server with ``fieldValidation=Strict``: unknown top-level or
metadata fields, a URL/body mismatch and invalid labels are refused, and only the
operator (or an administrator) may take the operator's finalizer off a workspace —
otherwise a plain user could delete a workspace before its container, volume and
archive are cleaned up (see docs/api.md).
"""

from __future__ import annotations

from typing import Any

from codehub.crd_like.models import (
    SpecDefaults,
    apply_spec_defaults,
    metadata_map_errors,
    validate_workspace_body,
)
from codehub.crd_like.store.interface import Conflict, Obj
from codehub.crd_like.store.semantics import clone

from .auth import Identity
from .bodies import short
from .context import WORKSPACES, ResourceKind
from .status import ApiError, bad_request, invalid

#: Added by the operator to every workspace it manages; holds deletion until the
#: workspace's engine resources are gone.
OPERATOR_FINALIZER = "codehub.io/finalizer"

SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
)
KNOWN_METADATA = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        *SERVER_METADATA,
    }
)
TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})


def name_of(body: Obj) -> str:
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def invalid_for(rk: ResourceKind, name: str, causes: list[tuple[str, str]]) -> ApiError:
    return invalid(rk.kind, name, rk.group, rk.plural, causes)


def structure_errors(body: Any, *, top_level: bool) -> list[tuple[str, str]]:
    """Unknown top-level or metadata fields (the server validates Strict)."""
    if not isinstance(body, dict):
        return [("", "the body must be a JSON object")]
    errors = []
    if top_level:
        errors = [(k, f'unknown field "{short(k)}"') for k in body if k not in TOP_LEVEL]
    meta = body.get("metadata")
    if isinstance(meta, dict):
        errors += [
            (f"metadata.{short(k)}", f'unknown field "metadata.{short(k)}"')
            for k in meta
            if k not in KNOWN_METADATA
        ]
    return errors


def require_type_meta(body: Obj) -> None:
    """A replacement must say what it is: kube-apiserver refuses a PUT without kind or
    apiVersion (400), and one without metadata would wipe labels and annotations."""
    for key in ("apiVersion", "kind"):
        if not body.get(key):
            raise bad_request(f"Object '{key}' is missing: a replacement needs {key}", key)
    if not isinstance(body.get("metadata"), dict):
        raise bad_request("Object 'metadata' is missing: a replacement needs metadata", "metadata")


def check_identity(rk: ResourceKind, body: Obj, namespace: str, name: str | None) -> None:
    """The body's kind, apiVersion, namespace and name must agree with the URL."""
    meta = body.get("metadata")
    if meta is None:
        meta = body["metadata"] = {}
    if not isinstance(meta, dict):
        raise invalid_for(rk, name or "", [("metadata", "must be an object")])
    kind = body.get("kind")
    if kind not in (None, rk.kind):
        raise bad_request(
            f'kind "{short(kind)}" does not match the URL\'s kind "{rk.kind}"', "kind"
        )
    api_version = body.get("apiVersion")
    if api_version not in (None, rk.api_version):
        raise bad_request(
            f'apiVersion "{short(api_version)}" does not match the URL\'s "{rk.api_version}"',
            "apiVersion",
        )
    body_ns = meta.get("namespace")
    if body_ns not in (None, "", namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the "
            f'request ("{short(body_ns)}" != "{namespace}")',
            "metadata.namespace",
        )
    if name is not None:
        body_name = meta.get("name")
        if body_name not in (None, "", name):
            raise bad_request(
                f'the name of the object ("{short(body_name)}") does not match the name on '
                f'the URL ("{name}")',
                "metadata.name",
            )


def validate(rk: ResourceKind, obj: Obj, *, check_status: bool) -> None:
    name = name_of(obj)
    causes = structure_errors(obj, top_level=rk is WORKSPACES)
    if rk is WORKSPACES:
        causes += [
            (e.field_path, e.message)
            for e in validate_workspace_body(obj, check_status=check_status)
        ]
    else:
        causes += event_errors(obj)
    if causes:
        raise invalid_for(rk, short(name, 253), causes)


def event_errors(obj: Obj) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [("metadata", "Required value: metadata must be an object")]
    name = meta.get("name")
    if not isinstance(name, str) or not name or len(name) > 253:
        errors.append(("metadata.name", "Required value: a name of at most 253 characters"))
    involved = obj.get("involvedObject")
    if involved is not None and not isinstance(involved, dict):
        errors.append(("involvedObject", "must be an object"))
    for key in ("reason", "message", "type", "action"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            errors.append((key, "must be a string"))
    errors += [(e.field_path, e.message) for e in metadata_map_errors(meta)]
    return errors


def guard_finalizer(
    rk: ResourceKind, current: Obj, new: Obj, identity: Identity | None, *, replacing: bool
) -> None:
    """Only the operator or an administrator may remove the operator's finalizer.

    A replacement (PUT) by a plain user that does not mention finalizers at all keeps
    the operator's, so ``kubectl replace`` of a hand-written manifest still works.
    """
    if rk is not WORKSPACES or identity is None or identity.privileged:
        return
    before = (current.get("metadata") or {}).get("finalizers") or []
    if OPERATOR_FINALIZER not in before:
        return
    meta = new["metadata"]
    if replacing and "finalizers" not in meta:
        meta["finalizers"] = list(before)
        return
    after = meta.get("finalizers")
    if isinstance(after, list) and OPERATOR_FINALIZER in after:
        return
    name = name_of(current)
    raise ApiError(
        403,
        f'{rk.qualified} "{name}" is forbidden: User "{identity.user}" cannot remove the '
        f'finalizer "{OPERATOR_FINALIZER}": only the operator removes it, once the '
        "workspace's container, volume and archive are cleaned up",
        details={"name": name, "group": rk.group, "kind": rk.plural},
    )


_KEPT_METADATA = ("creationTimestamp", "generation", "deletionTimestamp")


def _carry_server_metadata(meta: dict[str, Any], cur_meta: dict[str, Any]) -> None:
    """Server-owned metadata comes from the stored object, whatever the client sent."""
    if cur_meta.get("uid"):
        meta["uid"] = cur_meta["uid"]
    for key in (*_KEPT_METADATA, "deletionGracePeriodSeconds"):
        if key in cur_meta:
            meta[key] = cur_meta[key]
        else:
            meta.pop(key, None)
    meta.pop("managedFields", None)
    meta["resourceVersion"] = cur_meta.get("resourceVersion")


def finish(
    rk: ResourceKind,
    current: Obj,
    new: Any,
    *,
    subresource: str,
    namespace: str,
    name: str,
    defaults: SpecDefaults | None,
    identity: Identity | None = None,
    replacing: bool = False,
) -> Obj:
    """Checks shared by PUT and PATCH on the computed new object; raises to abort."""
    if not isinstance(new, dict):
        raise invalid_for(rk, name, [("", "the result must be a JSON object")])
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        raise invalid_for(rk, name, [("metadata", "must be an object")])
    cur_meta = current.get("metadata", {})
    for key in ("uid", "name", "namespace"):
        if key in meta and meta[key] not in (None, "") and meta[key] != cur_meta.get(key):
            raise invalid_for(
                rk,
                name,
                [
                    (
                        f"metadata.{key}",
                        f"Invalid value: {short(repr(meta[key]))}: field is immutable",
                    )
                ],
            )
    rv = meta.get("resourceVersion")
    if rv not in (None, "") and str(rv) != str(cur_meta.get("resourceVersion")):
        raise Conflict("resourceVersion is stale")
    meta["name"], meta["namespace"] = name, namespace
    _carry_server_metadata(meta, cur_meta)
    new["apiVersion"], new["kind"] = rk.api_version, rk.kind
    if subresource == "status":
        # Shares all but status with ``current``, the mutator's own copy: the store
        # takes only the status of a status write, and nothing here changes the rest.
        merged = dict(current)
        if "status" in new:
            merged["status"] = new["status"]
        else:
            merged.pop("status", None)
        new = merged
    else:
        guard_finalizer(rk, current, new, identity, replacing=replacing)
        if "status" in current:
            new["status"] = clone(current["status"])
        else:
            new.pop("status", None)
        if defaults is not None:
            new["spec"] = apply_spec_defaults(new.get("spec"), defaults)
    validate(rk, new, check_status=subresource == "status")
    out: Obj = new
    return out
