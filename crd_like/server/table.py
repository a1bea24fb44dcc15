"""Server-side ``Table`` output (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

kubectl asks for tables and prints whatever columns the server returns, so serving them
is what makes ``kubectl get ws`` show the CRD's printer columns, like a real cluster.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from codehub.crd_like.store.interface import Obj
from codehub.vocabulary.timestamps import human_duration, parse_rfc3339, utc_now

TABLE_MEDIA = "application/json;as=Table;v=v1;g=meta.k8s.io"


def wants_table(accept: str | None) -> bool:
    """True when the client's first acceptable type is a meta.k8s.io Table."""
    if not accept:
        return False
    for part in accept.split(","):
        params = {}
        pieces = [p.strip() for p in part.split(";")]
        for p in pieces[1:]:
            key, _, value = p.partition("=")
            params[key.strip()] = value.strip()
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return params.get("v") in ("v1", "v1beta1")
        if pieces[0] in ("application/json", "*/*", "application/*"):
            return False
    return False


def _json_path(obj: Any, path: str) -> Any:
    node = obj
    for part in path.lstrip(".").split("."):
        if not part:
            continue
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _cell(value: Any, type_: str, now: datetime.datetime) -> Any:
    if value is None:
        return "<none>" if type_ == "date" else None
    if type_ == "date" and isinstance(value, str):
        when = parse_rfc3339(value)
        return value if when is None else human_duration(now - when)
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(",", ":"))
    return value


def partial_metadata(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def build_table(
    objects: Iterable[Obj],
    columns: list[dict[str, Any]],
    *,
    include_object: str = "Metadata",
    list_meta: Mapping[str, Any] | None = None,
) -> Obj:
    now = utc_now()
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name must be unique within a namespace.",
            "priority": 0,
        }
    ]
    for col in columns:
        definitions.append(
            {
                "name": col["name"],
                "type": col.get("type", "string"),
                "format": col.get("format", ""),
                "description": col.get("description", ""),
                "priority": int(col.get("priority", 0)),
            }
        )
    rows = []
    for obj in objects:
        meta = obj.get("metadata", {})
        cells: list[Any] = [meta.get("name", "")]
        for col in columns:
            cells.append(_cell(_json_path(obj, col["jsonPath"]), col.get("type", "string"), now))
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta or {}),
        "columnDefinitions": definitions,
        "rows": rows,
    }
