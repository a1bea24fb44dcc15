"""The validation table the API server relies on to refuse bad manifests by field."""

from __future__ import annotations

from typing import Any

import pytest

from codehub.crd_like.models import (
    DesiredState,
    Display,
    ObservedStatus,
    SpecDefaults,
    Workspace,
    apply_spec_defaults,
    derive_display,
    validate_name,
    validate_workspace_body,
)


def body(spec: Any = None, name: Any = "ws-1", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "alice"},
        "spec": apply_spec_defaults(spec if spec is not None else {}, SpecDefaults("img:1")),
    }
    obj.update(extra)
    return obj


def fields(obj: Any) -> set[str]:
    return {e.field_path for e in validate_workspace_body(obj)}


def test_minimal_body_is_valid_and_defaulted() -> None:
    obj = body()
    assert validate_workspace_body(obj) == []
    assert obj["spec"] == {
        "desired_state": "RUNNING",
        "image_ref": "img:1",
        "standby_ttl_seconds": 300,
        "archive_ttl_seconds": 86400,
    }


def test_defaults_are_injectable_and_never_override() -> None:
    d = SpecDefaults("x:2", standby_ttl_seconds=1, archive_ttl_seconds=2)
    assert apply_spec_defaults(None, d)["standby_ttl_seconds"] == 1
    out = apply_spec_defaults({"image_ref": "mine", "archive_ttl_seconds": 0}, d)
    assert out["image_ref"] == "mine"
    assert out["archive_ttl_seconds"] == 0
    assert apply_spec_defaults("junk", d) == "junk"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"desired_state": "FOO"}, "spec.desired_state"),
        ({"desired_state": "ERROR"}, "spec.desired_state"),
        ({"desired_state": 1}, "spec.desired_state"),
        ({"standby_ttl_seconds": -1}, "spec.standby_ttl_seconds"),
        ({"archive_ttl_seconds": -5}, "spec.archive_ttl_seconds"),
        ({"archive_ttl_seconds": "10"}, "spec.archive_ttl_seconds"),
        ({"standby_ttl_seconds": 1.5}, "spec.standby_ttl_seconds"),
        ({"standby_ttl_seconds": True}, "spec.standby_ttl_seconds"),
        ({"image_ref": ""}, "spec.image_ref"),
        ({"image_ref": "x" * 513}, "spec.image_ref"),
        ({"image_ref": 5}, "spec.image_ref"),
        ({"display_name": "x" * 257}, "spec.display_name"),
        ({"memo": ["a"]}, "spec.memo"),
        ({"resources": {"cpu": "two"}}, "spec.resources.cpu"),
        ({"resources": {"memory": "4GB"}}, "spec.resources.memory"),
        ({"resources": {"memory": "-1Gi"}}, "spec.resources.memory"),
        ({"resources": {"gpu": "1"}}, "spec.resources.gpu"),
        ({"resources": "big"}, "spec.resources"),
        ({"unknown_field": 1}, "spec.unknown_field"),
    ],
)
def test_invalid_spec_names_the_field(spec: dict[str, Any], field: str) -> None:
    assert field in fields(body(spec))


def test_unknown_field_message_names_it() -> None:
    (err,) = validate_workspace_body(body({"desird_state": "RUNNING"}))
    assert err.field_path == "spec.desird_state"
    assert "desird_state" in err.message


def test_enum_message_lists_supported_values() -> None:
    (err,) = validate_workspace_body(body({"desired_state": "FOO"}))
    assert '"FOO"' in err.message
    assert '"RUNNING"' in err.message


@pytest.mark.parametrize(
    "spec",
    [
        {"desired_state": "PENDING", "standby_ttl_seconds": 0, "archive_ttl_seconds": 0},
        {"resources": {"cpu": "2", "memory": "4Gi"}},
        {"resources": {"cpu": "500m", "memory": "1.5G"}},
        {"resources": {"cpu": ".5", "memory": "1e9"}},
        {"display_name": "My box", "description": "d", "memo": ""},
        {"image_ref": "registry.example.com/team/code-server:4.20@sha256:" + "a" * 64},
    ],
)
def test_valid_specs(spec: dict[str, Any]) -> None:
    assert validate_workspace_body(body(spec)) == []


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("ws-1", True),
        ("1abc", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        (None, False),
        ("Upper", False),
        ("-lead", False),
        ("trail-", False),
        ("dot.ted", False),
        ("under_score", False),
    ],
)
def test_validate_name(name: Any, ok: bool) -> None:
    assert (validate_name(name) is None) is ok
    assert ("metadata.name" in fields(body(name=name))) is (not ok)


def test_body_level_errors() -> None:
    assert fields("nope") == {""}
    assert "apiVersion" in fields(body(apiVersion="v1"))
    assert "kind" in fields(body(kind="Pod"))
    assert "metadata" in fields({"spec": {}})
    bad_labels = body()
    bad_labels["metadata"]["labels"] = {"a": 1}
    assert "metadata.labels.a" in fields(bad_labels)


def test_status_validation_keeps_kopf_fields() -> None:
    ok = body(
        status={
            "observed_status": "RUNNING",
            "operation": "NONE",
            "observed_at": "2026-11-27T00:00:00Z",
            "kopf": {"progress": {}},
            "error_info": {
                "reason": "Timeout",
                "message": "m",
                "is_terminal": True,
                "context": {"nested": [1, {"a": None}]},
            },
        }
    )
    assert validate_workspace_body(ok) == []
    bad = body(
        status={
            "observed_status": "SLEEPING",
            "operation": "JUMPING",
            "error_info": {"reason": "Bad"},
        }
    )
    assert fields(bad) >= {"status.observed_status", "status.operation", "status.error_info.reason"}
    assert validate_workspace_body(bad, check_status=False) == []


def test_levels_and_display() -> None:
    assert [s.level for s in DesiredState] == [0, 10, 20]
    assert ObservedStatus.ERROR.level is None
    assert derive_display("PENDING", "archives/u/o/home.tar.gz") is Display.ARCHIVED
    assert derive_display(ObservedStatus.PENDING, None) is Display.PENDING
    assert derive_display("STANDBY", "k") is Display.STANDBY
    assert derive_display("ERROR", "k") is Display.ERROR
    assert derive_display(None, None) is Display.PENDING


def test_workspace_typed_read() -> None:
    ws = Workspace.model_validate(
        {
            **body(),
            "status": {"observed_status": "PENDING", "archive_key": "k"},
        }
    )
    assert ws.metadata.namespace == "alice"
    assert ws.spec.desired_state is DesiredState.RUNNING
    assert ws.display is Display.ARCHIVED


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("team", True),
        ("codehub.io/team", True),
        ("a.b-c_d", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("bad key!", False),
        ("-leading", False),
        ("Upper.Case/name", False),
        ("/name", False),
        ("a" * 254 + "/name", False),
        ("prefix/", False),
    ],
)
def test_qualified_name_rules(key: str, ok: bool) -> None:
    from codehub.crd_like.models import qualified_name_error

    assert (qualified_name_error(key) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("", True), ("a-b_c.d", True), ("v" * 64, False), ("a b", False)]
)
def test_label_value_rules(value: str, ok: bool) -> None:
    from codehub.crd_like.models import label_value_error

    assert (label_value_error(value) is None) is ok


def test_annotations_total_size_is_bounded() -> None:
    from codehub.crd_like.models import ANNOTATIONS_MAX_BYTES, metadata_map_errors

    assert metadata_map_errors({"annotations": {"a": "x" * (ANNOTATIONS_MAX_BYTES - 1)}}) == []
    errors = metadata_map_errors({"annotations": {"a": "x" * ANNOTATIONS_MAX_BYTES}})
    assert [e.field_path for e in errors] == ["metadata.annotations"]


def test_error_messages_quote_a_short_prefix() -> None:
    body = {"metadata": {"name": "w"}, "spec": {"memo": "m" * 100_000}}
    errors = validate_workspace_body(body)
    assert [e.field_path for e in errors] == ["spec.memo"]
    assert len(errors[0].message) < 300
