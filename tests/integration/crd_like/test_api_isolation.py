"""Isolation: a user sees and changes only their own namespace — for list, get, watch,
patch, delete and SSE — plain users cannot write status, and a request without a valid
token is 401. Choices (docs/api.md): another user's namespace is 403, a cluster-wide
list or watch by a plain user is 403."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory, Identity, bearer

G = "/apis/codehub.io/v1alpha1"
MERGE = "application/merge-patch+json"


@dataclass
class Api:
    client: TestClient[Any, Any]

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return bearer(token)


#: The operator here holds only its own group, to show that group alone is enough.
USERS = [
    Identity("alice-t", "alice", "u1"),
    Identity("bob-t", "bob", "u2"),
    Identity("admin-t", "admin", "u3", ("codehub:admin",)),
    Identity("operator-t", "operator", "u4", ("codehub:operator",)),
]


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    harness = await make_api(
        "postgres", identities=USERS, bookmark_interval=0.5, sse_heartbeat_interval=0.5
    )
    return Api(harness.http)


def ws(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": "STANDBY"},
    }


async def create(api: Api, user: str, name: str) -> dict[str, Any]:
    resp = await api.client.post(
        f"{G}/namespaces/{user}/workspaces", json=ws(name), headers=api.auth(f"{user}-t")
    )
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def assert_status(resp: Any, code: int) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    assert resp.status == code, body
    assert body["kind"] == "Status"
    assert body["code"] == code
    return body


async def test_other_users_namespace_is_forbidden_for_every_verb(api: Api) -> None:
    await create(api, "bob", "bobs")
    before = await (
        await api.client.get(f"{G}/namespaces/bob/workspaces/bobs", headers=api.auth("bob-t"))
    ).json()
    alice = api.auth("alice-t")
    item = f"{G}/namespaces/bob/workspaces/bobs"
    attempts = [
        api.client.get(f"{G}/namespaces/bob/workspaces", headers=alice),
        api.client.get(f"{G}/namespaces/bob/workspaces?watch=true&timeoutSeconds=1", headers=alice),
        api.client.get(item, headers=alice),
        api.client.get(item + "/status", headers=alice),
        api.client.patch(
            item,
            data=json.dumps({"spec": {"desired_state": "PENDING"}}),
            headers={**alice, "Content-Type": MERGE},
        ),
        api.client.put(item, json=ws("bobs"), headers=alice),
        api.client.delete(item, headers=alice),
        api.client.post(f"{G}/namespaces/bob/workspaces", json=ws("planted"), headers=alice),
        api.client.get("/api/v1/namespaces/bob/workspaces/bobs/events", headers=alice),
        api.client.get("/api/v1/namespaces/bob/workspaces/events", headers=alice),
        api.client.get("/api/v1/namespaces/bob/events", headers=alice),
        api.client.get("/api/v1/namespaces/bob", headers=alice),
    ]
    for attempt in attempts:
        body = await assert_status(await attempt, 403)
        assert 'User "alice"' in body["message"]
    after = await (await api.client.get(item, headers=api.auth("bob-t"))).json()
    assert after == before
    listed = await (
        await api.client.get(f"{G}/namespaces/bob/workspaces", headers=api.auth("bob-t"))
    ).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["bobs"]


async def test_cluster_wide_list_and_watch_are_for_privileged_identities(api: Api) -> None:
    await create(api, "alice", "a1")
    await create(api, "bob", "b1")
    for path in (f"{G}/workspaces", f"{G}/workspaces?watch=true&timeoutSeconds=1"):
        await assert_status(await api.client.get(path, headers=api.auth("alice-t")), 403)
    for token in ("admin-t", "operator-t"):
        listed = await (await api.client.get(f"{G}/workspaces", headers=api.auth(token))).json()
        assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["a1", "b1"]
    namespaces = await (
        await api.client.get("/api/v1/namespaces", headers=api.auth("alice-t"))
    ).json()
    assert [n["metadata"]["name"] for n in namespaces["items"]] == ["alice"]


async def test_watch_and_sse_of_own_namespace_never_show_other_users(api: Api) -> None:
    await create(api, "alice", "mine")
    watch = await api.client.get(
        f"{G}/namespaces/alice/workspaces?watch=true&timeoutSeconds=60",
        headers=api.auth("alice-t"),
    )
    sse = await api.client.get(
        "/api/v1/namespaces/alice/workspaces/events", headers=api.auth("alice-t")
    )
    assert watch.status == 200
    assert sse.status == 200
    await create(api, "bob", "theirs")
    await api.client.patch(
        f"{G}/namespaces/alice/workspaces/mine",
        data=json.dumps({"spec": {"memo": "changed"}}),
        headers={**api.auth("alice-t"), "Content-Type": MERGE},
    )
    events: list[tuple[str, str]] = []
    while not events or events[-1][0] != "MODIFIED":
        event = json.loads(await asyncio.wait_for(watch.content.readline(), 30))
        events.append((event["type"], event["object"]["metadata"]["name"]))
    watch.close()
    # bob's create was committed before alice's patch, so it would have come first.
    assert events == [("ADDED", "mine"), ("MODIFIED", "mine")]

    seen: list[str] = []
    heartbeats = 0
    while heartbeats < 2:
        line = (await asyncio.wait_for(sse.content.readline(), 10)).decode()
        if line.startswith("data: ") and '"workspace"' in line:
            seen.append(json.loads(line[6:])["workspace"])
        if line.startswith("event: heartbeat"):
            heartbeats += 1
    sse.close()
    assert seen
    assert set(seen) == {"mine"}


async def test_plain_users_cannot_write_status_operator_and_admin_can(api: Api) -> None:
    await create(api, "alice", "w")
    item = f"{G}/namespaces/alice/workspaces/w/status"
    patch = json.dumps({"status": {"observed_status": "RUNNING"}})
    await assert_status(
        await api.client.patch(
            item, data=patch, headers={**api.auth("alice-t"), "Content-Type": MERGE}
        ),
        403,
    )
    current = await (await api.client.get(item, headers=api.auth("alice-t"))).json()
    await assert_status(await api.client.put(item, json=current, headers=api.auth("alice-t")), 403)
    assert "status" not in current
    for token, state in (("operator-t", "RUNNING"), ("admin-t", "STANDBY")):
        body = json.dumps({"status": {"observed_status": state}})
        resp = await api.client.patch(
            item, data=body, headers={**api.auth(token), "Content-Type": MERGE}
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"]["observed_status"] == state
    # A status sent on the main resource is ignored, as on a real cluster.
    resp = await api.client.patch(
        f"{G}/namespaces/alice/workspaces/w",
        data=json.dumps({"status": {"observed_status": "ERROR"}, "spec": {"memo": "m"}}),
        headers={**api.auth("alice-t"), "Content-Type": MERGE},
    )
    assert resp.status == 200
    assert (await resp.json())["status"]["observed_status"] == "STANDBY"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic YWxpY2U6eA==", "Bearer "])
async def test_missing_or_invalid_token_is_401(api: Api, header: str | None) -> None:
    await create(api, "alice", "w")
    headers = {"Authorization": header} if header is not None else {}
    paths = [
        "/api",
        "/apis/codehub.io/v1alpha1",
        f"{G}/namespaces/alice/workspaces",
        f"{G}/namespaces/alice/workspaces/w",
        f"{G}/namespaces/alice/workspaces?watch=true&timeoutSeconds=1",
        "/api/v1/namespaces/alice/workspaces/w/events",
        "/api/v1/namespaces",
        "/openapi/v3",
    ]
    for path in paths:
        await assert_status(await api.client.get(path, headers=headers), 401)
    await assert_status(
        await api.client.delete(f"{G}/namespaces/alice/workspaces/w", headers=headers), 401
    )
    still = await api.client.get(f"{G}/namespaces/alice/workspaces/w", headers=api.auth("alice-t"))
    assert still.status == 200
    for public in ("/healthz", "/readyz", "/version"):
        assert (await api.client.get(public, headers=headers)).status == 200
