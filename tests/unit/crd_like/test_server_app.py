"""The API server app over the in-memory store: discovery, CRUD details, SSE, metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory, Identity
from support.sse import next_sse_event

from codehub.crd_like.store.memory import MemoryStore

G = "/apis/codehub.io/v1alpha1"
NS = f"{G}/namespaces/alice/workspaces"
ALICE = {"Authorization": "Bearer a"}
OP = {"Authorization": "Bearer o"}
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
USERS = [
    Identity("a", "alice", "1"),
    Identity("b", "bob", "2"),
    Identity("o", "op", "3", ("codehub:operator",)),
]

Client = TestClient[Any, Any]


@pytest.fixture
async def client(make_api: ApiFactory) -> Client:
    api = await make_api(
        identities=USERS,
        bookmark_interval=0.2,
        sse_heartbeat_interval=0.2,
        default_image="img:1",
        default_standby_ttl=60,
    )
    return api.http


async def post(client: Client, name: str, **spec: Any) -> dict[str, Any]:
    r = await client.post(NS, json={"metadata": {"name": name}, "spec": spec}, headers=ALICE)
    assert r.status == 201, await r.text()
    out: dict[str, Any] = await r.json()
    return out


async def test_discovery_documents(client: Client) -> None:
    core = await (await client.get("/api/v1", headers=ALICE)).json()
    assert {r["name"] for r in core["resources"]} == {"namespaces", "events"}
    ns = next(r for r in core["resources"] if r["name"] == "namespaces")
    assert {"list", "watch"} <= set(ns["verbs"])
    group = await (await client.get(G, headers=ALICE)).json()
    names = {r["name"]: r for r in group["resources"]}
    assert names["workspaces"]["shortNames"] == ["ws"]
    assert names["workspaces"]["namespaced"] is True
    assert "workspaces/status" in names
    groups = await (await client.get("/apis", headers=ALICE)).json()
    assert groups["groups"][0]["preferredVersion"]["groupVersion"] == "codehub.io/v1alpha1"
    # kubectl asks for aggregated discovery first; plain JSON makes it fall back.
    r = await client.get(
        "/apis",
        headers={
            **ALICE,
            "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;"
            "as=APIGroupDiscoveryList,application/json",
        },
    )
    assert r.content_type == "application/json"
    assert (await client.get("/openapi/v2", headers=ALICE)).status == 404
    version = await (await client.get("/version")).json()
    assert version["major"] == "1"


async def test_create_applies_server_defaults_and_drops_status(client: Client) -> None:
    r = await client.post(
        NS,
        json={
            "metadata": {"generateName": "dev-", "uid": "mine", "resourceVersion": "9"},
            "spec": {},
            "status": {"observed_status": "RUNNING"},
        },
        headers=ALICE,
    )
    obj = await r.json()
    assert r.status == 201, obj
    assert obj["metadata"]["name"].startswith("dev-")
    assert len(obj["metadata"]["name"]) == len("dev-") + 5
    assert obj["metadata"]["uid"] != "mine"
    assert obj["spec"] == {
        "desired_state": "RUNNING",
        "image_ref": "img:1",
        "standby_ttl_seconds": 60,
        "archive_ttl_seconds": 86400,
    }
    assert "status" not in obj
    assert obj["metadata"]["generation"] == 1


async def test_dry_run_writes_nothing(client: Client) -> None:
    r = await client.post(NS + "?dryRun=All", json={"metadata": {"name": "d"}}, headers=ALICE)
    assert r.status == 201
    assert (await client.get(NS + "/d", headers=ALICE)).status == 404
    before = await post(client, "e", desired_state="STANDBY")
    r = await client.patch(
        NS + "/e?dryRun=All",
        data=json.dumps({"spec": {"memo": "x"}}),
        headers={**ALICE, "Content-Type": MERGE},
    )
    assert (await r.json())["spec"]["memo"] == "x"
    assert await (await client.get(NS + "/e", headers=ALICE)).json() == before


async def test_generation_bumps_on_spec_changes_only(client: Client) -> None:
    await post(client, "g", desired_state="STANDBY")
    r = await client.patch(
        NS + "/g",
        data=json.dumps({"metadata": {"labels": {"a": "b"}}}),
        headers={**ALICE, "Content-Type": MERGE},
    )
    assert (await r.json())["metadata"]["generation"] == 1
    r = await client.patch(
        NS + "/g",
        data=json.dumps({"spec": {"memo": "m"}}),
        headers={**ALICE, "Content-Type": MERGE},
    )
    assert (await r.json())["metadata"]["generation"] == 2
    r = await client.patch(
        NS + "/g/status",
        data=json.dumps({"status": {"observed_status": "STANDBY"}}),
        headers={**OP, "Content-Type": MERGE},
    )
    assert (await r.json())["metadata"]["generation"] == 2


async def test_finalizers_delay_deletion_until_removed_with_guarded_json_patch(
    client: Client,
) -> None:
    await post(client, "f", desired_state="STANDBY")
    r = await client.patch(
        NS + "/f",
        data=json.dumps({"metadata": {"finalizers": ["x/y"]}}),
        headers={**OP, "Content-Type": MERGE},
    )
    assert r.status == 200
    r = await client.delete(
        NS + "/f", headers=ALICE, json={"kind": "DeleteOptions", "propagationPolicy": "Background"}
    )
    deleting = await r.json()
    assert r.status == 200
    assert deleting["metadata"]["deletionTimestamp"]
    r = await client.patch(
        NS + "/f",
        data=json.dumps({"metadata": {"finalizers": ["x/y", "z"]}}),
        headers={**OP, "Content-Type": MERGE},
    )
    assert r.status == 422
    rv = deleting["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": str(int(rv) - 1)},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    r = await client.patch(NS + "/f", data=json.dumps(ops), headers={**OP, "Content-Type": JSONP})
    assert r.status == 422
    ops[0]["value"] = rv
    r = await client.patch(NS + "/f", data=json.dumps(ops), headers={**OP, "Content-Type": JSONP})
    assert r.status == 200
    assert (await client.get(NS + "/f", headers=ALICE)).status == 404


async def test_delete_preconditions(client: Client) -> None:
    obj = await post(client, "p", desired_state="STANDBY")
    r = await client.delete(NS + "/p", headers=ALICE, json={"preconditions": {"uid": "not-it"}})
    assert r.status == 409
    r = await client.delete(
        NS + "/p", headers=ALICE, json={"preconditions": {"uid": obj["metadata"]["uid"]}}
    )
    assert r.status == 200
    r = await client.delete(NS + "/p", headers=ALICE)
    assert (await r.json())["reason"] == "NotFound"


async def test_list_pagination_and_label_selector(client: Client) -> None:
    for i in range(5):
        r = await client.post(
            NS,
            json={
                "metadata": {"name": f"l{i}", "labels": {"odd": str(i % 2)}},
                "spec": {"desired_state": "PENDING"},
            },
            headers=ALICE,
        )
        assert r.status == 201
    page = await (await client.get(NS + "?limit=2", headers=ALICE)).json()
    names = [i["metadata"]["name"] for i in page["items"]]
    while page["metadata"].get("continue"):
        page = await (
            await client.get(
                NS, params={"limit": "2", "continue": page["metadata"]["continue"]}, headers=ALICE
            )
        ).json()
        names += [i["metadata"]["name"] for i in page["items"]]
    assert names == [f"l{i}" for i in range(5)]
    odd = await (await client.get(NS + "?labelSelector=odd%3D1", headers=ALICE)).json()
    assert [i["metadata"]["name"] for i in odd["items"]] == ["l1", "l3"]


async def test_sse_state_changes_errors_and_heartbeats(client: Client) -> None:
    await post(client, "s", desired_state="STANDBY")
    stream = await client.get("/api/v1/namespaces/alice/workspaces/s/events", headers=ALICE)
    assert stream.headers["Content-Type"].startswith("text/event-stream")

    async def next_event(kind: str | None = None) -> tuple[str, dict[str, Any]]:
        return await next_sse_event(stream, kind)

    assert await next_event() == (
        "state_changed",
        {
            "workspace": "s",
            "namespace": "alice",
            "observed_status": None,
            "display": None,
            "operation": None,
            "desired_state": "STANDBY",
            "progress": None,
        },
    )
    await client.patch(
        NS + "/s/status",
        headers={**OP, "Content-Type": MERGE},
        data=json.dumps(
            {"status": {"observed_status": "PENDING", "archive_key": "k", "operation": "NONE"}}
        ),
    )
    _, state = await next_event("state_changed")
    assert (state["observed_status"], state["display"], state["operation"]) == (
        "PENDING",
        "ARCHIVED",
        "NONE",
    )
    # A change of an untracked field sends nothing; the next tracked change does.
    await client.patch(
        NS + "/s",
        headers={**ALICE, "Content-Type": MERGE},
        data=json.dumps({"spec": {"memo": "quiet"}}),
    )
    await client.patch(
        NS + "/s/status",
        headers={**OP, "Content-Type": MERGE},
        data=json.dumps(
            {
                "status": {
                    "error_count": 1,
                    "error_info": {"reason": "Unreachable", "message": "down", "error_count": 1},
                }
            }
        ),
    )
    event, data = await next_event()
    while event == "heartbeat":
        event, data = await next_event()
    assert (event, data) == (
        "error",
        {"workspace": "s", "message": "down", "error_count": 1, "reason": "Unreachable"},
    )
    assert (await next_event("heartbeat"))[0] == "heartbeat"
    await client.delete(NS + "/s", headers=ALICE)
    _, gone = await next_event("state_changed")
    assert gone["observed_status"] == "DELETED"
    stream.close()


async def test_namespaces_and_unknown_paths(client: Client) -> None:
    await post(client, "n", desired_state="PENDING")
    ns = await (await client.get("/api/v1/namespaces", headers=OP)).json()
    assert [n["metadata"]["name"] for n in ns["items"]] == ["alice", "bob"]
    one = await (await client.get("/api/v1/namespaces/alice", headers=ALICE)).json()
    assert one["status"]["phase"] == "Active"
    watch = await client.get("/api/v1/namespaces?watch=true&timeoutSeconds=1", headers=OP)
    lines = [json.loads(x) for x in (await watch.read()).decode().splitlines() if x]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
        ("ADDED", "alice"),
        ("ADDED", "bob"),
    ]
    r = await client.get("/apis/other.io/v1/things", headers=ALICE)
    assert r.status == 404
    assert (await r.json())["kind"] == "Status"
    r = await client.post("/api/v1/namespaces", headers=ALICE)
    assert r.status == 405
    assert (await r.json())["reason"] == "MethodNotAllowed"


async def test_metrics_count_requests_by_verb_and_code(client: Client) -> None:
    await post(client, "m", desired_state="PENDING")
    await client.get(NS + "/missing", headers=ALICE)
    text = await (await client.get("/metrics", headers=OP)).text()
    assert 'codehub_api_requests_total{code="201",resource="workspaces",verb="create"} 1.0' in text
    assert 'codehub_api_requests_total{code="404",resource="workspaces",verb="get"} 1.0' in text
    assert "codehub_api_request_duration_seconds_bucket" in text
    assert "codehub_api_open_watches" in text


async def test_old_events_expire() -> None:
    import datetime

    from codehub.crd_like.server.app import expire_events

    store = MemoryStore()
    for name, last in (("old", "2026-01-01T00:00:00Z"), ("new", "2026-01-01T00:59:00Z")):
        await store.create(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": "alice"},
                "lastTimestamp": last,
            },
        )
    now = datetime.datetime(2026, 1, 1, 1, 0, tzinfo=datetime.UTC)
    assert await expire_events(store, 3600, now) == 1
    assert [e["metadata"]["name"] for e in (await store.list("events")).items] == ["new"]


async def test_sse_of_a_missing_workspace_is_a_404_not_a_silent_stream(client: Client) -> None:
    missing = await client.get("/api/v1/namespaces/alice/workspaces/nope/events", headers=ALICE)
    assert missing.status == 404
    body = await missing.json()
    assert (body["kind"], body["reason"]) == ("Status", "NotFound")
    assert body["message"] == 'workspaces.codehub.io "nope" not found'
    # Resuming is not refused: the client may be owed the deletion it missed.
    await post(client, "gone-soon", desired_state="STANDBY")
    deleted = await client.delete(NS + "/gone-soon", headers=ALICE)
    assert deleted.status == 200
    resumed = await client.get(
        "/api/v1/namespaces/alice/workspaces/gone-soon/events",
        headers={**ALICE, "Last-Event-ID": "1"},
    )
    assert resumed.status == 200
    resumed.close()


async def test_sse_resumes_after_last_event_id_without_initial_burst(client: Client) -> None:
    created = await post(client, "r", desired_state="STANDBY")
    stream = await client.get(
        "/api/v1/namespaces/alice/workspaces/r/events",
        headers={**ALICE, "Last-Event-ID": created["metadata"]["resourceVersion"]},
    )
    r = await client.patch(
        NS + "/r",
        headers={**ALICE, "Content-Type": MERGE},
        data=json.dumps({"spec": {"desired_state": "PENDING"}}),
    )
    rv = (await r.json())["metadata"]["resourceVersion"]
    lines: list[str] = []
    while not any(line.startswith("data: ") for line in lines):
        line = (await asyncio.wait_for(stream.content.readline(), 10)).decode().strip()
        if line.startswith("event: heartbeat"):
            lines = []
            await stream.content.readline()
            continue
        if line:
            lines.append(line)
    stream.close()
    assert lines[0] == f"id: {rv}"
    assert lines[1] == "event: state_changed"
    assert json.loads(lines[2][6:])["desired_state"] == "PENDING"
