"""codehub_api_watch_backlog_events (the CodehubWatchBacklog alert, docs/operations.md):
head revision minus the slowest open watch's position, set when /metrics is scraped."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient
from support.api import ApiFactory, Identity

from codehub.crd_like.server.metrics import ApiMetrics
from codehub.crd_like.server.watch import refresh_backlog
from codehub.crd_like.store.memory import MemoryStore

NS = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
ALICE = {"Authorization": "Bearer a"}
OP = {"Authorization": "Bearer o"}
USERS = [Identity("a", "alice", "1"), Identity("o", "op", "3", ("codehub:operator",))]


def _gauge(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("codehub_api_watch_backlog_events "):
            return float(line.split()[1])
    raise AssertionError("codehub_api_watch_backlog_events not exposed")


async def _create(store: MemoryStore, name: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "alice"}, "spec": {}}
    await store.create("workspaces", obj)


async def test_backlog_is_head_minus_slowest_watch_and_zero_without_watches() -> None:
    store, metrics = MemoryStore(), ApiMetrics()
    for i in range(12):
        await _create(store, f"w{i}")
    head = await store.current_revision()
    fast, slow = object(), object()
    metrics.watch_positions.update({fast: head - 1, slow: head - 7})
    await refresh_backlog(metrics, store)
    assert metrics.registry.get_sample_value("codehub_api_watch_backlog_events") == 7
    del metrics.watch_positions[slow]
    await refresh_backlog(metrics, store)
    assert metrics.registry.get_sample_value("codehub_api_watch_backlog_events") == 1
    metrics.watch_positions.clear()
    await refresh_backlog(metrics, store)
    assert metrics.registry.get_sample_value("codehub_api_watch_backlog_events") == 0


async def test_a_watch_that_read_every_event_has_no_backlog(make_api: ApiFactory) -> None:
    api = await make_api(identities=USERS, bookmark_interval=0.2)
    client: TestClient[Any, Any] = api.http
    listing = await (await client.get(NS, headers=ALICE)).json()
    rv = listing["metadata"]["resourceVersion"]
    watch = await client.get(f"{NS}?watch=true&resourceVersion={rv}", headers=ALICE)
    for name in ("a", "b", "c"):
        r = await client.post(
            NS,
            json={"metadata": {"name": name}, "spec": {"desired_state": "PENDING"}},
            headers=ALICE,
        )
        assert r.status == 201, await r.text()
    seen = [json.loads(await watch.content.readline())["object"] for _ in range(3)]
    assert [o["metadata"]["name"] for o in seen] == ["a", "b", "c"]
    text = await (await client.get("/metrics", headers=OP)).text()
    assert "codehub_api_open_watches" in text
    assert _gauge(text) == 0
    watch.close()
