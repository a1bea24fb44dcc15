"""The API server puts the operator's finalizer on new workspaces when configured to
(``finalizer_on_create``), so kopf can act on the ADDED event (docs/api.md)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory, Identity

from codehub.crd_like.config import ApiConfig

NS = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
ALICE = {"Authorization": "Bearer a"}
OP = {"Authorization": "Bearer o"}
MERGE = "application/merge-patch+json"
FINALIZER = "codehub.io/finalizer"

Client = TestClient[Any, Any]
IDENTITIES = [Identity("a", "alice", "1"), Identity("o", "op", "3", ("codehub:operator",))]


async def client_with(make_api: ApiFactory, on: bool) -> Client:
    api = await make_api(identities=IDENTITIES, finalizer_on_create=on)
    client: Client = api.http
    return client


async def post(client: Client, name: str, **meta: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, **meta}, "spec": {"desired_state": "STANDBY"}}
    r = await client.post(NS, json=body, headers=ALICE)
    assert r.status == 201, await r.text()
    out: dict[str, Any] = await r.json()
    return out


async def test_a_created_workspace_carries_the_operator_finalizer(make_api: ApiFactory) -> None:
    client = await client_with(make_api, True)
    created = await post(client, "w")
    assert created["metadata"]["finalizers"] == [FINALIZER]
    r = await client.get(f"{NS}/w", headers=ALICE)
    assert (await r.json())["metadata"]["finalizers"] == [FINALIZER]
    theirs = await post(client, "x", finalizers=["example.com/keep"])
    assert theirs["metadata"]["finalizers"] == ["example.com/keep", FINALIZER]
    once = await post(client, "y", finalizers=[FINALIZER])
    assert once["metadata"]["finalizers"] == [FINALIZER]
    r = await client.post(
        NS,
        params={"dryRun": "All"},
        json={"metadata": {"name": "z"}, "spec": {"desired_state": "STANDBY"}},
        headers=ALICE,
    )
    assert r.status == 201
    assert (await r.json())["metadata"]["finalizers"] == [FINALIZER]


async def test_a_plain_user_still_cannot_remove_it_and_deletion_waits_for_the_operator(
    make_api: ApiFactory,
) -> None:
    client = await client_with(make_api, True)
    await post(client, "w")
    r = await client.patch(
        f"{NS}/w", json={"metadata": {"finalizers": None}}, headers={**ALICE, "Content-Type": MERGE}
    )
    assert r.status == 403
    assert FINALIZER in (await r.json())["message"]
    r = await client.delete(f"{NS}/w", headers=ALICE)
    assert r.status == 200
    r = await client.get(f"{NS}/w", headers=ALICE)
    held = await r.json()
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == [FINALIZER]
    r = await client.patch(
        f"{NS}/w", json={"metadata": {"finalizers": None}}, headers={**OP, "Content-Type": MERGE}
    )
    assert r.status == 200
    r = await client.get(f"{NS}/w", headers=ALICE)
    assert r.status == 404


async def test_off_by_default_a_created_workspace_has_no_finalizer(make_api: ApiFactory) -> None:
    client = await client_with(make_api, False)
    created = await post(client, "w")
    assert "finalizers" not in created["metadata"]
    assert ApiConfig(database_url="").finalizer_on_create is False


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_the_environment_turns_it_on(value: str, on: bool) -> None:
    env = {"CODEHUB_DATABASE_URL": "postgresql://x", "CODEHUB_FINALIZER_ON_CREATE": value}
    assert ApiConfig.from_env(env).finalizer_on_create is on
