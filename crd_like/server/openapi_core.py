"""OpenAPI v3 documents of core/v1 (Event, Namespace) and authorization.k8s.io/v1
(SelfSubjectAccessReview, SelfSubjectRulesReview), so ``kubectl explain`` works for
every kind served.

kubectl finds a kind's schema by ``x-kubernetes-group-version-kind`` in the document of
its group-version; the schemas describe the subset this server stores and answers.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from .openapi import META, _object_meta_schema, _ref

CORE_PATH = "api/v1"
AUTHZ_PATH = "apis/authorization.k8s.io/v1"
CORE = "io.k8s.api.core.v1"
AUTHZ = "io.k8s.api.authorization.v1"


def _s(description: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "description": description, **extra}


def _obj(
    description: str, props: dict[str, Any], gvk: dict[str, str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "description": description, "properties": props}
    if gvk is not None:
        schema["x-kubernetes-group-version-kind"] = [gvk]
    return schema


def _typed(kind: str, api_version: str, what: str) -> dict[str, Any]:
    return {
        "apiVersion": _s(f"APIVersion of this object: {api_version}."),
        "kind": _s(f"Kind of this object: {kind}."),
        "metadata": {
            "allOf": [_ref(f"{META}.ObjectMeta")],
            "default": {},
            "description": f"Standard object's metadata of the {what}.",
        },
    }


def _event() -> dict[str, Any]:
    ref = _obj(
        "ObjectReference names the object an event is about.",
        {k: _s(f"{k} of the referent.") for k in ("apiVersion", "kind", "name", "namespace")}
        | {"uid": _s("UID of the referent."), "fieldPath": _s("Part of the referent.")},
    )
    stamp = {"type": "string", "format": "date-time"}
    return _obj(
        "Event is a report of an event somewhere in the cluster (kopf and the operator post "
        "them about workspaces; kubectl describe lists them).",
        {
            **_typed("Event", "v1", "event"),
            "involvedObject": {**ref, "description": "The object this event is about."},
            "reason": _s("Short, machine understandable reason for the transition."),
            "message": _s("A human-readable description of the status of this operation."),
            "type": _s("Type of this event (Normal, Warning)."),
            "count": _s("The number of times this event has occurred.", "integer"),
            "firstTimestamp": {**stamp, "description": "When the event was first recorded."},
            "lastTimestamp": {**stamp, "description": "When the event last occurred."},
            "eventTime": {**stamp, "description": "When this event was first observed."},
            "action": _s("What action was taken or failed."),
            "reportingComponent": _s("Name of the controller that emitted this event."),
            "reportingInstance": _s("ID of the controller instance."),
            "source": _obj(
                "The component reporting this event.",
                {"component": _s("Component name."), "host": _s("Node name.")},
            ),
        },
        {"group": "", "version": "v1", "kind": "Event"},
    )


def _namespace() -> dict[str, Any]:
    return _obj(
        "Namespace provides a scope for names. Here one exists per user (named after the "
        "user) plus every namespace holding a workspace; they are read-only.",
        {
            **_typed("Namespace", "v1", "namespace"),
            "spec": _obj(
                "Spec of the namespace.",
                {"finalizers": {"type": "array", "items": {"type": "string"}}},
            ),
            "status": _obj("Status of the namespace.", {"phase": _s("Always Active.")}),
        },
        {"group": "", "version": "v1", "kind": "Namespace"},
    )


def _ssar() -> dict[str, Any]:
    attrs = {
        k: _s(d)
        for k, d in (
            ("namespace", "The namespace of the action; empty for cluster scope."),
            ("verb", "A Kubernetes verb: get, list, watch, create, update, patch, delete."),
            ("group", "The API group of the resource."),
            ("version", "The API version of the resource."),
            ("resource", "The resource, e.g. workspaces."),
            ("subresource", "The subresource, e.g. status."),
            ("name", "The name of the object."),
        )
    }
    return _obj(
        "SelfSubjectAccessReview checks whether the current user can perform an action "
        "(kubectl auth can-i).",
        {
            **_typed("SelfSubjectAccessReview", "authorization.k8s.io/v1", "review"),
            "spec": _obj(
                "The action being checked; exactly one attribute set must be given.",
                {
                    "resourceAttributes": _obj("An action on a resource.", attrs),
                    "nonResourceAttributes": _obj(
                        "An action on a non-resource path.",
                        {"path": _s("The URL path."), "verb": _s("The HTTP verb.")},
                    ),
                },
            ),
            "status": _obj(
                "Filled in by the server: whether the action is allowed.",
                {
                    "allowed": _s("The action is allowed.", "boolean"),
                    "denied": _s("The action is denied.", "boolean"),
                    "reason": _s("Why the action is allowed or denied."),
                    "evaluationError": _s("An error while evaluating the review."),
                },
            ),
        },
        {"group": "authorization.k8s.io", "version": "v1", "kind": "SelfSubjectAccessReview"},
    )


def _op(action: str, gvk: dict[str, str], schema: str) -> dict[str, Any]:
    """kubectl explain finds a resource's kind through the operations of its paths."""
    ok = {"application/json": {"schema": _ref(schema)}}
    return {
        "operationId": f"{action}{gvk['kind']}",
        "responses": {"200": {"description": "OK", "content": ok}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }


def _paths(path: str) -> dict[str, Any]:
    if path == CORE_PATH:
        event = {"group": "", "version": "v1", "kind": "Event"}
        namespace = {"group": "", "version": "v1", "kind": "Namespace"}
        return {
            "/api/v1/namespaces/{namespace}/events": {"get": _op("list", event, f"{CORE}.Event")},
            "/api/v1/namespaces/{namespace}/events/{name}": {
                "get": _op("get", event, f"{CORE}.Event")
            },
            "/api/v1/namespaces": {"get": _op("list", namespace, f"{CORE}.Namespace")},
            "/api/v1/namespaces/{name}": {"get": _op("get", namespace, f"{CORE}.Namespace")},
        }
    out: dict[str, Any] = {}
    for kind in ("SelfSubjectAccessReview", "SelfSubjectRulesReview"):
        gvk = {"group": "authorization.k8s.io", "version": "v1", "kind": kind}
        out[f"/{AUTHZ_PATH}/{kind.lower()}s"] = {"post": _op("post", gvk, f"{AUTHZ}.{kind}")}
    return out


def _ssrr() -> dict[str, Any]:
    rule = {"type": "array", "items": {"type": "string"}}
    return _obj(
        "SelfSubjectRulesReview lists what the current user may do in a namespace "
        "(kubectl auth can-i --list).",
        {
            **_typed("SelfSubjectRulesReview", "authorization.k8s.io/v1", "review"),
            "spec": _obj(
                "The namespace to list the rules of.",
                {"namespace": _s("The namespace to evaluate rules for.")},
            ),
            "status": _obj(
                "Filled in by the server: the rules.",
                {
                    "resourceRules": {
                        "type": "array",
                        "description": "What may be done to which resources.",
                        "items": _obj(
                            "One rule.",
                            {k: rule for k in ("verbs", "apiGroups", "resources", "resourceNames")},
                        ),
                    },
                    "nonResourceRules": {
                        "type": "array",
                        "description": "What may be done to which non-resource URLs.",
                        "items": _obj("One rule.", {"verbs": rule, "nonResourceURLs": rule}),
                    },
                    "incomplete": _s("The list may be incomplete.", "boolean"),
                },
            ),
        },
        {"group": "authorization.k8s.io", "version": "v1", "kind": "SelfSubjectRulesReview"},
    )


def _document(path: str, schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.0",
        "info": {"title": "codehub", "version": "v1"},
        "paths": _paths(path),
        "components": {"schemas": {f"{META}.ObjectMeta": _object_meta_schema(), **schemas}},
    }


@lru_cache(maxsize=2)
def document_bytes(path: str) -> bytes:
    if path == CORE_PATH:
        doc = _document(path, {f"{CORE}.Event": _event(), f"{CORE}.Namespace": _namespace()})
    else:
        doc = _document(
            path,
            {
                f"{AUTHZ}.SelfSubjectAccessReview": _ssar(),
                f"{AUTHZ}.SelfSubjectRulesReview": _ssrr(),
            },
        )
    return json.dumps(doc, separators=(",", ":")).encode()


def index_entries() -> dict[str, Any]:
    out = {}
    for path in (CORE_PATH, AUTHZ_PATH):
        digest = hashlib.sha512(document_bytes(path)).hexdigest()[:64].upper()
        out[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return out
