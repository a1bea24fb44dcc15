"""Server-side apply and delete collection on real PostgreSQL (docs/api.md): managedFields
are stored with the object, and every refusal is a Status that leaves the stored object
at the same resourceVersion."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from support.api import ApiFactory

pytestmark = pytest.mark.integration

BASE = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
APPLY = "application/apply-patch+yaml"


def manifest(**spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "w", "labels": {"team": "x"}},
            "spec": {"desired_state": "PENDING", **spec},
        }
    )


@pytest.fixture
async def api(make_api: ApiFactory) -> Any:
    return await make_api("postgres")


async def _apply(api: Any, body: str, manager: str = "gitops", **query: str) -> Any:
    return await api.http.patch(
        f"{BASE}/w",
        data=body,
        params={"fieldManager": manager, **query},
        headers={**api.headers("alice"), "Content-Type": APPLY},
    )


async def _stored(api: Any) -> dict[str, Any]:
    return dict(await api.store.get("workspaces", "alice", "w"))


async def test_managed_fields_survive_storage_and_updates(api: Any) -> None:
    assert (await _apply(api, manifest(display_name="one"))).status == 201
    stored = await _stored(api)
    assert [e["manager"] for e in stored["metadata"]["managedFields"]] == ["gitops"]
    r = await api.http.patch(
        f"{BASE}/w",
        data=json.dumps({"spec": {"memo": "m"}}),
        params={"fieldManager": "editor"},
        headers={**api.headers("alice"), "Content-Type": "application/merge-patch+json"},
    )
    assert r.status == 200
    stored = await _stored(api)
    entries = {(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]}
    assert entries == {("gitops", "Apply"), ("editor", "Update")}


@pytest.mark.parametrize(
    ("body", "query", "code", "reason"),
    [
        (manifest(memo="conflict"), {}, 409, "Conflict"),
        ("spec: {desired_state: [", {}, 400, "BadRequest"),
        (manifest(unknown_field=1), {}, 422, "Invalid"),
        (manifest(display_name=["not", "a", "string"]), {}, 422, "Invalid"),
        (manifest(memo="dry"), {"dryRun": "All", "force": "true"}, 200, ""),
    ],
)
async def test_refused_or_dry_applies_change_nothing(
    api: Any, body: str, query: dict[str, str], code: int, reason: str
) -> None:
    await _apply(api, manifest(display_name="one"))
    await _apply(api, manifest(memo="theirs"), manager="other", force="true")
    before = await _stored(api)
    r = await _apply(api, body, **query)
    assert r.status == code, await r.text()
    if reason:
        status = await r.json()
        assert (status["kind"], status["reason"]) == ("Status", reason)
    assert await _stored(api) == before


async def test_delete_collection_matching_nothing_changes_nothing(api: Any) -> None:
    await _apply(api, manifest())
    before = await _stored(api)
    r = await api.http.delete(
        BASE, params={"labelSelector": "team=nobody"}, headers=api.headers("alice")
    )
    assert r.status == 200
    assert (await r.json())["items"] == []
    assert await _stored(api) == before
    r = await api.http.delete(
        BASE, params={"labelSelector": "team=x"}, headers=api.headers("alice")
    )
    assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["w"]
    listed = await api.store.list("workspaces", namespace="alice")
    assert listed.items == []
