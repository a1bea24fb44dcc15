"""Admission limits through the API (docs/limits.md): atomic under concurrency, 429 with
the details."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory, Identity

G = "/apis/codehub.io/v1alpha1"
MERGE = "application/merge-patch+json"
ALICE = {"Authorization": "Bearer alice-t"}
BOB = {"Authorization": "Bearer bob-t"}
OPERATOR = {"Authorization": "Bearer op-t"}


@pytest.fixture
async def client(make_api: ApiFactory) -> TestClient[Any, Any]:
    harness = await make_api(
        "postgres",
        identities=[
            Identity("alice-t", "alice", "u1"),
            Identity("bob-t", "bob", "u2"),
            Identity("op-t", "op", "u3", ("codehub:operator",)),
        ],
        max_running_per_user=2,
        max_running_global=3,
    )
    return harness.http


def ws(name: str, state: str | None = None) -> dict[str, Any]:
    spec = {"desired_state": state} if state else {}
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": spec,
    }


def assert_limit_body(body: dict[str, Any], limit_type: str, current: int, maximum: int) -> None:
    assert body["kind"] == "Status"
    assert body["code"] == 429
    assert body["reason"] == "TooManyRequests"
    assert body["error"] == "workspace_limit_exceeded"
    details = body["details"]
    assert details["limit_type"] == limit_type
    assert details["current"] == current
    assert details["max"] == maximum
    assert len(details["running_workspaces"]) == current
    assert all(set(r) == {"namespace", "name"} for r in details["running_workspaces"])


async def test_twenty_concurrent_creates_admit_exactly_the_per_user_limit(
    client: TestClient[Any, Any],
) -> None:
    # desired_state omitted: the default is RUNNING, which counts.
    responses = await asyncio.gather(
        *(
            client.post(f"{G}/namespaces/alice/workspaces", json=ws(f"w{i:02d}"), headers=ALICE)
            for i in range(20)
        )
    )
    codes = sorted(r.status for r in responses)
    assert codes == [201] * 2 + [429] * 18
    admitted = {(await r.json())["metadata"]["name"] for r in responses if r.status == 201}
    for r in responses:
        if r.status == 429:
            body = await r.json()
            assert_limit_body(body, "per_user", 2, 2)
            assert {x["name"] for x in body["details"]["running_workspaces"]} == admitted
    listed = await (await client.get(f"{G}/namespaces/alice/workspaces", headers=ALICE)).json()
    assert {i["metadata"]["name"] for i in listed["items"]} == admitted


async def test_twenty_concurrent_starts_admit_exactly_the_per_user_limit(
    client: TestClient[Any, Any],
) -> None:
    for i in range(20):
        r = await client.post(
            f"{G}/namespaces/alice/workspaces", json=ws(f"s{i:02d}", "STANDBY"), headers=ALICE
        )
        assert r.status == 201
    patch = json.dumps({"spec": {"desired_state": "RUNNING"}})
    responses = await asyncio.gather(
        *(
            client.patch(
                f"{G}/namespaces/alice/workspaces/s{i:02d}",
                data=patch,
                headers={**ALICE, "Content-Type": MERGE},
            )
            for i in range(20)
        )
    )
    assert sorted(r.status for r in responses) == [200] * 2 + [429] * 18
    for r in responses:
        if r.status == 429:
            assert_limit_body(await r.json(), "per_user", 2, 2)
    listed = await (await client.get(f"{G}/namespaces/alice/workspaces", headers=ALICE)).json()
    running = [i for i in listed["items"] if i["spec"]["desired_state"] == "RUNNING"]
    assert len(running) == 2


async def test_resaving_a_running_workspace_is_not_refused_and_stop_frees_a_slot(
    client: TestClient[Any, Any],
) -> None:
    for name in ("a", "b"):
        assert (
            await client.post(f"{G}/namespaces/alice/workspaces", json=ws(name), headers=ALICE)
        ).status == 201
    memo = json.dumps({"spec": {"memo": "still running"}})
    r = await client.patch(
        f"{G}/namespaces/alice/workspaces/a", data=memo, headers={**ALICE, "Content-Type": MERGE}
    )
    assert r.status == 200
    r = await client.post(f"{G}/namespaces/alice/workspaces", json=ws("c"), headers=ALICE)
    assert r.status == 429
    stop = json.dumps({"spec": {"desired_state": "STANDBY"}})
    r = await client.patch(
        f"{G}/namespaces/alice/workspaces/b", data=stop, headers={**ALICE, "Content-Type": MERGE}
    )
    assert r.status == 200
    # Still observed RUNNING (stopping): it keeps counting until the operator says otherwise.
    r = await client.patch(
        f"{G}/namespaces/alice/workspaces/b/status",
        data=json.dumps({"status": {"observed_status": "RUNNING"}}),
        headers={**OPERATOR, "Content-Type": MERGE},
    )
    assert r.status == 200
    r = await client.post(f"{G}/namespaces/alice/workspaces", json=ws("c"), headers=ALICE)
    assert r.status == 429
    # Asking b to run again is fine: it is already counted.
    r = await client.patch(
        f"{G}/namespaces/alice/workspaces/b",
        data=json.dumps({"spec": {"desired_state": "RUNNING"}}),
        headers={**ALICE, "Content-Type": MERGE},
    )
    assert r.status == 200, await r.text()
    r = await client.patch(
        f"{G}/namespaces/alice/workspaces/b", data=stop, headers={**ALICE, "Content-Type": MERGE}
    )
    r = await client.patch(
        f"{G}/namespaces/alice/workspaces/b/status",
        data=json.dumps({"status": {"observed_status": "STANDBY"}}),
        headers={**OPERATOR, "Content-Type": MERGE},
    )
    r = await client.post(f"{G}/namespaces/alice/workspaces", json=ws("c"), headers=ALICE)
    assert r.status == 201, await r.text()


async def test_global_limit(client: TestClient[Any, Any]) -> None:
    for name in ("a", "b"):
        assert (
            await client.post(f"{G}/namespaces/alice/workspaces", json=ws(name), headers=ALICE)
        ).status == 201
    assert (
        await client.post(f"{G}/namespaces/bob/workspaces", json=ws("x"), headers=BOB)
    ).status == 201
    r = await client.post(f"{G}/namespaces/bob/workspaces", json=ws("y"), headers=BOB)
    assert r.status == 429
    body = await r.json()
    assert_limit_body(body, "global", 3, 3)
    assert {(x["namespace"], x["name"]) for x in body["details"]["running_workspaces"]} == {
        ("alice", "a"),
        ("alice", "b"),
        ("bob", "x"),
    }
    metrics = await (await client.get("/metrics", headers=OPERATOR)).text()
    assert 'codehub_api_admission_refusals_total{limit_type="global"} 1.0' in metrics
