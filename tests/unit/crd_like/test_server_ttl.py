"""The API server's part of the idle TTL: desired-state source stamping, idle_warning SSE."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from aiohttp import ClientResponse
from support.api import ApiFactory, ApiHarness
from support.sse import next_sse_event

from codehub.crd_like.server import desired_source
from codehub.crd_like.server.desired_source import CHANGED_AT, SOURCE
from codehub.crd_like.server.idle_warning import IdleWarnings
from codehub.vocabulary.timestamps import format_rfc3339, parse_rfc3339, utc_now

NS = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
SOURCE_PTR = "/metadata/annotations/codehub.io~1desired-state-source"


def ws(desired: str, **notes: str) -> dict[str, Any]:
    return {"metadata": {"annotations": dict(notes)}, "spec": {"desired_state": desired}}


# (name, old, new, patch, expected source or None for "not stamped")
STAMP_TABLE: list[tuple[str, dict[str, Any], dict[str, Any], Any, str | None]] = [
    ("no change of desired_state", ws("RUNNING"), ws("RUNNING", x="1"), None, None),
    ("an undeclared change is api", ws("RUNNING"), ws("STANDBY"), {"spec": {}}, "api"),
    (
        "a stale ttl source is replaced by api",
        ws("STANDBY", **{SOURCE: "ttl"}),
        ws("RUNNING", **{SOURCE: "ttl"}),
        {"spec": {"desired_state": "RUNNING"}},
        "api",
    ),
    (
        "a merge patch declares its source",
        ws("STANDBY", **{SOURCE: "ttl"}),
        ws("PENDING", **{SOURCE: "ttl"}),
        {"metadata": {"annotations": {SOURCE: "ttl"}}},
        "ttl",
    ),
    (
        "a JSON Patch declares its source on the annotation",
        ws("STANDBY", **{SOURCE: "ttl"}),
        ws("PENDING", **{SOURCE: "ttl"}),
        [{"op": "add", "path": SOURCE_PTR, "value": "ttl"}],
        "ttl",
    ),
    (
        "a JSON Patch declares its source with the whole map",
        ws("STANDBY", **{SOURCE: "ttl"}),
        ws("PENDING", **{SOURCE: "ttl"}),
        [{"op": "add", "path": "/metadata/annotations", "value": {SOURCE: "ttl"}}],
        "ttl",
    ),
    (
        "a changed value is a declaration (PUT, apply)",
        ws("RUNNING", **{SOURCE: "api"}),
        ws("STANDBY", **{SOURCE: "user"}),
        None,
        "user",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "patch", "expected"),
    [row[1:] for row in STAMP_TABLE],
    ids=[row[0] for row in STAMP_TABLE],
)
def test_stamp(old: dict[str, Any], new: dict[str, Any], patch: Any, expected: str | None) -> None:
    out = desired_source.stamp(old, new, patch, now="2026-03-01T09:00:00Z")
    notes = out["metadata"]["annotations"]
    if expected is None:
        assert SOURCE not in notes
        assert CHANGED_AT not in notes
    else:
        assert (notes[SOURCE], notes[CHANGED_AT]) == (expected, "2026-03-01T09:00:00Z")


def test_a_create_is_not_stamped() -> None:
    assert desired_source.stamp(None, ws("RUNNING")) == ws("RUNNING")


async def _notes(api: ApiHarness, name: str) -> dict[str, str]:
    r = await api.http.get(f"{NS}/{name}", headers=api.headers("alice"))
    body: dict[str, Any] = await r.json()
    return dict(body["metadata"].get("annotations") or {})


async def _patch(api: ApiHarness, name: str, media: str, body: Any, who: str = "alice") -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    r = await api.http.patch(
        f"{NS}/{name}", data=data, headers={**api.headers(who), "Content-Type": media}
    )
    assert r.status == 200, await r.text()


async def test_every_verb_stamps_a_desired_state_change(make_api: ApiFactory) -> None:
    api = await make_api()
    body = {"metadata": {"name": "w"}, "spec": {"desired_state": "PENDING"}}
    assert (await api.http.post(NS, json=body, headers=api.headers("alice"))).status == 201
    assert SOURCE not in await _notes(api, "w")
    await _patch(api, "w", MERGE, {"spec": {"desired_state": "STANDBY"}})
    notes = await _notes(api, "w")
    assert notes[SOURCE] == "api"
    stamped = parse_rfc3339(notes[CHANGED_AT])
    assert stamped is not None
    assert abs((utc_now() - stamped).total_seconds()) < 3600
    ttl = [
        {"op": "replace", "path": "/spec/desired_state", "value": "PENDING"},
        {"op": "add", "path": SOURCE_PTR, "value": "ttl"},
    ]
    await _patch(api, "w", JSONP, ttl, who="operator")
    assert (await _notes(api, "w"))[SOURCE] == "ttl"
    await _patch(api, "w", MERGE, {"spec": {"memo": "hi"}})
    assert (await _notes(api, "w"))[SOURCE] == "ttl"  # desired_state untouched
    manifest = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "w"},
        "spec": {"desired_state": "RUNNING"},
    }
    r = await api.http.patch(
        f"{NS}/w",
        data=yaml.safe_dump(manifest),
        params={"fieldManager": "kubectl", "force": "true"},
        headers={**api.headers("alice"), "Content-Type": APPLY},
    )
    assert r.status == 200, await r.text()
    assert (await _notes(api, "w"))[SOURCE] == "api"


async def _events(stream: ClientResponse, kind: str) -> dict[str, Any]:
    return (await next_sse_event(stream, kind))[1]


async def _announce(api: ApiHarness, name: str, action: str | None, at: datetime | None) -> None:
    body = {"status": {"idle_action": action, "idle_action_at": at and format_rfc3339(at)}}
    r = await api.http.patch(
        f"{NS}/{name}/status",
        data=json.dumps(body),
        headers={**api.headers("operator"), "Content-Type": MERGE},
    )
    assert r.status == 200, await r.text()


async def test_sse_sends_idle_warning_on_change_and_when_the_time_comes(
    make_api: ApiFactory,
) -> None:
    api = await make_api(idle_warning_seconds=60, sse_heartbeat_interval=0.2)
    for name in ("near", "far"):
        body = {"metadata": {"name": name}, "spec": {"desired_state": "STANDBY"}}
        assert (await api.http.post(NS, json=body, headers=api.headers("alice"))).status == 201
    stream = await api.http.get(
        "/api/v1/namespaces/alice/workspaces/events", headers=api.headers("alice")
    )
    await _events(stream, "state_changed")
    # Inside the window: at once, on the status change.
    await _announce(api, "near", "standby", utc_now() + timedelta(seconds=30))
    warning = await _events(stream, "idle_warning")
    assert warning["workspace"] == "near"
    assert warning["namespace"] == "alice"
    assert 0 < warning["seconds_left"] <= 30
    # Outside the window: when it comes into it (61 s away, the window is 60 s).
    await _announce(api, "far", "standby", utc_now() + timedelta(seconds=61))
    warning = await _events(stream, "idle_warning")
    assert warning["workspace"] == "far"
    assert 0 < warning["seconds_left"] <= 60
    metrics = await (await api.http.get("/metrics", headers=api.headers("operator"))).text()
    assert "codehub_idle_warnings_total 2.0" in metrics
    stream.close()


T = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _obj(name: str, action: str | None, at: datetime | None) -> dict[str, Any]:
    status = {"idle_action": action, "idle_action_at": at and format_rfc3339(at)}
    return {"metadata": {"name": name, "namespace": "n"}, "status": status}


def test_idle_warnings_once_per_announced_time() -> None:
    w = IdleWarnings(window=60)
    w.track("n/a", _obj("a", "standby", T + timedelta(seconds=90)))
    w.track("n/b", _obj("b", "archive", T + timedelta(seconds=10)))  # archive never warns
    assert w.due(T) == []
    assert w.seconds_to_next(T) == 30
    assert w.due(T + timedelta(seconds=30)) == [
        {"workspace": "a", "namespace": "n", "seconds_left": 60}
    ]
    assert w.due(T + timedelta(seconds=31)) == []  # once
    assert w.seconds_to_next(T) is None
    # Activity moved it later: a new warning when the new time comes near.
    w.track("n/a", _obj("a", "standby", T + timedelta(seconds=200)))
    assert w.due(T + timedelta(seconds=100)) == []
    assert w.due(T + timedelta(seconds=150))[0]["seconds_left"] == 50
    w.track("n/a", None)
    assert w.pending == {}
    assert w.sent == {}
