"""The chart's CRD is generated from the models; a hand edit or a model change without
regeneration must fail here (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from codehub.crd_like.crd import crd_dict, openapi_schema, printer_columns, render_crd_yaml

CHART_CRD = Path(__file__).resolve().parents[3] / "charts" / "codehub" / "crds" / "workspaces.yaml"


def test_chart_crd_matches_generated() -> None:
    assert CHART_CRD.read_text() == render_crd_yaml(), (
        "charts/codehub/crds/workspaces.yaml drifted: regenerate with `codehub crd`"
    )


def test_render_is_deterministic_and_round_trips() -> None:
    text = render_crd_yaml()
    assert text == render_crd_yaml()
    assert yaml.safe_load(text) == crd_dict()
    assert "&id" not in text


def test_crd_identity() -> None:
    crd = crd_dict()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "workspaces.codehub.io"
    assert spec["group"] == "codehub.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "plural": "workspaces",
        "singular": "workspace",
        "kind": "Workspace",
        "listKind": "WorkspaceList",
        "shortNames": ["ws"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Desired",
        "Observed",
        "Operation",
        "Display",
        "Age",
    ]
    assert [c["name"] for c in columns if c.get("priority") == 1] == [
        "Image",
        "Errors",
        "Reason",
        "Last-Access",
        "Source",
        "Conns",
        "Idle-Action",
        "Idle-At",
    ]
    assert columns == printer_columns()
    assert columns[4] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for name, sub in node.get("properties", {}).items():
            found += _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    schema = openapi_schema()
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
            assert banned not in node, f"{path} has {banned}"
        assert node.get("additionalProperties") is not False, path
    preserved = sorted(p for p, n in _walk(schema) if n.get("x-kubernetes-preserve-unknown-fields"))
    assert preserved == [".status", ".status.error_info.context"]


def test_schema_constraints() -> None:
    props = openapi_schema()["properties"]
    spec = props["spec"]["properties"]
    assert spec["desired_state"]["enum"] == ["PENDING", "STANDBY", "RUNNING"]
    assert spec["desired_state"]["default"] == "RUNNING"
    assert spec["standby_ttl_seconds"] == {
        **spec["standby_ttl_seconds"],
        "type": "integer",
        "minimum": 0,
        "default": 300,
    }
    assert spec["archive_ttl_seconds"]["default"] == 86400
    assert spec["image_ref"]["maxLength"] == 512
    assert spec["image_ref"]["minLength"] == 1
    assert "pattern" in spec["resources"]["properties"]["cpu"]
    status = props["status"]["properties"]
    assert status["operation"]["enum"][0] == "NONE"
    assert "DELETED" in status["observed_status"]["enum"]
    assert "ARCHIVED" in status["display"]["enum"]
    assert status["observed_at"]["format"] == "date-time"
