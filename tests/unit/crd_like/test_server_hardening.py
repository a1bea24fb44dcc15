"""Hostile and sloppy requests against the API server (in-memory store): every refusal is
a Status with the exact code and reason, and the stored object is unchanged after it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.api import ApiFactory, Identity

from codehub.crd_like.server import watch as watch_module
from codehub.crd_like.server.app import use_status_errors
from codehub.crd_like.server.bodies import MAX_DEPTH
from codehub.crd_like.server.context import CTX_KEY

G = "/apis/codehub.io/v1alpha1"
NS = f"{G}/namespaces/alice/workspaces"
ALICE = {"Authorization": "Bearer a"}
OP = {"Authorization": "Bearer o"}
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
FINALIZER = "codehub.io/finalizer"

Client = TestClient[Any, Any]


@pytest.fixture
async def client(make_api: ApiFactory) -> Client:
    api = await make_api(
        identities=[
            Identity("a", "alice", "1"),
            Identity("b", "bob", "2"),
            Identity("o", "op", "3", ("codehub:operator",)),
        ],
        bookmark_interval=0.2,
        sse_heartbeat_interval=0.2,
        default_image="img:1",
        max_streams_per_user=2,
    )
    assert api.http.server.runner is not None
    use_status_errors(api.http.server.runner)
    return api.http


async def create(client: Client, name: str = "w", **meta: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, **meta}, "spec": {"desired_state": "STANDBY"}}
    r = await client.post(NS, json=body, headers=ALICE)
    assert r.status == 201, await r.text()
    out: dict[str, Any] = await r.json()
    return out


async def stored(client: Client, name: str = "w") -> dict[str, Any]:
    r = await client.get(f"{NS}/{name}", headers=OP)
    assert r.status == 200
    out: dict[str, Any] = await r.json()
    return out


async def status_of(r: Any, code: int, reason: str) -> dict[str, Any]:
    assert r.status == code, await r.text()
    body: dict[str, Any] = json.loads(await r.text())
    assert body["kind"] == "Status"
    assert body["reason"] == reason
    assert body["code"] == code
    return body


async def names(client: Client) -> list[str]:
    r = await client.get(NS, headers=ALICE)
    return [i["metadata"]["name"] for i in (await r.json())["items"]]


# -- 1. YAML aliases and echoed values ----------------------------------------------------

BILLION_LAUGHS = b"""metadata: {name: laughs}
spec:
  memo: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  x: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  y: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  z: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
"""


async def test_yaml_aliases_are_refused_before_expansion(client: Client) -> None:
    r = await client.post(
        NS, data=BILLION_LAUGHS, headers={**ALICE, "Content-Type": "application/yaml"}
    )
    body = await status_of(r, 400, "BadRequest")
    assert "aliases are not allowed" in body["message"]
    assert len(await r.read()) < 1000
    assert await names(client) == []


async def test_error_messages_quote_only_a_prefix_of_a_huge_value(client: Client) -> None:
    memo = "m" * 900_000
    r = await client.post(
        NS, json={"metadata": {"name": "big"}, "spec": {"memo": memo}}, headers=ALICE
    )
    body = await status_of(r, 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.memo"
    assert len(await r.read()) < 4000
    assert await names(client) == []


# -- 2. Nesting depth -----------------------------------------------------------------------


def deep_json(levels: int) -> bytes:
    return b'{"metadata":{"name":"deep"},"spec":{"memo":' + b"[" * levels + b"]" * levels + b"}}"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", deep_json(1000)),
        (
            "application/yaml",
            b"metadata: {name: deep}\nspec:\n  memo: " + b"[" * 1000 + b"]" * 1000,
        ),
    ],
)
async def test_deep_bodies_are_a_400_not_a_500(
    client: Client, content_type: str, body: bytes
) -> None:
    r = await client.post(NS, data=body, headers={**ALICE, "Content-Type": content_type})
    out = await status_of(r, 400, "BadRequest")
    assert f"at most {MAX_DEPTH} levels" in out["message"]
    assert await names(client) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (MERGE, b'{"spec":{"memo":' + b"[" * 1000 + b"]" * 1000 + b"}}"),
        (JSONP, b'[{"op":"add","path":"/spec/memo","value":' + b"[" * 1000 + b"]" * 1000 + b"}]"),
    ],
)
async def test_deep_patches_are_a_400_and_change_nothing(
    client: Client, content_type: str, body: bytes
) -> None:
    before = await create(client)
    r = await client.patch(f"{NS}/w", data=body, headers={**ALICE, "Content-Type": content_type})
    await status_of(r, 400, "BadRequest")
    assert await stored(client) == before


# -- 3. The operator's finalizer --------------------------------------------------------------


async def with_finalizer(client: Client) -> dict[str, Any]:
    await create(client)
    r = await client.patch(
        f"{NS}/w",
        json={"metadata": {"finalizers": [FINALIZER]}},
        headers={**OP, "Content-Type": MERGE},
    )
    assert r.status == 200
    out: dict[str, Any] = await r.json()
    return out


@pytest.mark.parametrize(
    ("content_type", "patch"),
    [
        (MERGE, {"metadata": {"finalizers": None}}),
        (MERGE, {"metadata": {"finalizers": ["mine"]}}),
        (JSONP, [{"op": "remove", "path": "/metadata/finalizers/0"}]),
    ],
)
async def test_plain_user_cannot_remove_the_operator_finalizer(
    client: Client, content_type: str, patch: Any
) -> None:
    before = await with_finalizer(client)
    r = await client.patch(
        f"{NS}/w", data=json.dumps(patch), headers={**ALICE, "Content-Type": content_type}
    )
    body = await status_of(r, 403, "Forbidden")
    assert FINALIZER in body["message"]
    assert await stored(client) == before
    r = await client.delete(f"{NS}/w", headers=ALICE)
    assert r.status == 200
    after = await stored(client)
    assert after["metadata"]["finalizers"] == [FINALIZER]
    assert after["metadata"]["deletionTimestamp"]


async def test_replace_without_finalizers_keeps_them_and_the_operator_may_remove(
    client: Client,
) -> None:
    current = await with_finalizer(client)
    body = {
        "apiVersion": current["apiVersion"],
        "kind": current["kind"],
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": current["spec"],
    }
    r = await client.put(f"{NS}/w", json=body, headers=ALICE)
    assert r.status == 200
    assert (await r.json())["metadata"]["finalizers"] == [FINALIZER]
    r = await client.patch(
        f"{NS}/w", json={"metadata": {"finalizers": None}}, headers={**OP, "Content-Type": MERGE}
    )
    assert r.status == 200
    assert "finalizers" not in (await r.json())["metadata"]


# -- 4. Content-Type and Accept ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/vnd.kubernetes.protobuf",
    ],
)
async def test_bodies_of_other_media_types_are_415(client: Client, content_type: str) -> None:
    body = json.dumps({"metadata": {"name": "t"}, "spec": {}})
    r = await client.post(NS, data=body, headers={**ALICE, "Content-Type": content_type})
    await status_of(r, 415, "UnsupportedMediaType")
    assert await names(client) == []


async def test_put_of_another_media_type_is_415_and_changes_nothing(client: Client) -> None:
    before = await create(client)
    r = await client.put(
        f"{NS}/w", data=json.dumps(before), headers={**ALICE, "Content-Type": "text/plain"}
    )
    await status_of(r, 415, "UnsupportedMediaType")
    assert await stored(client) == before


@pytest.mark.parametrize("accept", ["application/xml", "application/yaml", "text/html"])
async def test_unservable_accept_is_406(client: Client, accept: str) -> None:
    await create(client)
    r = await client.get(f"{NS}/w", headers={**ALICE, "Accept": accept})
    await status_of(r, 406, "NotAcceptable")
    r = await client.get(f"{NS}/w", headers={**ALICE, "Accept": f"{accept}, application/json"})
    assert r.status == 200


# -- 5. PUT must say what it is ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["apiVersion", "kind", "metadata"])
async def test_put_without_type_or_metadata_is_400(client: Client, missing: str) -> None:
    before = await create(client, labels={"team": "x"}, annotations={"note": "keep"})
    body = {k: v for k, v in before.items() if k not in (missing, "status")}
    r = await client.put(f"{NS}/w", json=body, headers=ALICE)
    out = await status_of(r, 400, "BadRequest")
    assert out["details"]["causes"][0]["field"] == missing
    assert await stored(client) == before


# -- 6. Labels and annotations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("labels", {"k" * 300: "v"}),
        ("labels", {"bad key!": "v"}),
        ("labels", {"ok": "v" * 64}),
        ("labels", {"ok": "bad value!"}),
        ("labels", {"Bad_Prefix/ok": "v"}),
        ("annotations", {"bad key!": "v"}),
        ("annotations", {"big": "x" * (256 * 1024)}),
    ],
)
async def test_invalid_labels_and_annotations_are_422(
    client: Client, field: str, value: dict[str, str]
) -> None:
    body = {"metadata": {"name": "l", field: value}, "spec": {}}
    r = await client.post(NS, json=body, headers=ALICE)
    out = await status_of(r, 422, "Invalid")
    assert out["details"]["causes"][0]["field"] == f"metadata.{field}"
    assert await names(client) == []


async def test_valid_qualified_label_keys_are_accepted(client: Client) -> None:
    obj = await create(client, labels={"codehub.io/team": "a.b-c_d", "empty": ""})
    assert obj["metadata"]["labels"]["codehub.io/team"] == "a.b-c_d"


async def test_invalid_label_patch_changes_nothing(client: Client) -> None:
    before = await create(client)
    r = await client.patch(
        f"{NS}/w",
        json={"metadata": {"labels": {"bad key!": "v"}}},
        headers={**ALICE, "Content-Type": MERGE},
    )
    await status_of(r, 422, "Invalid")
    assert await stored(client) == before


# -- 7. Future resourceVersions and continue tokens ----------------------------------------------


async def test_watch_from_a_future_resource_version_is_504(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "RV_WAIT_SECONDS", 0.05)
    await create(client)
    r = await client.get(NS, params={"watch": "true", "resourceVersion": "999999"}, headers=ALICE)
    body = await status_of(r, 504, "Timeout")
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    r = await client.get(
        "/api/v1/namespaces/alice/workspaces/events",
        headers={**ALICE, "Last-Event-ID": "999999"},
    )
    body = await status_of(r, 504, "Timeout")
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


@pytest.mark.parametrize(
    "token", ["garbage", "eyJ2IjoxLCJydiI6OTk5OTk5LCJucyI6ImFsaWNlIiwibiI6IncifQ"]
)
async def test_tampered_continue_token_is_400(client: Client, token: str) -> None:
    await create(client, "a")
    await create(client, "b")
    r = await client.get(NS, params={"limit": "1", "continue": token}, headers=ALICE)
    body = await status_of(r, 400, "BadRequest")
    assert body["message"] == "continue key is not valid"
    first = await (await client.get(NS, params={"limit": "1"}, headers=ALICE)).json()
    r = await client.get(
        NS, params={"limit": "1", "continue": first["metadata"]["continue"]}, headers=ALICE
    )
    assert [i["metadata"]["name"] for i in (await r.json())["items"]] == ["b"]


# -- 8. Small inconsistencies -------------------------------------------------------------------


@pytest.mark.parametrize("path", [NS, f"{NS}/w"])
async def test_non_numeric_resource_version_is_400(client: Client, path: str) -> None:
    await create(client)
    r = await client.get(path, params={"resourceVersion": "abc"}, headers=ALICE)
    await status_of(r, 400, "BadRequest")


@pytest.mark.parametrize("selector", ["===", "=", "a=b=c!", "bad key!=x"])
async def test_malformed_label_selector_is_400(client: Client, selector: str) -> None:
    r = await client.get(NS, params={"labelSelector": selector}, headers=ALICE)
    await status_of(r, 400, "BadRequest")


async def test_not_equal_label_selector(client: Client) -> None:
    await create(client, "a", labels={"team": "x"})
    await create(client, "b", labels={"team": "y"})
    await create(client, "c")
    r = await client.get(NS, params={"labelSelector": "team!=x"}, headers=ALICE)
    assert [i["metadata"]["name"] for i in (await r.json())["items"]] == ["b", "c"]


async def test_405_names_the_allowed_methods(client: Client) -> None:
    r = await client.post(f"{NS}/w", json={}, headers=ALICE)
    await status_of(r, 405, "MethodNotAllowed")
    assert "GET" in r.headers["Allow"]
    assert "PATCH" in r.headers["Allow"]


async def raw_request(client: Client, request: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    code = int(head.split(b" ")[1])
    assert b"application/json" in head
    return code, json.loads(body)


async def test_protocol_errors_are_status_bodies(client: Client) -> None:
    code, body = await raw_request(
        client, b"GET /version HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n"
    )
    assert (code, body["kind"], body["reason"]) == (400, "Status", "BadRequest")
    long_url = b"/api/" + b"a" * 10000
    code, body = await raw_request(client, b"GET " + long_url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code in (400, 414)
    assert body["kind"] == "Status"


# -- 11. Stream limits and /metrics ------------------------------------------------------------


async def test_open_streams_per_user_are_bounded(client: Client) -> None:
    params = {"watch": "true", "timeoutSeconds": "30"}
    first = await client.get(NS, params=params, headers=ALICE)
    second = await client.get("/api/v1/namespaces/alice/workspaces/events", headers=ALICE)
    assert (first.status, second.status) == (200, 200)
    r = await client.get(NS, params=params, headers=ALICE)
    body = await status_of(r, 429, "TooManyRequests")
    assert "at most 2" in body["message"]
    other = await client.get(NS, params=params, headers=OP)
    assert other.status == 200
    for resp in (first, second, other):
        resp.close()


async def test_metrics_need_an_operator_or_admin_token(client: Client) -> None:
    await status_of(await client.get("/metrics"), 401, "Unauthorized")
    await status_of(await client.get("/metrics", headers=ALICE), 403, "Forbidden")
    r = await client.get("/metrics", headers=OP)
    assert r.status == 200
    assert "codehub_api_requests_total" in await r.text()


async def test_sse_expiry_is_not_an_error_event(client: Client) -> None:
    assert isinstance(client.server, TestServer)
    ctx = client.server.app[CTX_KEY]
    for i in range(5):
        await create(client, f"e{i}")
    await ctx.store.compact(1)
    r = await client.get(
        "/api/v1/namespaces/alice/workspaces/events", headers={**ALICE, "Last-Event-ID": "1"}
    )
    text = await r.text()
    assert "event: expired" in text
    assert "event: error" not in text
