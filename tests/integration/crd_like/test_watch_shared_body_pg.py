"""Watch events on a shared body, on real PostgreSQL and through the server: every
watcher sees each revision's own body (never a later one, never another watcher's
changes), whether it relays lines, filters by selector, or takes objects
(docs/adr/0007-api-write-path-performance.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.api import ApiFactory
from support.watch_events import take_events

from codehub.crd_like.store import WatchEvent
from codehub.crd_like.store.postgres import PostgresStore

G = "/apis/codehub.io/v1alpha1"
NS = f"{G}/namespaces/alice/workspaces"
MERGE = "application/merge-patch+json"
#: Liveness bound only (a hang must fail, not block CI); nothing here measures speed.
PATIENCE = 60.0


def ws(name: str, team: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "alice", "labels": {"team": team}},
        "spec": {"desired_state": "PENDING", "image_ref": "img"},
    }


def relabel(team: str, memo: str) -> Any:
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["labels"]["team"] = team
        obj["spec"]["memo"] = memo
        return obj

    return mutate


async def take(store: PostgresStore, since: int, n: int) -> list[WatchEvent]:
    return await take_events(store.watch("workspaces", since=since), n, PATIENCE)


async def test_write_watch_write_watch_on_postgres(database_url: str) -> None:
    store = await PostgresStore.open(database_url, watch_poll_interval=0.5)
    try:
        created = await store.create("workspaces", ws("a", "x"))
        start = int(created["metadata"]["resourceVersion"]) - 1
        (first,) = await take(store, start, 1)
        assert first.object is not None
        first.object["spec"]["memo"] = "changed by a consumer"
        await store.update("workspaces", "alice", "a", relabel("y", "one"))
        both = await take(store, start, 2)
        other = await take(store, start, 2)
        assert [e.type for e in both] == ["ADDED", "MODIFIED"]
        for a, b in zip(both, other, strict=True):
            assert a.object is not None
            assert b.object is not None
            assert a.object is not b.object
            assert a.object == b.object
            assert a.object["metadata"]["resourceVersion"] == str(a.revision)
        assert both[0].object is not None
        assert "memo" not in both[0].object["spec"]
        assert both[0].object["metadata"]["labels"] == {"team": "x"}
        assert both[1].object is not None
        assert both[1].object["spec"]["memo"] == "one"
        both[1].object["spec"]["memo"] = "changed again"
        (again,) = await take(store, start + 1, 1)
        assert again.object is not None
        assert again.object["spec"]["memo"] == "one"
        assert (await store.get("workspaces", "alice", "a"))["spec"]["memo"] == "one"
    finally:
        await store.close()


async def read_events(stream: Any, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        line = await asyncio.wait_for(stream.content.readline(), PATIENCE)
        assert line, "the watch ended early"
        event = json.loads(line)
        if event["type"] != "BOOKMARK":
            out.append(event)
    return out


@pytest.mark.parametrize("backend", ["memory", "postgres"])
async def test_a_selector_watch_and_plain_watches_share_events(
    make_api: ApiFactory, backend: Any
) -> None:
    api = await make_api(backend)
    headers = api.headers("operator")
    r = await api.http.get(NS, headers=headers)
    since = (await r.json())["metadata"]["resourceVersion"]
    watch = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "30"}
    plain = [await api.http.get(NS, params=watch, headers=headers) for _ in range(2)]
    team_x = await api.http.get(NS, params={**watch, "labelSelector": "team=x"}, headers=headers)
    r = await api.http.post(NS, json=ws("a", "x"), headers=headers)
    assert r.status == 201, await r.text()
    for team, memo in (("y", "one"), ("x", "two")):
        patch = {"metadata": {"labels": {"team": team}}, "spec": {"memo": memo}}
        r = await api.http.patch(
            f"{NS}/a", data=json.dumps(patch), headers={**headers, "Content-Type": MERGE}
        )
        assert r.status == 200, await r.text()
    seen = [await read_events(s, 3) for s in plain]
    picky = await read_events(team_x, 3)
    for s in [*plain, team_x]:
        s.close()
    assert seen[0] == seen[1]
    assert [e["type"] for e in seen[0]] == ["ADDED", "MODIFIED", "MODIFIED"]
    assert [e["type"] for e in picky] == ["ADDED", "DELETED", "ADDED"]
    assert [e["object"] for e in picky] == [e["object"] for e in seen[0]]
    objects = [e["object"] for e in seen[0]]
    assert [o["metadata"]["labels"]["team"] for o in objects] == ["x", "y", "x"]
    assert [o["spec"].get("memo") for o in objects] == [None, "one", "two"]
    revisions = [int(o["metadata"]["resourceVersion"]) for o in objects]
    assert revisions == sorted(set(revisions))
