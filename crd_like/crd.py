"""The Workspace CustomResourceDefinition, generated from the pydantic models.

One source of truth (docs/architecture.md): the chart's ``crds/workspaces.yaml``, ``codehub
crd`` and the API server's OpenAPI document all come from here, and a unit test fails
when the chart file drifts. The pydantic JSON schema is rewritten into a Kubernetes
*structural* schema: ``$ref`` inlined, ``anyOf [X, null]`` turned into ``nullable``,
titles dropped, and ``x-kubernetes-preserve-unknown-fields`` only where free-form data
is genuinely stored (``status`` for kopf's bookkeeping, ``error_info.context``).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from codehub.crd_like.identity import (
    GROUP,
    KIND,
    LIST_KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from codehub.crd_like.models import WorkspaceSpec, WorkspaceStatus

CRD_NAME = f"{PLURAL}.{GROUP}"

_COPIED_KEYS = (
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "description",
)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return merged
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = {
            **_resolve(node["allOf"][0], defs),
            **{k: v for k, v in node.items() if k != "allOf"},
        }
        return merged
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    nullable = False
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        nullable = len(branches) != len(node["anyOf"])
        if len(branches) != 1:
            raise ValueError(f"cannot express {node!r} as a structural schema")
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**_resolve(branches[0], defs), **outer}
    out: dict[str, Any] = {}
    for key in _COPIED_KEYS:
        if key in node:
            out[key] = copy.deepcopy(node[key])
    if node.get("default") is not None:
        out["default"] = node["default"]
    if nullable:
        out["nullable"] = True
    if "items" in node:
        out["items"] = _structural(node["items"], defs)
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            name: _structural(sub, defs) for name, sub in node["properties"].items()
        }
        if node.get("required"):
            out["required"] = list(node["required"])
        if node.get("additionalProperties") is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif node.get("type") == "object":
        extra = node.get("additionalProperties", True)
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def openapi_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the Workspace (also embedded in the server's OpenAPI)."""
    spec = _model_schema(WorkspaceSpec)
    spec["description"] = "What the user wants (docs/resource.md)."
    status = _model_schema(WorkspaceStatus)
    status["description"] = "What the controllers observe and do (docs/resource.md)."
    return {
        "type": "object",
        "description": "A developer workspace: one code-server container and its home volume.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Desired", "type": "string", "jsonPath": ".spec.desired_state"},
        {"name": "Observed", "type": "string", "jsonPath": ".status.observed_status"},
        {"name": "Operation", "type": "string", "jsonPath": ".status.operation"},
        {"name": "Display", "type": "string", "jsonPath": ".status.display"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        # Priority 1: shown by `kubectl get -o wide`, the same facts `codehub get -o wide`
        # gives (why a workspace is still up, and what went wrong).
        *(
            {"name": name, "type": type_, "jsonPath": path, "priority": 1}
            for name, type_, path in (
                ("Image", "string", ".spec.image_ref"),
                ("Errors", "integer", ".status.error_count"),
                ("Reason", "string", ".status.error_info.reason"),
                ("Last-Access", "date", ".status.last_access_at"),
                ("Source", "string", ".status.last_activity_source"),
                ("Conns", "integer", ".status.open_connections"),
                ("Idle-Action", "string", ".status.idle_action"),
                ("Idle-At", "string", ".status.idle_action_at"),
            )
        ),
    ]


def crd_dict() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "plural": PLURAL,
                "singular": SINGULAR,
                "kind": KIND,
                "listKind": LIST_KIND,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """Deterministic YAML (stable key order from the models, no aliases)."""
    header = "# Generated by `codehub crd` from codehub.crd_like.models; do not edit.\n"
    body = yaml.safe_dump(
        copy.deepcopy(crd_dict()),
        sort_keys=False,
        default_flow_style=False,
        width=100,
        allow_unicode=True,
    )
    return header + body
