"""Unit tests of the API server's pure parts: patches, tables, tokens, TLS, OpenAPI."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from codehub.crd_like.server.auth import ADMIN_GROUP, TokenAuthenticator, parse_token_file
from codehub.crd_like.server.openapi import group_version_document, index_document
from codehub.crd_like.server.patch import PatchError, PatchFormatError, json_patch, merge_patch
from codehub.crd_like.server.table import build_table, wants_table
from codehub.crd_like.server.tls import ensure_certificate
from codehub.vocabulary.timestamps import human_duration


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "l": [3], "n": {"x": None, "y": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "l": [3], "n": {"y": 1}}
    assert target["c"] == {"d": "e", "f": "g"}


def test_json_patch_operations() -> None:
    doc = {"metadata": {"resourceVersion": "5", "finalizers": ["a", "b"]}, "spec": {"x": 1}}
    out = json_patch(
        doc,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "c"},
            {"op": "replace", "path": "/spec/x", "value": 2},
            {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
            {"op": "move", "from": "/spec/y", "path": "/spec/z"},
            {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "1"}},
            {"op": "test", "path": "/metadata/annotations/a~0b~1c", "value": "1"},
        ],
    )
    assert out["metadata"]["finalizers"] == ["b", "c"]
    assert out["spec"] == {"x": 2, "z": 2}
    assert doc["metadata"]["finalizers"] == ["a", "b"]


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}],
        [{"op": "remove", "path": "/spec/missing"}],
        [{"op": "replace", "path": "/nothing/here", "value": 1}],
        [{"op": "remove", "path": "/metadata/finalizers/7"}],
        [{"op": "test", "path": "/spec/x", "value": True}],
    ],
)
def test_json_patch_failures_are_patch_errors(ops: list[dict[str, object]]) -> None:
    doc = {"metadata": {"resourceVersion": "5", "finalizers": ["a"]}, "spec": {"x": 1}}
    with pytest.raises(PatchError):
        json_patch(doc, ops)


@pytest.mark.parametrize(
    "ops",
    [
        {"op": "add"},
        [{"op": "add", "path": "/a"}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "path": "a", "value": 1}],
    ],
)
def test_malformed_json_patch(ops: object) -> None:
    with pytest.raises(PatchFormatError):
        json_patch({}, ops)


def test_wants_table() -> None:
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io")
    assert not wants_table("application/json")
    assert not wants_table(None)
    assert not wants_table(
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
    ],
)
def test_human_duration_matches_kubernetes(seconds: int, text: str) -> None:
    assert human_duration(datetime.timedelta(seconds=seconds)) == text


def test_table_rows_and_columns() -> None:
    obj = {
        "metadata": {"name": "w", "namespace": "n", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"desired_state": "RUNNING"},
        "status": {"observed_status": "STANDBY"},
    }
    cols = [
        {"name": "Desired", "type": "string", "jsonPath": ".spec.desired_state"},
        {"name": "Observed", "type": "string", "jsonPath": ".status.observed_status"},
        {"name": "Operation", "type": "string", "jsonPath": ".status.operation"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    table = build_table([obj], cols, include_object="Metadata")
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Desired",
        "Observed",
        "Operation",
        "Age",
    ]
    assert table["columnDefinitions"][0]["format"] == "name"
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["w", "RUNNING", "STANDBY", None]
    assert cells[4].endswith("y") or "y" in cells[4]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert "object" not in build_table([obj], cols, include_object="None")["rows"][0]
    assert build_table([obj], cols, include_object="Object")["rows"][0]["object"] is obj


def test_token_file_parsing_and_reload(tmp_path: Path) -> None:
    entries = parse_token_file(
        '# comment\n\nt1,alice,u1\nt2,root,u2,"codehub:admin,other"\nt3,bob\n'
    )
    assert [(e.identity.user, sorted(e.identity.groups)) for e in entries] == [
        ("alice", []),
        ("root", [ADMIN_GROUP, "other"]),
        ("bob", []),
    ]
    assert "t1" not in repr(entries[0])
    path = tmp_path / "tokens.csv"
    path.write_text("t1,alice,u1\n")
    auth = TokenAuthenticator(str(path))
    alice = auth.authenticate("Bearer t1")
    assert alice is not None
    assert alice.user == "alice"
    assert alice.may_access_namespace("alice")
    assert not alice.may_access_namespace("bob")
    assert not alice.may_write_status
    assert auth.authenticate("Bearer nope") is None
    assert auth.authenticate("Basic dDE=") is None
    assert auth.authenticate(None) is None
    path.write_text('t9,admin,u9,"codehub:admin"\n')
    import os

    os.utime(path, (1, 1))
    admin = auth.authenticate("Bearer t9")
    assert admin is not None
    assert admin.privileged
    assert admin.may_access_namespace("anyone")
    assert auth.authenticate("Bearer t1") is None


def test_certificate_generated_once_and_valid_for_localhost(tmp_path: Path) -> None:
    cert_path, key_path = ensure_certificate(tmp_path)
    again = ensure_certificate(tmp_path)
    assert again == (cert_path, key_path)
    assert key_path.stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ctx = ssl.create_default_context(cafile=str(cert_path))
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_openapi_declares_field_validation_on_the_patch_operation() -> None:
    doc = group_version_document()
    item = doc["paths"]["/apis/codehub.io/v1alpha1/namespaces/{namespace}/workspaces/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "codehub.io",
        "version": "v1alpha1",
        "kind": "Workspace",
    }
    assert "fieldValidation" in [p["name"] for p in patch["parameters"] if p["in"] == "query"]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    schema = doc["components"]["schemas"]["io.codehub.v1alpha1.Workspace"]
    assert schema["x-kubernetes-group-version-kind"][0]["kind"] == "Workspace"
    assert schema["properties"]["spec"]["properties"]["desired_state"]["enum"] == [
        "PENDING",
        "STANDBY",
        "RUNNING",
    ]
    ref = schema["properties"]["metadata"]["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert ref in doc["components"]["schemas"]
    url = index_document()["paths"]["apis/codehub.io/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/codehub.io/v1alpha1?hash=")


def test_json_depth_skips_strings_and_counts_nesting() -> None:
    from codehub.crd_like.server.bodies import json_depth

    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth(b'"\\"[[["') == 0
    assert json_depth(b"[" * 500 + b"]" * 500) == 500


def test_yaml_parser_refuses_aliases_and_depth() -> None:
    from codehub.crd_like.server.bodies import MAX_DEPTH, parse_document
    from codehub.crd_like.server.status import ApiError

    assert parse_document(b"a: [1, 2]\n", "application/yaml") == {"a": [1, 2]}
    with pytest.raises(ApiError) as alias:
        parse_document(b"a: &x [1]\nb: *x\n", "application/yaml")
    assert alias.value.code == 400
    deep = b"a: " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    with pytest.raises(ApiError) as nested:
        parse_document(deep, "application/yaml")
    assert "nested too deeply" in nested.value.message
    ok = b"a: " + b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2)
    assert parse_document(ok, "application/yaml")


def test_openapi_declares_error_codes_and_patch_array() -> None:
    doc = group_version_document()
    item = doc["paths"]["/apis/codehub.io/v1alpha1/namespaces/{namespace}/workspaces/{name}"]
    assert {"200", "400", "403", "404", "409", "415", "422", "429"} <= set(
        item["patch"]["responses"]
    )
    status_ref = item["patch"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert status_ref["$ref"].endswith("meta.v1.Status")
    body = item["patch"]["requestBody"]["content"]["application/json-patch+json"]["schema"]
    assert body["type"] == "array"
    create = doc["paths"]["/apis/codehub.io/v1alpha1/namespaces/{namespace}/workspaces"]["post"]
    assert "201" in create["responses"]
    ws = doc["components"]["schemas"]["io.codehub.v1alpha1.Workspace"]
    assert ws["properties"]["kind"]["enum"] == ["Workspace"]
    assert ws["properties"]["apiVersion"]["enum"] == ["codehub.io/v1alpha1"]
