"""Field ownership for server-side apply (crd_like/server/managed_fields.py), table-tested."""

from __future__ import annotations

import json
from typing import Any

import pytest

from codehub.crd_like.server.managed_fields import (
    LAST_APPLIED,
    ApplyConflicts,
    FieldConflict,
    apply_config,
    apply_or_upgrade,
    conflict_message,
    field_set,
    from_fields_v1,
    manager_of,
    record_update,
    to_fields_v1,
)

AV = "codehub.io/v1alpha1"
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def ws(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "w", **meta}, "spec": spec or {}}


def entry(manager: str, operation: str, *paths: tuple[str, ...]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": AV,
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (ws(), set()),
        (ws({"a": 1, "b": {"c": 2}}), {("spec", "a"), ("spec", "b", "c")}),
        (ws({"l": [1, 2], "e": {}}), {("spec", "l"), ("spec", "e")}),
        (
            ws(labels={"x": "1"}, annotations={"y/z": ""}, finalizers=["f"]),
            {
                ("metadata", "labels", "x"),
                ("metadata", "annotations", "y/z"),
                ("metadata", "finalizers"),
            },
        ),
        ({"metadata": {"name": "w", "uid": "u"}, "status": {"a": 1}}, set()),
    ],
)
def test_field_set(obj: dict[str, Any], expected: set[tuple[str, ...]]) -> None:
    assert field_set(obj) == expected


def test_fields_v1_round_trip_and_kubernetes_shape() -> None:
    paths = {("spec", "a"), ("spec", "b", "c"), ("metadata", "labels", "app")}
    v1 = to_fields_v1(paths)
    assert v1 == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:a": {}, "f:b": {"f:c": {}}},
    }
    assert from_fields_v1(v1) == paths
    # Kubernetes also writes "." (the map itself) and k:/v: keys: skipped, not fatal.
    assert from_fields_v1({"f:spec": {".": {}, "f:a": {}}, "k:{x}": {}}) == {("spec", "a")}
    assert from_fields_v1("junk") == set()


@pytest.mark.parametrize(
    ("field_manager", "agent", "expected"),
    [
        ("flux", "kubectl/v1.32", "flux"),
        (None, "kubectl/v1.32.4 (linux/amd64)", "kubectl"),
        (None, "kopf/1.37", "kopf"),
        (None, None, "unknown"),
        ("", "", "unknown"),
    ],
)
def test_manager_of(field_manager: str | None, agent: str | None, expected: str) -> None:
    assert manager_of(field_manager, agent) == expected


def test_update_takes_changed_fields_from_other_managers() -> None:
    old = ws({"a": 1, "b": 2})
    managed = [entry("apply-tool", "Apply", ("spec", "a"), ("spec", "b"))]
    new = ws({"a": 1, "b": 3, "c": 4})
    out = record_update(old, new, managed, "editor", api_version=AV, now=T1)
    by = {(e["manager"], e["operation"]): from_fields_v1(e["fieldsV1"]) for e in out}
    assert by == {
        ("apply-tool", "Apply"): {("spec", "a")},
        ("editor", "Update"): {("spec", "b"), ("spec", "c")},
    }
    assert out[0]["time"] == T1  # its set changed
    assert out[1]["time"] == T1


def test_unchanged_update_keeps_entries_verbatim() -> None:
    obj = ws({"a": 1})
    managed = [entry("m", "Apply", ("spec", "a"))]
    assert record_update(obj, obj, managed, "other", api_version=AV, now=T1) == managed


def test_removed_fields_leave_every_manager_and_empty_entries_go() -> None:
    old = ws({"a": 1})
    managed = [entry("m", "Update", ("spec", "a"))]
    assert record_update(old, ws({}), managed, "x", api_version=AV, now=T1) == []


def test_create_records_every_field() -> None:
    out = record_update(None, ws({"a": 1}, labels={"k": "v"}), None, "c", api_version=AV, now=T0)
    assert len(out) == 1
    assert out[0]["operation"] == "Update"
    assert from_fields_v1(out[0]["fieldsV1"]) == {("spec", "a"), ("metadata", "labels", "k")}


def test_apply_creates_and_owns() -> None:
    obj, managed = apply_config(None, ws({"a": 1}), "flux", force=False, api_version=AV, now=T0)
    assert obj["spec"] == {"a": 1}
    assert [(e["manager"], e["operation"]) for e in managed] == [("flux", "Apply")]


def test_apply_same_value_as_other_manager_is_shared_not_a_conflict() -> None:
    cur = ws({"a": 1}, managedFields=[entry("m", "Update", ("spec", "a"))])
    _obj, managed = apply_config(cur, ws({"a": 1}), "flux", force=False, api_version=AV, now=T1)
    owners = {e["manager"] for e in managed}
    assert owners == {"m", "flux"}


@pytest.mark.parametrize(
    ("config", "conflicts"),
    [
        (ws({"a": 2}), [FieldConflict(("spec", "a"), "m")]),
        (
            ws({"a": 2, "b": 9}),
            [FieldConflict(("spec", "a"), "m"), FieldConflict(("spec", "b"), "m")],
        ),
        (ws({}, labels={"team": "y"}), [FieldConflict(("metadata", "labels", "team"), "n")]),
    ],
)
def test_apply_conflicts_then_force_moves_ownership(
    config: dict[str, Any], conflicts: list[FieldConflict]
) -> None:
    cur = ws(
        {"a": 1, "b": 2},
        labels={"team": "x"},
        managedFields=[
            entry("m", "Update", ("spec", "a"), ("spec", "b")),
            entry("n", "Apply", ("metadata", "labels", "team")),
        ],
    )
    with pytest.raises(ApplyConflicts) as err:
        apply_config(cur, config, "flux", force=False, api_version=AV, now=T1)
    assert err.value.conflicts == conflicts
    obj, managed = apply_config(cur, config, "flux", force=True, api_version=AV, now=T1)
    owned = {e["manager"]: from_fields_v1(e["fieldsV1"]) for e in managed}
    for c in conflicts:
        assert c.path in owned["flux"]
        assert c.path not in owned.get(c.manager, set())
    assert obj["spec"]["a"] == config["spec"].get("a", 1)


def test_apply_removes_fields_it_no_longer_applies_unless_others_own_them() -> None:
    cur, managed = apply_config(
        None, ws({"a": 1, "b": 2, "c": 3}), "flux", force=False, api_version=AV, now=T0
    )
    cur.setdefault("metadata", {})["managedFields"] = [
        *managed,
        entry("m", "Update", ("spec", "c")),
    ]
    obj, _ = apply_config(cur, ws({"a": 1}), "flux", force=False, api_version=AV, now=T1)
    assert obj["spec"] == {"a": 1, "c": 3}


def test_apply_removes_dropped_label_and_its_empty_map() -> None:
    cur, managed = apply_config(
        None, ws({"a": 1}, labels={"x": "1"}), "f", force=False, api_version=AV, now=T0
    )
    cur["metadata"]["managedFields"] = managed
    obj, managed = apply_config(cur, ws({"a": 1}), "f", force=False, api_version=AV, now=T1)
    assert "labels" not in obj["metadata"]
    assert from_fields_v1(managed[0]["fieldsV1"]) == {("spec", "a")}


def test_conflict_message_like_kube_apiserver() -> None:
    one = [FieldConflict(("spec", "a"), "m")]
    assert conflict_message(one, AV) == (
        f'Apply failed with 1 conflict: conflict with "m" using {AV}: .spec.a'
    )
    two = [FieldConflict(("spec", "a"), "m"), FieldConflict(("spec", "b"), "m")]
    assert conflict_message(two, AV) == (
        f'Apply failed with 2 conflicts: conflicts with "m" using {AV}:\n- .spec.a\n- .spec.b'
    )


def _csa_object() -> dict[str, Any]:
    record = {"metadata": {"name": "w"}, "spec": {"a": 1, "b": 2}}
    return ws(
        {"a": 1, "b": 5},
        annotations={LAST_APPLIED: json.dumps(record)},
        managedFields=[
            entry("kubectl-client-side-apply", "Update", ("spec", "a")),
            entry("editor", "Update", ("spec", "b")),
        ],
    )


def test_kubectl_server_side_apply_takes_over_its_client_side_fields() -> None:
    cur = _csa_object()
    obj, managed = apply_or_upgrade(
        cur, ws({"a": 9}), "kubectl", force=False, api_version=AV, now=T1
    )
    assert obj["spec"]["a"] == 9
    owned = {e["manager"]: from_fields_v1(e["fieldsV1"]) for e in managed}
    assert owned["kubectl"] == {("spec", "a")}
    assert "kubectl-client-side-apply" not in owned


@pytest.mark.parametrize(
    ("manager", "config", "conflicts"),
    [
        # spec.b's live value is not what the client-side apply recorded: not upgraded.
        ("kubectl", ws({"a": 9, "b": 7}), [FieldConflict(("spec", "b"), "editor")]),
        # Only kubectl's own manager upgrades, as on a real cluster.
        ("flux", ws({"a": 9}), [FieldConflict(("spec", "a"), "kubectl-client-side-apply")]),
    ],
)
def test_upgrade_leaves_other_conflicts(
    manager: str, config: dict[str, Any], conflicts: list[FieldConflict]
) -> None:
    with pytest.raises(ApplyConflicts) as err:
        apply_or_upgrade(_csa_object(), config, manager, force=False, api_version=AV, now=T1)
    assert err.value.conflicts == conflicts
