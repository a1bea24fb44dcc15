"""OpenAPI v3 documents built from the CRD schema.

kubectl looks for the ``fieldValidation`` parameter on the resource's PATCH
operation (matched by ``x-kubernetes-group-version-kind``) to decide that the server
validates, and ``kubectl explain`` reads the schema carrying the same extension. The
v2 endpoint is not served: kubectl asks for protobuf there; kubectl 1.29 and newer use
v3 (see docs/api.md for the supported range).
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from typing import Any

from codehub.crd_like.crd import openapi_schema
from codehub.crd_like.identity import API_VERSION, GROUP, KIND, LIST_KIND, PLURAL, VERSION

GV_PATH = f"apis/{GROUP}/{VERSION}"
#: The kubectl release the end-to-end tests run (docs/api.md states the supported range).
TESTED_KUBECTL = "kubectl 1.32"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
WS_REF = f"io.codehub.{VERSION}.{KIND}"
WS_LIST_REF = f"io.codehub.{VERSION}.{LIST_KIND}"
GVK = {"group": GROUP, "version": VERSION, "kind": KIND}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, description: str, type_: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": type_, "uniqueItems": True},
    }


_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted.")
_FIELD_MANAGER = _query("fieldManager", "A name associated with the actor making these changes.")
_FIELD_VALIDATION = _query(
    "fieldValidation",
    "How the server treats unknown or duplicate fields: Ignore, Warn or Strict. "
    "This server always refuses unknown fields in spec (Strict).",
)
_PRETTY = _query("pretty", "If 'true', then the output is pretty printed.")
_LIST_PARAMS = [
    _query("allowWatchBookmarks", "Request BOOKMARK watch events.", "boolean"),
    _query("continue", "The continue token of a previous page."),
    _query("fieldSelector", "metadata.name= and metadata.namespace= equality selectors."),
    _query("labelSelector", "Equality label selectors (a=b,c==d)."),
    _query("limit", "Maximum number of items in one page.", "integer"),
    _query("resourceVersion", "Where a watch starts; 0 or empty means the current state."),
    _query("resourceVersionMatch", "Accepted and ignored."),
    _query("sendInitialEvents", "Send ADDED for the current state, then a bookmark.", "boolean"),
    _query("timeoutSeconds", "Watch duration limit.", "integer"),
    _query("watch", "Stream changes instead of listing.", "boolean"),
]


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {media: {"schema": schema} for media in ("application/json", "application/yaml")}


def _op(
    op_id: str,
    action: str,
    description: str,
    *,
    response: str,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [f"codehubIo_{VERSION}"],
        "description": description,
        "operationId": op_id,
        "parameters": list(params or []),
        "responses": _responses(action, response),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(GVK),
    }
    if body is not None:
        op["requestBody"] = body
    return op


#: The refusals each action can answer, besides 401 (no or bad token) and 403.
_ERRORS: dict[str, tuple[str, ...]] = {
    "list": ("400", "406", "410", "429", "504"),
    "get": ("400", "404", "406"),
    "post": ("400", "406", "409", "413", "415", "422", "429"),
    "put": ("400", "404", "406", "409", "413", "415", "422", "429"),
    "patch": ("400", "404", "406", "409", "413", "415", "422", "429"),
    "delete": ("400", "404", "406", "409", "415"),
    "deletecollection": ("400", "406", "415"),
}
_ERROR_TEXT = {
    "400": "BadRequest: malformed body, parameter or selector; body nested too deeply",
    "401": "Unauthorized",
    "403": "Forbidden: another user's namespace, /status, or the operator's finalizer",
    "404": "NotFound",
    "406": "NotAcceptable: only application/json is served",
    "409": "Conflict or AlreadyExists",
    "410": "Expired: the continue token's history is compacted",
    "413": "RequestEntityTooLarge",
    "415": "UnsupportedMediaType",
    "422": "Invalid: a field is invalid (details.causes name each)",
    "429": "TooManyRequests: a running limit, or too many open watches",
    "504": "Timeout: a watch from a resourceVersion the server has not reached",
}


def _responses(action: str, response: str) -> dict[str, Any]:
    ok = _json_content(_ref(response))
    out: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
    if action in ("post", "put"):
        out["201"] = {"description": "Created", "content": ok}
    status = _json_content(_ref(f"{META}.Status"))
    for code in sorted(("401", "403", *_ERRORS[action])):
        out[code] = {"description": _ERROR_TEXT[code], "content": status}
    return out


_JSON_PATCH_SCHEMA = {
    "type": "array",
    "description": "RFC 6902 JSON Patch: a list of operations.",
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
            "path": {"type": "string"},
            "from": {"type": "string"},
            "value": {},
        },
    },
}
_PATCH_BODY = {
    "content": {
        "application/json-patch+json": {"schema": _JSON_PATCH_SCHEMA},
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/apply-patch+yaml": {"schema": {"type": "object"}},
    },
    "required": True,
}
_STATUS_SCHEMA = {
    "description": "Status is the return value of calls that do not return other objects.",
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "code": {"type": "integer", "format": "int32"},
        "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "kind": {"type": "string"},
        "message": {"type": "string"},
        "metadata": {"allOf": [_ref(f"{META}.ListMeta")], "default": {}},
        "reason": {"type": "string"},
        "status": {"type": "string"},
    },
    "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
}


def _object_body() -> dict[str, Any]:
    return {"content": _json_content(_ref(WS_REF)), "required": True}


def _create_body() -> dict[str, Any]:
    """A create needs metadata with a name or a generateName."""
    schema = {
        "allOf": [
            _ref(WS_REF),
            {
                "type": "object",
                "required": ["metadata"],
                "properties": {
                    "metadata": {
                        "type": "object",
                        "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
                    }
                },
            },
        ]
    }
    return {"content": _json_content(schema), "required": True}


def _item_ops(suffix: str, what: str) -> dict[str, Any]:
    name = f"NamespacedWorkspace{suffix}"
    return {
        "get": _op(
            f"readCodehubIo{VERSION.capitalize()}{name}", "get", f"read {what}", response=WS_REF
        ),
        "put": _op(
            f"replaceCodehubIo{VERSION.capitalize()}{name}",
            "put",
            f"replace {what}",
            response=WS_REF,
            params=[_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
            body=_object_body(),
        ),
        "patch": _op(
            f"patchCodehubIo{VERSION.capitalize()}{name}",
            "patch",
            f"partially update {what}",
            response=WS_REF,
            params=[
                _DRY_RUN,
                _FIELD_MANAGER,
                _FIELD_VALIDATION,
                _query(
                    "force",
                    "Server-side apply: take ownership of fields other managers own "
                    "instead of answering 409.",
                    "boolean",
                ),
            ],
            body=_PATCH_BODY,
        ),
    }


def _path_params(*names: str) -> list[dict[str, Any]]:
    descriptions = {"namespace": "object name and auth scope", "name": "name of the Workspace"}
    out = [
        {
            "name": n,
            "in": "path",
            "required": True,
            "description": descriptions[n],
            "schema": {"type": "string", "uniqueItems": True},
        }
        for n in names
    ]
    return [*out, _PRETTY]


def _object_meta_schema() -> dict[str, Any]:
    s = {"type": "string"}
    smap = {"type": "object", "additionalProperties": {"type": "string", "default": ""}}
    return {
        "description": "Standard object metadata; the subset this server stores.",
        "type": "object",
        "properties": {
            "annotations": {**smap, "description": "Unstructured key value map."},
            "creationTimestamp": {
                **s,
                "format": "date-time",
                "description": "Set by the server on create.",
            },
            "deletionTimestamp": {
                **s,
                "format": "date-time",
                "description": "Set when deletion was requested.",
            },
            "finalizers": {
                "type": "array",
                "items": {"type": "string", "default": ""},
                "description": "Must be empty before the object is removed.",
            },
            "generateName": {**s, "description": "Prefix for a generated name."},
            "generation": {
                "type": "integer",
                "format": "int64",
                "description": "Bumped on every spec change.",
            },
            "labels": {**smap, "description": "Key value map for selecting objects."},
            "managedFields": {
                "type": "array",
                "description": "Which manager owns which fields (server-side apply).",
                "items": {
                    "type": "object",
                    "properties": {
                        "apiVersion": s,
                        "fieldsType": s,
                        "fieldsV1": {"type": "object"},
                        "manager": s,
                        "operation": s,
                        "subresource": s,
                        "time": {**s, "format": "date-time"},
                    },
                },
            },
            "name": {**s, "description": "Unique within a namespace (DNS-1123 label)."},
            "namespace": {**s, "description": "The owner's namespace."},
            "resourceVersion": {**s, "description": "Opaque version for concurrency."},
            "uid": {**s, "description": "Unique id for all time (the workspace id)."},
        },
    }


def _workspace_schema() -> dict[str, Any]:
    schema = copy.deepcopy(openapi_schema())
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [API_VERSION], "description": API_VERSION}
    props["kind"] = {"type": "string", "enum": [KIND], "description": KIND}
    props["metadata"] = {
        "allOf": [_ref(f"{META}.ObjectMeta")],
        "default": {},
        "description": "Standard object's metadata.",
    }
    schema["x-kubernetes-group-version-kind"] = [dict(GVK)]
    return schema


def _paths() -> dict[str, Any]:
    base = f"/{GV_PATH}"
    ns_list = f"{base}/namespaces/{{namespace}}/{PLURAL}"
    item = f"{ns_list}/{{name}}"
    cap = VERSION.capitalize()
    paths: dict[str, Any] = {
        f"{base}/{PLURAL}": {
            "get": _op(
                f"listCodehubIo{cap}WorkspaceForAllNamespaces",
                "list",
                "list or watch Workspaces in all namespaces",
                response=WS_LIST_REF,
                params=_LIST_PARAMS,
            ),
            "parameters": [_PRETTY],
        },
        ns_list: {
            "get": _op(
                f"listCodehubIo{cap}NamespacedWorkspace",
                "list",
                "list or watch Workspaces",
                response=WS_LIST_REF,
                params=_LIST_PARAMS,
            ),
            "post": _op(
                f"createCodehubIo{cap}NamespacedWorkspace",
                "post",
                "create a Workspace",
                response=WS_REF,
                params=[_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                body=_create_body(),
            ),
            "delete": _op(
                f"deleteCodehubIo{cap}CollectionNamespacedWorkspace",
                "deletecollection",
                "delete collection of Workspace",
                response=WS_LIST_REF,
                params=[_DRY_RUN, *_LIST_PARAMS[2:4]],
            ),
            "parameters": _path_params("namespace"),
        },
        item: {
            **_item_ops("", "the specified Workspace"),
            "delete": _op(
                f"deleteCodehubIo{cap}NamespacedWorkspace",
                "delete",
                "delete a Workspace",
                response=WS_REF,
                params=[_DRY_RUN],
            ),
            "parameters": _path_params("namespace", "name"),
        },
        f"{item}/status": {
            **_item_ops("Status", "status of the specified Workspace"),
            "parameters": _path_params("namespace", "name"),
        },
    }
    return paths


@lru_cache(maxsize=1)
def group_version_document() -> dict[str, Any]:
    list_schema = {
        "description": "WorkspaceList is a list of Workspace",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": _ref(WS_REF)},
            "kind": {"type": "string"},
            "metadata": {"allOf": [_ref(f"{META}.ListMeta")], "default": {}},
        },
        "x-kubernetes-group-version-kind": [{**GVK, "kind": LIST_KIND}],
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "codehub", "version": VERSION},
        "paths": _paths(),
        "components": {
            "schemas": {
                f"{META}.Status": _STATUS_SCHEMA,
                WS_REF: _workspace_schema(),
                WS_LIST_REF: list_schema,
                f"{META}.ObjectMeta": _object_meta_schema(),
                f"{META}.ListMeta": {
                    "type": "object",
                    "properties": {
                        "continue": {"type": "string"},
                        "remainingItemCount": {"type": "integer", "format": "int64"},
                        "resourceVersion": {"type": "string"},
                    },
                },
            }
        },
    }


@lru_cache(maxsize=1)
def group_version_bytes() -> bytes:
    return json.dumps(group_version_document(), separators=(",", ":")).encode()


def document_hash() -> str:
    return hashlib.sha512(group_version_bytes()).hexdigest()[:64].upper()


def index_document() -> dict[str, Any]:
    return {
        "paths": {GV_PATH: {"serverRelativeURL": f"/openapi/v3/{GV_PATH}?hash={document_hash()}"}}
    }
