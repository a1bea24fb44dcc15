"""Watch through HTTP on PostgreSQL: every write's resourceVersion arrives exactly once
and in order, bookmarks, 410 only after compaction (and a re-list recovers),
sendInitialEvents, resuming from a bookmark on a restarted server, selectors, tables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.api import ApiFactory, ApiHarness, bearer

from codehub.crd_like.store.interface import Store

G = "/apis/codehub.io/v1alpha1"
NS = f"{G}/namespaces/alice/workspaces"
MERGE = "application/merge-patch+json"
ADMIN = bearer("admin-t")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@dataclass
class Api:
    harness: ApiHarness

    @property
    def client(self) -> TestClient[Any, Any]:
        return self.harness.http

    @property
    def store(self) -> Store:
        return self.harness.store

    async def close(self) -> None:
        await self.harness.close()

    async def create(self, name: str) -> dict[str, Any]:
        body = {"metadata": {"name": name}, "spec": {"desired_state": "STANDBY"}}
        r = await self.client.post(NS, json=body, headers=ADMIN)
        assert r.status == 201, await r.text()
        out: dict[str, Any] = await r.json()
        return out

    async def memo(self, name: str, memo: str) -> str:
        r = await self.client.patch(
            f"{NS}/{name}",
            data=json.dumps({"spec": {"memo": memo}}),
            headers={**ADMIN, "Content-Type": MERGE},
        )
        assert r.status == 200, await r.text()
        return str((await r.json())["metadata"]["resourceVersion"])


Factory = Callable[[], Awaitable[Api]]


@pytest.fixture
def servers(make_api: ApiFactory) -> Factory:
    """Servers on this test's database, each with its own PostgresStore."""

    async def factory() -> Api:
        harness = await make_api("postgres", bookmark_interval=0.3, store_options={"max_size": 20})
        return Api(harness)

    return factory


async def read_event(resp: Any, wait: float = 30.0) -> dict[str, Any]:
    line = await asyncio.wait_for(resp.content.readline(), wait)
    assert line, "watch stream ended"
    event: dict[str, Any] = json.loads(line)
    return event


async def test_every_write_is_seen_once_in_order(servers: Factory) -> None:
    api = await servers()
    writers, writes = 8, 100
    for w in range(writers):
        await api.create(f"w{w}")
    listed = await (await api.client.get(NS, headers=ADMIN)).json()
    watch = await api.client.get(
        f"{NS}?watch=true&allowWatchBookmarks=true&resourceVersion="
        f"{listed['metadata']['resourceVersion']}",
        headers=ADMIN,
    )
    assert watch.status == 200

    async def writer(w: int) -> list[str]:
        return [await api.memo(f"w{w}", f"m{i}") for i in range(writes)]

    written = sorted(
        int(rv) for rvs in await asyncio.gather(*(writer(w) for w in range(writers))) for rv in rvs
    )
    assert len(set(written)) == writers * writes
    seen: list[int] = []
    while not seen or seen[-1] < written[-1]:
        event = await read_event(watch)
        assert event["type"] in ("MODIFIED", "BOOKMARK"), event
        if event["type"] == "MODIFIED":
            seen.append(int(event["object"]["metadata"]["resourceVersion"]))
    watch.close()
    assert seen == written


async def test_bookmarks_only_when_allowed(servers: Factory) -> None:
    api = await servers()
    await api.create("a")
    rv = int(await api.memo("a", "x"))
    watch = await api.client.get(
        f"{NS}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}", headers=ADMIN
    )
    event = await read_event(watch)
    watch.close()
    assert event["type"] == "BOOKMARK"
    assert event["object"]["kind"] == "Workspace"
    assert int(event["object"]["metadata"]["resourceVersion"]) >= rv

    quiet = await api.client.get(
        f"{NS}?watch=true&resourceVersion={rv}&timeoutSeconds=1", headers=ADMIN
    )
    assert (await quiet.read()).strip() == b""


async def test_gone_after_compaction_then_relist_recovers(servers: Factory) -> None:
    api = await servers()
    await api.create("a")
    first = await api.memo("a", "0")
    for i in range(1, 10):
        await api.memo("a", str(i))
    await api.store.compact(2)
    watch = await api.client.get(f"{NS}?watch=true&resourceVersion={first}", headers=ADMIN)
    assert watch.status == 200
    lines = [json.loads(x) for x in (await watch.read()).decode().splitlines() if x.strip()]
    assert len(lines) == 1
    assert lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["kind"] == "Status"
    assert lines[0]["object"]["code"] == 410
    assert lines[0]["object"]["reason"] == "Expired"

    listed = await (await api.client.get(NS, headers=ADMIN)).json()
    watch = await api.client.get(
        f"{NS}?watch=true&resourceVersion={listed['metadata']['resourceVersion']}",
        headers=ADMIN,
    )
    rv = await api.memo("a", "after")
    event = await read_event(watch)
    watch.close()
    assert event["type"] == "MODIFIED"
    assert event["object"]["metadata"]["resourceVersion"] == rv


async def test_send_initial_events_ends_with_annotated_bookmark(servers: Factory) -> None:
    api = await servers()
    for name in ("a", "b", "c"):
        await api.create(name)
    current = str(await api.store.current_revision())
    watch = await api.client.get(
        f"{NS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&allowWatchBookmarks=true",
        headers=ADMIN,
    )
    initial = [await read_event(watch) for _ in range(3)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]
    end = await read_event(watch)
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert end["object"]["metadata"]["resourceVersion"] == current
    rv = await api.memo("b", "x")
    event = await read_event(watch)
    while event["type"] == "BOOKMARK":
        event = await read_event(watch)
    watch.close()
    assert (event["type"], event["object"]["metadata"]["resourceVersion"]) == ("MODIFIED", rv)


async def test_resume_from_bookmark_on_a_restarted_server(servers: Factory) -> None:
    first = await servers()
    await first.create("a")
    watch = await first.client.get(
        f"{NS}?watch=true&allowWatchBookmarks=true&resourceVersion=0", headers=ADMIN
    )
    event = await read_event(watch)
    while event["type"] != "BOOKMARK":
        event = await read_event(watch)
    resume_from = event["object"]["metadata"]["resourceVersion"]
    watch.close()
    await first.close()

    second = await servers()
    written = [await second.memo("a", f"after-restart-{i}") for i in range(5)]
    await second.create("b")
    watch = await second.client.get(
        f"{NS}?watch=true&allowWatchBookmarks=true&resourceVersion={resume_from}", headers=ADMIN
    )
    got: list[tuple[str, str]] = []
    while len(got) < 6:
        event = await read_event(watch)
        if event["type"] != "BOOKMARK":
            got.append((event["type"], event["object"]["metadata"]["resourceVersion"]))
    watch.close()
    assert got[:5] == [("MODIFIED", rv) for rv in written]
    assert got[5][0] == "ADDED"


async def test_field_selector_and_table_watch(servers: Factory) -> None:
    api = await servers()
    await api.create("a")
    await api.create("b")
    watch = await api.client.get(
        f"{NS}?watch=true&fieldSelector=metadata.name%3Da", headers={**ADMIN, "Accept": TABLE}
    )
    first = await read_event(watch)
    assert first["type"] == "ADDED"
    assert first["object"]["kind"] == "Table"
    assert first["object"]["columnDefinitions"][0]["name"] == "Name"
    columns = first["object"]["columnDefinitions"][1:]
    assert [c["name"] for c in columns if c["priority"] == 0] == [
        "Desired",
        "Observed",
        "Operation",
        "Display",
        "Age",
    ]
    # The rest only for `kubectl get -o wide`.
    assert [c["name"] for c in columns if c["priority"] == 1] == [
        "Image",
        "Errors",
        "Reason",
        "Last-Access",
        "Source",
        "Conns",
        "Idle-Action",
        "Idle-At",
    ]
    assert first["object"]["rows"][0]["cells"][:2] == ["a", "STANDBY"]
    await api.memo("b", "not for this watcher")
    await api.memo("a", "for this watcher")
    event = await read_event(watch)
    watch.close()
    assert event["type"] == "MODIFIED"
    assert event["object"]["rows"][0]["cells"][0] == "a"


async def test_core_events_create_list_by_involved_object_and_watch(servers: Factory) -> None:
    api = await servers()
    ws = await api.create("a")
    events = "/api/v1/namespaces/alice/events"
    watch = await api.client.get(f"{events}?watch=true", headers=ADMIN)
    for target in ("a", "other"):
        body = {
            "metadata": {"generateName": "test-"},
            "involvedObject": {
                "kind": "Workspace",
                "namespace": "alice",
                "name": target,
                "uid": ws["metadata"]["uid"] if target == "a" else "x",
            },
            "reason": "Tested",
            "message": f"about {target}",
            "type": "Normal",
            "source": {"component": "test"},
        }
        r = await api.client.post(events, json=body, headers=ADMIN)
        assert r.status == 201, await r.text()
        assert (await r.json())["metadata"]["name"].startswith("test-")
    selector = f"involvedObject.name=a,involvedObject.uid={ws['metadata']['uid']}"
    listed = await (
        await api.client.get(events, params={"fieldSelector": selector}, headers=ADMIN)
    ).json()
    assert [e["message"] for e in listed["items"]] == ["about a"]
    seen = [await read_event(watch), await read_event(watch)]
    watch.close()
    assert [e["object"]["message"] for e in seen] == ["about a", "about other"]


async def test_fan_out_every_watcher_gets_each_event_once_in_order_same_bytes(
    servers: Factory,
) -> None:
    """N watchers of one server: each receives every write exactly once, in revision
    order, as the very same line; the line is encoded once per event, not per watcher."""
    from codehub.crd_like.server.watch import line_cache

    api = await servers()
    writers, writes, watchers = 4, 25, 5
    for w in range(writers):
        await api.create(f"f{w}")
    listed = await (await api.client.get(NS, headers=ADMIN)).json()
    rv = listed["metadata"]["resourceVersion"]
    streams = [
        await api.client.get(f"{NS}?watch=true&resourceVersion={rv}", headers=ADMIN)
        for _ in range(watchers)
    ]
    assert all(s.status == 200 for s in streams)
    cache = line_cache(api.store)
    assert cache is not None
    encoded_before = cache.encoded

    async def writer(w: int) -> list[str]:
        return [await api.memo(f"f{w}", f"m{i}") for i in range(writes)]

    written = sorted(
        int(r) for rvs in await asyncio.gather(*(writer(w) for w in range(writers))) for r in rvs
    )
    received: list[list[bytes]] = []
    for stream in streams:
        lines: list[bytes] = []
        while len(lines) < len(written):
            line = await asyncio.wait_for(stream.content.readline(), 30)
            assert line, "watch stream ended"
            lines.append(line)
        stream.close()
        received.append(lines)
    seen = [int(json.loads(line)["object"]["metadata"]["resourceVersion"]) for line in received[0]]
    assert seen == written
    assert all(lines == received[0] for lines in received)
    assert cache.encoded - encoded_before == len(written)
