"""Server-side apply and managedFields over the in-memory store (docs/api.md).

Every refusal is a Kubernetes Status and leaves the stored object as it was (same
resourceVersion).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from support.api import ApiFactory

from codehub.crd_like.server.managed_fields import from_fields_v1

NS = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"

Client = TestClient[Any, Any]


@pytest.fixture
async def api(make_api: ApiFactory) -> Any:
    return await make_api()


def _h(api: Any, who: str = "alice", **extra: str) -> dict[str, str]:
    return {**api.headers(who), **extra}


def manifest(name: str = "w", **spec: Any) -> str:
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": "PENDING", **spec},
    }
    return yaml.safe_dump(body)


async def apply(
    api: Any, body: str, manager: str | None = "flux", name: str = "w", **query: str
) -> Any:
    params = dict(query)
    if manager is not None:
        params["fieldManager"] = manager
    return await api.http.patch(
        f"{NS}/{name}", data=body, params=params, headers=_h(api, **{"Content-Type": APPLY})
    )


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], set[tuple[str, ...]]]:
    return {
        (e["manager"], e["operation"]): from_fields_v1(e["fieldsV1"])
        for e in obj["metadata"].get("managedFields", [])
    }


async def rv(api: Any, name: str = "w") -> str:
    r = await api.http.get(f"{NS}/{name}", headers=_h(api))
    return str((await r.json())["metadata"]["resourceVersion"])


async def test_apply_creates_then_updates_with_apply_ownership(api: Any) -> None:
    r = await apply(api, manifest(display_name="one"))
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["spec"]["display_name"] == "one"
    assert created["spec"]["image_ref"]  # defaults filled in
    assert owners(created) == {
        ("flux", "Apply"): {("spec", "desired_state"), ("spec", "display_name")}
    }
    entry = created["metadata"]["managedFields"][0]
    assert entry["fieldsType"] == "FieldsV1"
    assert entry["apiVersion"] == "codehub.io/v1alpha1"
    r = await apply(api, manifest(display_name="two"))
    assert r.status == 200
    assert (await r.json())["spec"]["display_name"] == "two"
    unchanged_rv = await rv(api)
    r = await apply(api, manifest(display_name="two"))
    assert (await r.json())["metadata"]["resourceVersion"] == unchanged_rv


async def test_apply_removes_a_field_dropped_from_the_configuration(api: Any) -> None:
    await apply(api, manifest(display_name="one", memo="m"))
    r = await apply(api, manifest(display_name="one"))
    assert "memo" not in (await r.json())["spec"]


async def test_merge_patch_records_an_update_manager_from_the_user_agent(api: Any) -> None:
    await apply(api, manifest(display_name="one"))
    r = await api.http.patch(
        f"{NS}/w",
        data=json.dumps({"spec": {"display_name": "edited"}}),
        headers=_h(api, **{"Content-Type": MERGE, "User-Agent": "kubectl/v1.32.4 (linux)"}),
    )
    obj = await r.json()
    assert owners(obj) == {
        ("flux", "Apply"): {("spec", "desired_state")},
        ("kubectl", "Update"): {("spec", "display_name")},
    }


async def test_conflict_names_field_and_manager_and_changes_nothing(api: Any) -> None:
    await apply(api, manifest(display_name="one"))
    await api.http.patch(
        f"{NS}/w",
        params={"fieldManager": "editor"},
        data=json.dumps({"spec": {"display_name": "edited"}}),
        headers=_h(api, **{"Content-Type": MERGE}),
    )
    before = await rv(api)
    r = await apply(api, manifest(display_name="mine"))
    assert r.status == 409
    status = await r.json()
    assert status["kind"] == "Status"
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "editor" using codehub.io/v1alpha1: '
        ".spec.display_name"
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "editor" using codehub.io/v1alpha1',
            "field": ".spec.display_name",
        }
    ]
    assert await rv(api) == before
    r = await apply(api, manifest(display_name="mine"), force="true")
    assert r.status == 200
    obj = await r.json()
    assert obj["spec"]["display_name"] == "mine"
    assert ("spec", "display_name") in owners(obj)[("flux", "Apply")]
    assert ("editor", "Update") not in owners(obj)


async def test_dry_run_apply_stores_nothing(api: Any) -> None:
    r = await apply(api, manifest(display_name="x"), dryRun="All")
    assert r.status == 201
    assert (await api.http.get(f"{NS}/w", headers=_h(api))).status == 404
    await apply(api, manifest(display_name="x"))
    before = await rv(api)
    r = await apply(api, manifest(display_name="y"), dryRun="All")
    assert (await r.json())["spec"]["display_name"] == "y"
    assert await rv(api) == before


@pytest.mark.parametrize(
    ("body", "query", "code", "reason", "needle"),
    [
        ("spec: [unclosed", {}, 400, "BadRequest", "not valid YAML at line"),
        (manifest(bogus=1), {}, 422, "Invalid", "spec.bogus"),
        (
            manifest().replace("kind: Workspace", "kind: Workspace\nextra: 1"),
            {},
            422,
            "Invalid",
            "extra",
        ),
        (manifest(), {"manager": ""}, 400, "BadRequest", "fieldManager"),
        (manifest(), {"manager": "m" * 129}, 400, "BadRequest", "fieldManager"),
        (manifest(), {"manager": "tab\there"}, 400, "BadRequest", "fieldManager"),
        (manifest(name="other"), {}, 400, "BadRequest", "does not match the name"),
        (manifest().replace("kind: Workspace\n", ""), {}, 400, "BadRequest", "kind"),
        (manifest(desired_state="FLYING"), {}, 422, "Invalid", "spec.desired_state"),
        ("- a\n- b\n", {}, 400, "BadRequest", "must be a YAML or JSON object"),
        ("a: &x 1\nb: *x\n", {}, 400, "BadRequest", "YAML aliases"),
    ],
)
async def test_bad_apply_is_a_precise_status_and_changes_nothing(
    api: Any, body: str, query: dict[str, str], code: int, reason: str, needle: str
) -> None:
    await apply(api, manifest(display_name="keep"))
    before = await rv(api)
    manager: str | None = query.get("manager", "flux")
    r = await apply(api, body, manager=manager or None)
    assert r.status == code, await r.text()
    status = await r.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", reason, code)
    assert needle in json.dumps(status)
    assert await rv(api) == before


async def test_apply_with_managed_fields_in_the_configuration_is_refused(api: Any) -> None:
    await apply(api, manifest())
    before = await rv(api)
    body = yaml.safe_load(manifest())
    body["metadata"]["managedFields"] = [{"manager": "x"}]
    r = await apply(api, yaml.safe_dump(body))
    assert r.status == 400
    assert (await r.json())["message"] == "metadata.managedFields must be nil"
    assert await rv(api) == before


async def test_apply_to_another_users_namespace_is_forbidden(api: Any) -> None:
    r = await api.http.patch(
        "/apis/codehub.io/v1alpha1/namespaces/bob/workspaces/w",
        params={"fieldManager": "flux"},
        data=manifest(),
        headers=_h(api, **{"Content-Type": APPLY}),
    )
    assert r.status == 403


async def test_apply_patch_on_status_and_events_stays_unsupported(api: Any) -> None:
    await apply(api, manifest())
    r = await api.http.patch(
        f"{NS}/w/status",
        params={"fieldManager": "flux"},
        data="status: {}",
        headers=_h(api, "operator", **{"Content-Type": APPLY}),
    )
    assert r.status == 415


async def test_put_without_managed_fields_keeps_them(api: Any) -> None:
    obj = await (await apply(api, manifest(display_name="a"))).json()
    del obj["metadata"]["managedFields"]
    obj["spec"]["memo"] = "put"
    r = await api.http.put(
        f"{NS}/w", json=obj, params={"fieldManager": "replacer"}, headers=_h(api)
    )
    assert owners(await r.json()) == {
        ("flux", "Apply"): {("spec", "desired_state"), ("spec", "display_name")},
        ("replacer", "Update"): {("spec", "memo")},
    }


async def test_json_patch_may_replace_managed_fields_like_kubectl_migration(api: Any) -> None:
    await apply(api, manifest(display_name="a"))
    new = [
        {
            "manager": "taken",
            "operation": "Apply",
            "apiVersion": "codehub.io/v1alpha1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:display_name": {}}},
        }
    ]
    r = await api.http.patch(
        f"{NS}/w",
        data=json.dumps([{"op": "replace", "path": "/metadata/managedFields", "value": new}]),
        headers=_h(api, **{"Content-Type": "application/json-patch+json"}),
    )
    assert r.status == 200
    assert owners(await r.json()) == {("taken", "Apply"): {("spec", "display_name")}}
