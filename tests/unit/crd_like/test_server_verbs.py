"""deletecollection, SelfSubjectAccessReview, the all-namespaces SSE stream and the
OpenAPI documents kubectl explain reads, over the in-memory store (docs/api.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.api import ApiFactory

G = "/apis/codehub.io/v1alpha1"
NS = f"{G}/namespaces/alice/workspaces"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
FINALIZER = "codehub.io/finalizer"


@pytest.fixture
async def api(make_api: ApiFactory) -> Any:
    return await make_api(sse_heartbeat_interval=0.2)


async def create(api: Any, ns: str, name: str, **meta: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, **meta}, "spec": {"desired_state": "PENDING"}}
    r = await api.http.post(
        f"{G}/namespaces/{ns}/workspaces", json=body, headers=api.headers("operator")
    )
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def names(api: Any, ns: str = "alice") -> dict[str, dict[str, Any]]:
    r = await api.http.get(f"{G}/namespaces/{ns}/workspaces", headers=api.headers("admin"))
    return {o["metadata"]["name"]: o for o in (await r.json())["items"]}


# -- deletecollection ---------------------------------------------------------------------


async def test_delete_collection_by_label_honours_finalizers(api: Any) -> None:
    await create(api, "alice", "a", labels={"team": "x"})
    await create(api, "alice", "b", labels={"team": "x"}, finalizers=[FINALIZER])
    await create(api, "alice", "c", labels={"team": "y"})
    await create(api, "bob", "a", labels={"team": "x"})
    r = await api.http.delete(NS, params={"labelSelector": "team=x"}, headers=api.headers("alice"))
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["kind"] == "WorkspaceList"
    assert body["apiVersion"] == "codehub.io/v1alpha1"
    assert [o["metadata"]["name"] for o in body["items"]] == ["a", "b"]
    left = await names(api)
    assert set(left) == {"b", "c"}
    assert left["b"]["metadata"]["deletionTimestamp"]
    assert "deletionTimestamp" not in left["c"]["metadata"]
    assert set(await names(api, "bob")) == {"a"}


async def test_delete_collection_all_and_by_field(api: Any) -> None:
    for n in ("a", "b", "c"):
        await create(api, "alice", n)
    r = await api.http.delete(
        NS, params={"fieldSelector": "metadata.name=b"}, headers=api.headers("alice")
    )
    assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["b"]
    r = await api.http.delete(NS, headers=api.headers("alice"))
    assert r.status == 200
    assert await names(api) == {}


async def test_delete_collection_dry_run_deletes_nothing(api: Any) -> None:
    before = (await create(api, "alice", "a"))["metadata"]["resourceVersion"]
    r = await api.http.delete(NS, params={"dryRun": "All"}, headers=api.headers("alice"))
    assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["a"]
    assert (await names(api))["a"]["metadata"]["resourceVersion"] == before


@pytest.mark.parametrize(
    ("params", "who", "code", "needle"),
    [
        ({"labelSelector": "team=nobody"}, "alice", 200, '"items":[]'),
        ({"labelSelector": "==="}, "alice", 400, "unable to parse requirement"),
        ({"fieldSelector": "spec.image_ref=x"}, "alice", 400, "not a known field selector"),
        ({"dryRun": "Some"}, "alice", 400, "unsupported dryRun"),
        ({}, "bob", 403, 'cannot deletecollection resource \\"workspaces\\"'),
    ],
)
async def test_delete_collection_refusals_and_no_match_change_nothing(
    api: Any, params: dict[str, str], who: str, code: int, needle: str
) -> None:
    before = (await create(api, "alice", "a", labels={"team": "x"}))["metadata"]
    r = await api.http.delete(NS, params=params, headers=api.headers(who))
    assert r.status == code
    text = await r.text()
    assert needle in text.replace(" ", "") or needle in text
    if code != 200:
        assert json.loads(text)["kind"] == "Status"
    after = (await names(api))["a"]["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
    assert "deletionTimestamp" not in after


async def test_delete_collection_of_events(api: Any) -> None:
    path = "/api/v1/namespaces/alice/events"
    ev = {"metadata": {"name": "e1"}, "reason": "R", "message": "m", "type": "Normal"}
    assert (await api.http.post(path, json=ev, headers=api.headers("alice"))).status == 201
    r = await api.http.delete(path, headers=api.headers("alice"))
    assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["e1"]
    listed = await (await api.http.get(path, headers=api.headers("alice"))).json()
    assert listed["items"] == []


# -- SelfSubjectAccessReview --------------------------------------------------------------


def review(**attrs: Any) -> dict[str, Any]:
    key = "nonResourceAttributes" if "path" in attrs else "resourceAttributes"
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {key: attrs},
    }


W = {"group": "codehub.io", "resource": "workspaces"}


@pytest.mark.parametrize(
    ("who", "attrs", "allowed"),
    [
        ("alice", {**W, "verb": "create", "namespace": "alice"}, True),
        ("alice", {**W, "verb": "deletecollection", "namespace": "alice"}, True),
        ("alice", {**W, "verb": "get", "namespace": "bob"}, False),
        ("alice", {**W, "verb": "list", "namespace": ""}, False),
        ("alice", {**W, "verb": "patch", "namespace": "alice", "subresource": "status"}, False),
        ("alice", {**W, "verb": "get", "namespace": "alice", "subresource": "status"}, True),
        ("alice", {"resource": "events", "verb": "create", "namespace": "alice"}, True),
        ("alice", {"resource": "namespaces", "verb": "get", "name": "alice"}, True),
        ("alice", {"resource": "namespaces", "verb": "delete", "name": "alice"}, False),
        ("alice", {"resource": "namespaces", "verb": "get", "name": "bob"}, False),
        ("alice", {"resource": "namespaces", "verb": "list"}, True),
        ("alice", {"resource": "secrets", "verb": "get", "namespace": "alice"}, False),
        ("admin", {**W, "verb": "list", "namespace": ""}, True),
        ("operator", {**W, "verb": "patch", "namespace": "bob", "subresource": "status"}, True),
        ("alice", {"path": "/version", "verb": "get"}, True),
        ("alice", {"path": "/metrics", "verb": "get"}, False),
        ("admin", {"path": "/metrics", "verb": "get"}, True),
    ],
)
async def test_access_review_answers_per_identity(
    api: Any, who: str, attrs: dict[str, Any], allowed: bool
) -> None:
    r = await api.http.post(SSAR, json=review(**attrs), headers=api.headers(who))
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["kind"] == "SelfSubjectAccessReview"
    assert body["status"]["allowed"] is allowed
    assert body["status"].get("denied", False) is (not allowed)
    assert body["status"]["reason"]


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"spec": {}}, 422, "exactly one of nonResourceAttributes or resourceAttributes"),
        (
            {"spec": {"resourceAttributes": {}, "nonResourceAttributes": {}}},
            422,
            "exactly one",
        ),
        ({"kind": "Pod", "spec": {}}, 400, "SelfSubjectAccessReview"),
        ([1], 400, "JSON object"),
    ],
)
async def test_access_review_bad_input(api: Any, body: Any, code: int, needle: str) -> None:
    r = await api.http.post(SSAR, json=body, headers=api.headers("alice"))
    assert r.status == code
    status = await r.json()
    assert status["kind"] == "Status"
    assert needle in status["message"]


SSRR = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"


def _rules_review(namespace: Any) -> dict[str, Any]:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }


async def test_rules_review_lists_what_a_user_may_do(api: Any) -> None:
    r = await api.http.post(SSRR, json=_rules_review("alice"), headers=api.headers("alice"))
    assert r.status == 201
    rules = (await r.json())["status"]["resourceRules"]
    by_resource = {
        (rule["apiGroups"][0], rule["resources"][0]): rule
        for rule in rules
        if rule["verbs"] != ["list", "watch"]
    }
    assert "deletecollection" in by_resource[("codehub.io", "workspaces")]["verbs"]
    assert by_resource[("codehub.io", "workspaces/status")]["verbs"] == ["get"]
    assert by_resource[("", "namespaces")]["resourceNames"] == ["alice"]
    r = await api.http.post(SSRR, json=_rules_review("bob"), headers=api.headers("alice"))
    other = {rule["resources"][0] for rule in (await r.json())["status"]["resourceRules"]}
    assert "workspaces" not in other
    r = await api.http.post(SSRR, json=_rules_review("bob"), headers=api.headers("admin"))
    assert (await r.json())["status"]["resourceRules"] == [
        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
    ]


async def test_rules_review_needs_a_namespace(api: Any) -> None:
    r = await api.http.post(SSRR, json=_rules_review(None), headers=api.headers("alice"))
    assert r.status == 422
    assert (await r.json())["details"]["causes"][0]["field"] == "spec.namespace"


async def test_protobuf_review_bodies(api: Any) -> None:
    """kubectl sends reviews as Kubernetes protobuf; a broken envelope is a 400."""

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    attrs = field(1, b"alice") + field(2, b"get") + field(3, b"codehub.io")
    attrs += field(5, b"workspaces")
    review_msg = field(2, field(1, attrs))
    type_meta = field(1, b"authorization.k8s.io/v1") + field(2, b"SelfSubjectAccessReview")
    envelope = b"k8s\x00" + field(1, type_meta) + field(2, review_msg)
    headers = {**api.headers("alice"), "Content-Type": "application/vnd.kubernetes.protobuf"}
    r = await api.http.post(SSAR, data=envelope, headers=headers)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["spec"]["resourceAttributes"]["resource"] == "workspaces"
    assert body["status"]["allowed"] is True
    for broken in (b"nope", b"k8s\x00\x0a\x7f", b"k8s\x00\x0f"):
        r = await api.http.post(SSAR, data=broken, headers=headers)
        assert r.status == 400
        assert (await r.json())["kind"] == "Status"


async def test_access_review_needs_a_token(api: Any) -> None:
    assert (await api.http.post(SSAR, json=review(verb="get"))).status == 401


async def test_discovery_lists_authorization_group_and_deletecollection(api: Any) -> None:
    groups = await (await api.http.get("/apis", headers=api.headers("alice"))).json()
    assert "authorization.k8s.io" in {g["name"] for g in groups["groups"]}
    res = await (
        await api.http.get("/apis/authorization.k8s.io/v1", headers=api.headers("alice"))
    ).json()
    assert res["resources"][0]["name"] == "selfsubjectaccessreviews"
    assert res["resources"][0]["verbs"] == ["create"]
    ws = await (await api.http.get(G, headers=api.headers("alice"))).json()
    assert "deletecollection" in ws["resources"][0]["verbs"]


# -- OpenAPI for kubectl explain -----------------------------------------------------------


async def test_openapi_documents_every_served_kind(api: Any) -> None:
    index = await (await api.http.get("/openapi/v3", headers=api.headers("alice"))).json()
    kinds: set[str] = set()
    for entry in index["paths"].values():
        doc = await api.http.get(entry["serverRelativeURL"], headers=api.headers("bob"))
        body = await doc.json()
        for schema in body["components"]["schemas"].values():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                kinds.add(gvk["kind"])
                assert schema.get("description")
    assert {"Workspace", "Event", "Namespace", "SelfSubjectAccessReview"} <= kinds


# -- all-namespaces SSE -------------------------------------------------------------------


async def _states(api: Any, who: str, count: int) -> list[dict[str, Any]]:
    stream = await api.http.get("/api/v1/workspaces/events", headers=api.headers(who))
    assert stream.status == 200
    seen: list[dict[str, Any]] = []
    try:
        while len(seen) < count:
            line = (await asyncio.wait_for(stream.content.readline(), 10)).decode()
            if line.startswith("data: ") and "workspace" in line:
                seen.append(json.loads(line[6:]))
    finally:
        stream.close()
    return seen


async def test_all_namespaces_sse_admin_sees_every_namespace(api: Any) -> None:
    await create(api, "alice", "same")
    await create(api, "bob", "same")
    seen = await _states(api, "admin", 2)
    assert {(s["namespace"], s["workspace"]) for s in seen} == {("alice", "same"), ("bob", "same")}


async def test_all_namespaces_sse_user_sees_only_own_namespace(api: Any) -> None:
    await create(api, "bob", "theirs")
    await create(api, "alice", "mine")
    await create(api, "bob", "later")
    await create(api, "alice", "later")
    seen = await _states(api, "alice", 2)
    assert [(s["namespace"], s["workspace"]) for s in seen] == [
        ("alice", "later"),
        ("alice", "mine"),
    ]
