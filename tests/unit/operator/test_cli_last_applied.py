"""``codehub apply`` keeps kubectl's last-applied record and merges three ways
(docs/cli.md): a field removed from the manifest is removed from the workspace."""

from __future__ import annotations

import json
from typing import Any

from support.api import ApiFactory

from codehub.operator.cli import resources
from codehub.operator.cli.resources import LAST_APPLIED, apply_one, apply_patch


def doc(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "w"}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": meta,
        "spec": {"desired_state": "PENDING", **spec},
    }


def test_three_way_patch_removes_what_the_last_apply_set() -> None:
    original = doc({"a": "1", "b": "2"}, memo="m", resources={"cpu": "1", "memory": "1Gi"})
    current = doc(
        {"a": "1", "b": "2", "other": "x"},
        memo="m",
        display_name="set by someone else",
        resources={"cpu": "1", "memory": "1Gi"},
    )
    desired = doc({"a": "1"}, resources={"cpu": "1"})
    assert apply_patch(current, desired, original) == {
        "metadata": {"labels": {"b": None}},
        "spec": {"memo": None, "resources": {"memory": None}},
    }
    # Without a record nothing is removed (the object was not made by apply).
    assert apply_patch(current, desired) == {}


def test_record_is_kubectl_shaped_json() -> None:
    body = resources._manifest_body(doc({"a": "1"}), "alice")
    record = resources.last_applied_record(body)
    assert record.endswith("\n")
    assert json.loads(record) == body
    assert resources.last_applied_of({"metadata": {"annotations": {LAST_APPLIED: record}}}) == body
    assert resources.last_applied_of({"metadata": {"annotations": {LAST_APPLIED: "{bad"}}}) is None


async def test_removed_field_is_reset_on_the_next_apply(make_api: ApiFactory) -> None:
    api = await make_api()
    client = api.client("alice")
    assert await apply_one(client, "alice", doc({"team": "x"}, memo="note")) == "created"
    obj = await client.get("alice", "w")
    assert json.loads(obj["metadata"]["annotations"][LAST_APPLIED])["spec"]["memo"] == "note"
    assert await apply_one(client, "alice", doc({"team": "x"}, memo="note")) == "unchanged"
    await client.patch_merge("alice", "w", {"spec": {"display_name": "by hand"}})
    assert await apply_one(client, "alice", doc()) == "configured"
    obj = await client.get("alice", "w")
    assert "memo" not in obj["spec"]
    assert "labels" not in obj["metadata"] or "team" not in obj["metadata"]["labels"]
    assert obj["spec"]["display_name"] == "by hand"  # never applied: left alone
    assert json.loads(obj["metadata"]["annotations"][LAST_APPLIED])["spec"] == {
        "desired_state": "PENDING"
    }
    assert await apply_one(client, "alice", doc()) == "unchanged"


async def test_object_without_record_gets_one_and_keeps_its_fields(make_api: ApiFactory) -> None:
    api = await make_api()
    client = api.client("alice")
    await client.create("alice", doc(memo="made by create"))
    assert await apply_one(client, "alice", doc()) == "configured"
    obj = await client.get("alice", "w")
    assert obj["spec"]["memo"] == "made by create"
    assert LAST_APPLIED in obj["metadata"]["annotations"]


def test_output_hides_managed_fields_and_the_record_like_kubectl() -> None:
    from datetime import UTC, datetime

    from codehub.operator.cli import output

    obj = doc({"a": "1"})
    obj["metadata"]["managedFields"] = [{"manager": "m", "operation": "Update"}]
    obj["metadata"]["annotations"] = {LAST_APPLIED: "{}\n", "note": "kept"}
    for fmt in ("yaml", "json"):
        assert "managedFields" not in output.render_object(obj, fmt)
        assert "managedFields" not in output.render_list([obj], fmt)
    described = output.describe(obj, [], datetime(2026, 1, 1, tzinfo=UTC))
    assert "note=kept" in described
    assert LAST_APPLIED not in described
    assert obj["metadata"]["managedFields"]  # the object itself is not changed
