"""Bad input matrix: every malformed or forbidden request gets a 4xx Kubernetes Status
that names the offending field, and the stored object is exactly as it was before."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory

BASE = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
MAX_BODY = 16 * 1024


@dataclass
class Api:
    client: TestClient[Any, Any]
    headers: dict[str, str]
    admin: dict[str, str]


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    harness = await make_api("postgres", max_body_bytes=MAX_BODY)
    return Api(harness.http, harness.headers("alice"), harness.headers("admin"))


def ws(name: str = "base", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": "STANDBY", **spec},
    }


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


BIG = raw(ws("big", memo="x" * (MAX_BODY + 10)))

# (id, method, path suffix, content type, body, expected code, text the Status must name)
# fmt: off
CASES: list[tuple[str, str, str, str, bytes, int, str]] = [
    ("malformed-json", "POST", "", "application/json", b'{"metadata": {"name": ', 400, "JSON"),
    ("malformed-yaml", "POST", "", "application/yaml", b"metadata: [unclosed\n  x", 400, "YAML"),
    ("yaml-not-object", "POST", "", "application/yaml", b"- a\n- b\n", 400, "object"),
    ("ttl-wrong-type", "POST", "", "application/json",
     raw(ws("x1", standby_ttl_seconds="abc")), 422, "spec.standby_ttl_seconds"),
    ("spec-wrong-type", "POST", "", "application/json",
     raw({**ws("x2"), "spec": "RUNNING"}), 422, "spec"),
    ("labels-wrong-type", "POST", "", "application/json",
     raw({**ws("x3"), "metadata": {"name": "x3", "labels": {"a": 1}}}), 422, "metadata.labels"),
    ("unknown-desired-state", "POST", "", "application/json",
     raw(ws("x4", desired_state="FLYING")), 422, "spec.desired_state"),
    ("unknown-spec-field", "POST", "", "application/json",
     raw(ws("x5", colour="red")), 422, "spec.colour"),
    ("invalid-name", "POST", "", "application/json", raw(ws("Bad_Name")), 422, "metadata.name"),
    ("too-long-name", "POST", "", "application/json", raw(ws("a" * 64)), 422, "metadata.name"),
    ("missing-name", "POST", "", "application/json",
     raw({**ws(), "metadata": {}}), 422, "metadata.name"),
    ("negative-standby-ttl", "POST", "", "application/json",
     raw(ws("x6", standby_ttl_seconds=-1)), 422, "spec.standby_ttl_seconds"),
    ("negative-archive-ttl", "POST", "", "application/json",
     raw(ws("x7", archive_ttl_seconds=-5)), 422, "spec.archive_ttl_seconds"),
    ("bad-quantity", "POST", "", "application/json",
     raw(ws("x8", resources={"cpu": "lots"})), 422, "spec.resources.cpu"),
    ("empty-image", "POST", "", "application/json",
     raw(ws("x9", image_ref="")), 422, "spec.image_ref"),
    ("namespace-mismatch", "POST", "", "application/json",
     raw({**ws("x10"), "metadata": {"name": "x10", "namespace": "bob"}}), 400,
     "metadata.namespace"),
    ("wrong-kind", "POST", "", "application/json", raw({**ws("x11"), "kind": "Pod"}), 400, "kind"),
    ("oversized-create", "POST", "", "application/json", BIG, 413, "too large"),
    ("empty-body", "POST", "", "application/json", b"", 400, "empty"),
    ("patch-malformed-json", "PATCH", "/base", "application/merge-patch+json", b"{", 400, "JSON"),
    ("patch-unknown-desired-state", "PATCH", "/base", "application/merge-patch+json",
     raw({"spec": {"desired_state": "ON"}}), 422, "spec.desired_state"),
    ("patch-negative-ttl", "PATCH", "/base", "application/merge-patch+json",
     raw({"spec": {"archive_ttl_seconds": -1}}), 422, "spec.archive_ttl_seconds"),
    ("patch-wrong-type", "PATCH", "/base", "application/merge-patch+json",
     raw({"spec": {"standby_ttl_seconds": [1]}}), 422, "spec.standby_ttl_seconds"),
    ("patch-uid", "PATCH", "/base", "application/merge-patch+json",
     raw({"metadata": {"uid": "00000000-0000-0000-0000-000000000000"}}), 422, "metadata.uid"),
    ("patch-name", "PATCH", "/base", "application/merge-patch+json",
     raw({"metadata": {"name": "other"}}), 422, "metadata.name"),
    ("patch-namespace", "PATCH", "/base", "application/merge-patch+json",
     raw({"metadata": {"namespace": "bob"}}), 422, "metadata.namespace"),
    ("json-patch-uid", "PATCH", "/base", "application/json-patch+json",
     raw([{"op": "replace", "path": "/metadata/uid", "value": "x"}]), 422, "metadata.uid"),
    ("json-patch-failed-test", "PATCH", "/base", "application/json-patch+json",
     raw([{"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
          {"op": "replace", "path": "/spec/desired_state", "value": "PENDING"}]),
     422, "metadata.resourceVersion"),
    ("json-patch-missing-path", "PATCH", "/base", "application/json-patch+json",
     raw([{"op": "remove", "path": "/spec/nothing"}]), 422, "spec.nothing"),
    ("json-patch-not-a-list", "PATCH", "/base", "application/json-patch+json",
     raw({"op": "add"}), 400, "array"),
    ("strategic-merge-patch", "PATCH", "/base", "application/strategic-merge-patch+json",
     raw({"spec": {"desired_state": "PENDING"}}), 415, "merge-patch"),
    ("apply-patch", "PATCH", "/base", "application/apply-patch+yaml",
     b"spec: {desired_state: PENDING}", 400, "fieldManager"),
    ("patch-oversized", "PATCH", "/base", "application/merge-patch+json",
     raw({"spec": {"memo": "y" * (MAX_BODY + 1)}}), 413, "too large"),
    ("put-name-mismatch", "PUT", "/base", "application/json", raw(ws("other")), 400,
     "metadata.name"),
    ("put-stale-resource-version", "PUT", "/base", "application/json",
     raw({**ws(), "metadata": {"name": "base", "resourceVersion": "1"}}), 409, "modified"),
    ("put-unknown-desired-state", "PUT", "/base", "application/json",
     raw(ws(desired_state="MAYBE")), 422, "spec.desired_state"),
    ("put-uid", "PUT", "/base", "application/json",
     raw({**ws(), "metadata": {"name": "base", "uid": "nope"}}), 422, "metadata.uid"),
    ("bad-label-selector", "GET", "?labelSelector=a+in+(b)", "application/json", b"", 400,
     "labelSelector"),
    ("bad-field-selector", "GET", "?fieldSelector=spec.memo%3Dx", "application/json", b"", 400,
     "fieldSelector"),
    ("bad-limit", "GET", "?limit=many", "application/json", b"", 400, "limit"),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "suffix", "ctype", "body", "code", "names"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_bad_input_is_refused_and_changes_nothing(
    api: Api, method: str, suffix: str, ctype: str, body: bytes, code: int, names: str
) -> None:
    created = await api.client.post(BASE, json=ws("base"), headers=api.headers)
    assert created.status == 201, await created.text()
    # One more write so resourceVersion "1" is stale for the PUT case.
    await api.client.patch(
        BASE + "/base",
        data=raw({"spec": {"memo": "before"}}),
        headers={**api.headers, "Content-Type": "application/merge-patch+json"},
    )
    before = await (await api.client.get(BASE + "/base", headers=api.headers)).json()
    listed_before = await (await api.client.get(BASE, headers=api.headers)).json()

    resp = await api.client.request(
        method, BASE + suffix, data=body, headers={**api.headers, "Content-Type": ctype}
    )
    status = await resp.json()
    assert resp.status == code, status
    assert status["kind"] == "Status"
    assert status["code"] == code
    assert status["status"] == "Failure"
    causes = status.get("details", {}).get("causes", [])
    text = status["message"] + " ".join(c.get("field", "") for c in causes)
    assert names in text, status

    after = await (await api.client.get(BASE + "/base", headers=api.headers)).json()
    assert after == before
    listed_after = await (await api.client.get(BASE, headers=api.headers)).json()
    assert [i["metadata"]["name"] for i in listed_after["items"]] == [
        i["metadata"]["name"] for i in listed_before["items"]
    ]
    assert (
        listed_after["metadata"]["resourceVersion"] == listed_before["metadata"]["resourceVersion"]
    )


async def test_invalid_status_write_is_refused(api: Api) -> None:
    assert (await api.client.post(BASE, json=ws("base"), headers=api.headers)).status == 201
    before = await (await api.client.get(BASE + "/base", headers=api.headers)).json()
    resp = await api.client.patch(
        BASE + "/base/status",
        data=raw({"status": {"observed_status": "SLEEPING", "error_count": -1}}),
        headers={**api.admin, "Content-Type": "application/merge-patch+json"},
    )
    status = await resp.json()
    assert resp.status == 422, status
    fields = {c["field"] for c in status["details"]["causes"]}
    assert fields == {"status.observed_status", "status.error_count"}
    after = await (await api.client.get(BASE + "/base", headers=api.headers)).json()
    assert after == before
