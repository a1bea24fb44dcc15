"""Hostile input against the API server on real PostgreSQL: each refusal has its exact
code and Status reason, and the stored object is unchanged afterwards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory

from codehub.crd_like.server import watch as watch_module

BASE = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
SSE = "/api/v1/namespaces/alice/workspaces/events"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
FINALIZER = "codehub.io/finalizer"


@dataclass
class Api:
    client: TestClient[Any, Any]
    alice: dict[str, str]
    admin: dict[str, str]


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    harness = await make_api("postgres", max_streams_per_user=1)
    return Api(harness.http, harness.headers("alice"), harness.headers("admin"))


def ws(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, **meta},
        "spec": {"desired_state": "STANDBY"},
    }


async def make(api: Api, name: str = "target", **meta: Any) -> dict[str, Any]:
    r = await api.client.post(BASE, json=ws(name, **meta), headers=api.alice)
    assert r.status == 201, await r.text()
    out: dict[str, Any] = await r.json()
    return out


async def stored(api: Api, name: str = "target") -> dict[str, Any] | None:
    r = await api.client.get(f"{BASE}/{name}", headers=api.admin)
    if r.status == 404:
        return None
    out: dict[str, Any] = await r.json()
    return out


async def refused(r: Any, code: int, reason: str) -> dict[str, Any]:
    text = await r.text()
    assert r.status == code, text
    body: dict[str, Any] = json.loads(text)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", reason, code)
    return body


LAUGHS = b"""metadata: {name: laughs}
spec:
  memo: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: [*e,*e,*e,*e,*e,*e,*e,*e,*e]
"""
DEEP = b"[" * 1000 + b"]" * 1000

# (id, method, suffix, content type, body, code, reason)
# fmt: off
CASES: list[tuple[str, str, str, str, bytes, int, str]] = [
    ("1-yaml-aliases", "POST", "", "application/yaml", LAUGHS, 400, "BadRequest"),
    ("2-deep-json", "POST", "", "application/json",
     b'{"metadata":{"name":"d"},"spec":{"memo":' + DEEP + b"}}", 400, "BadRequest"),
    ("2-deep-yaml", "POST", "", "application/yaml",
     b"metadata: {name: d}\nspec: {memo: " + DEEP + b"}", 400, "BadRequest"),
    ("2-deep-merge-patch", "PATCH", "/target", MERGE,
     b'{"spec":{"memo":' + DEEP + b"}}", 400, "BadRequest"),
    ("2-deep-json-patch", "PATCH", "/target", JSONP,
     b'[{"op":"add","path":"/spec/memo","value":' + DEEP + b"}]", 400, "BadRequest"),
    ("4-text-plain", "POST", "", "text/plain", json.dumps(ws("t")).encode(), 415,
     "UnsupportedMediaType"),
    ("4-xml-put", "PUT", "/target", "application/xml", b"<Workspace/>", 415,
     "UnsupportedMediaType"),
    ("4-form", "POST", "", "application/x-www-form-urlencoded", b"a=b", 415,
     "UnsupportedMediaType"),
    ("5-put-no-kind", "PUT", "/target", "application/json",
     json.dumps({k: v for k, v in ws("target").items() if k != "kind"}).encode(), 400,
     "BadRequest"),
    ("5-put-no-metadata", "PUT", "/target", "application/json",
     json.dumps({k: v for k, v in ws("target").items() if k != "metadata"}).encode(), 400,
     "BadRequest"),
    ("6-long-label-key", "PATCH", "/target", MERGE,
     json.dumps({"metadata": {"labels": {"k" * 300: "v"}}}).encode(), 422, "Invalid"),
    ("6-bad-label-key", "PATCH", "/target", MERGE,
     json.dumps({"metadata": {"labels": {"bad key!": "v"}}}).encode(), 422, "Invalid"),
    ("6-bad-annotation-key", "PATCH", "/target", MERGE,
     json.dumps({"metadata": {"annotations": {"bad key!": "v"}}}).encode(), 422, "Invalid"),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "suffix", "content_type", "body", "code", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_refused_and_nothing_changed(
    api: Api, method: str, suffix: str, content_type: str, body: bytes, code: int, reason: str
) -> None:
    before = await make(api, labels={"team": "x"}, annotations={"note": "keep"})
    r = await api.client.request(
        method, BASE + suffix, data=body, headers={**api.alice, "Content-Type": content_type}
    )
    status = await refused(r, code, reason)
    assert len(await r.read()) < 4096
    assert "Error" not in status["message"]
    assert await stored(api) == before
    for other in ("laughs", "d", "t"):
        assert await stored(api, other) is None


async def test_huge_memo_is_not_echoed(api: Api) -> None:
    body = ws("memo")
    body["spec"]["memo"] = "m" * 900_000
    r = await api.client.post(BASE, json=body, headers=api.alice)
    await refused(r, 422, "Invalid")
    assert len(await r.read()) < 4096
    assert await stored(api, "memo") is None


async def test_plain_user_cannot_remove_the_operator_finalizer(api: Api) -> None:
    await make(api)
    r = await api.client.patch(
        f"{BASE}/target",
        json={"metadata": {"finalizers": [FINALIZER]}},
        headers={**api.admin, "Content-Type": MERGE},
    )
    before = await r.json()
    r = await api.client.patch(
        f"{BASE}/target",
        json={"metadata": {"finalizers": None}},
        headers={**api.alice, "Content-Type": MERGE},
    )
    body = await refused(r, 403, "Forbidden")
    assert FINALIZER in body["message"]
    assert await stored(api) == before
    assert (await api.client.delete(f"{BASE}/target", headers=api.alice)).status == 200
    after = await stored(api)
    assert after is not None
    assert after["metadata"]["finalizers"] == [FINALIZER]


async def test_accept_of_an_unserved_type_is_406(api: Api) -> None:
    await make(api)
    r = await api.client.get(f"{BASE}/target", headers={**api.alice, "Accept": "application/xml"})
    await refused(r, 406, "NotAcceptable")


async def test_future_resource_version_is_504(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_module, "RV_WAIT_SECONDS", 0.2)
    await make(api)
    r = await api.client.get(
        BASE, params={"watch": "true", "resourceVersion": "99999999"}, headers=api.alice
    )
    body = await refused(r, 504, "Timeout")
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    r = await api.client.get(SSE, headers={**api.alice, "Last-Event-ID": "99999999"})
    await refused(r, 504, "Timeout")


async def test_tampered_continue_token_is_400(api: Api) -> None:
    await make(api, "a")
    await make(api, "b")
    page = await (await api.client.get(BASE, params={"limit": "1"}, headers=api.alice)).json()
    token = page["metadata"]["continue"]
    for bad in (token[:-3] + "xyz", "garbage"):
        r = await api.client.get(BASE, params={"limit": "1", "continue": bad}, headers=api.alice)
        body = await refused(r, 400, "BadRequest")
        assert body["message"] == "continue key is not valid"


async def test_parameters_and_selectors(api: Api) -> None:
    await make(api, "a", labels={"team": "x"})
    await make(api, "b", labels={"team": "y"})
    await make(api, "c")
    for path in (BASE, f"{BASE}/a"):
        r = await api.client.get(path, params={"resourceVersion": "abc"}, headers=api.alice)
        await refused(r, 400, "BadRequest")
    r = await api.client.get(BASE, params={"labelSelector": "==="}, headers=api.alice)
    await refused(r, 400, "BadRequest")
    r = await api.client.get(BASE, params={"labelSelector": "team!=x"}, headers=api.alice)
    assert [i["metadata"]["name"] for i in (await r.json())["items"]] == ["b", "c"]


async def test_nul_in_a_value_names_no_database_class(api: Api) -> None:
    body = ws("nul")
    body["spec"]["memo"] = "a\u0000b"
    r = await api.client.post(BASE, json=body, headers=api.alice)
    assert r.status in (400, 422)
    text = await r.text()
    assert "DataError" not in text
    assert "psycopg" not in text
    assert await stored(api, "nul") is None


async def test_405_carries_allow(api: Api) -> None:
    r = await api.client.post(f"{BASE}/x", json={}, headers=api.alice)
    await refused(r, 405, "MethodNotAllowed")
    assert "DELETE" in r.headers["Allow"]


async def test_streams_per_user_and_metrics(api: Api) -> None:
    first = await api.client.get(
        BASE, params={"watch": "true", "timeoutSeconds": "30"}, headers=api.alice
    )
    assert first.status == 200
    await refused(await api.client.get(SSE, headers=api.alice), 429, "TooManyRequests")
    first.close()
    await refused(await api.client.get("/metrics"), 401, "Unauthorized")
    await refused(await api.client.get("/metrics", headers=api.alice), 403, "Forbidden")
    assert (await api.client.get("/metrics", headers=api.admin)).status == 200
