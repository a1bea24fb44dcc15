"""The proxy's watch-fed endpoint cache on PostgreSQL: it follows endpoint changes and
removals, never answers for a workspace without an endpoint, and forgets an entry
whose upstream failed."""

from __future__ import annotations

import asyncio
from typing import Any

from proxykit import Cluster, Upstream, bearer

from codehub.crd_like.proxy.endpoints import EndpointCache


async def until(predicate: Any) -> None:
    """The watch delivers asynchronously: poll the cache (a hang guard, not a timing test)."""
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the endpoint cache never caught up")


def cache_of(cluster: Cluster) -> EndpointCache:
    cache = cluster.replicas[0].state.endpoints
    assert cache is not None
    return cache


async def test_cache_follows_the_endpoint(cluster: Cluster, upstream: Upstream) -> None:
    client = cluster.replicas[0].client
    cache = cache_of(cluster)
    await cluster.workspace("alice", "ws", "http://127.0.0.1:9")
    await until(lambda: (cache.get("alice", "ws") or {}).get("status", {}).get("endpoint"))
    resp = await client.get("/w/alice/ws/x", headers=bearer("alice"))
    assert resp.status == 502
    # That request's activity write may bring the entry back through the watch; once
    # the cache has seen that write, a failure forgets it for good.
    for _ in range(400):
        obj = await cluster.store.get("workspaces", "alice", "ws")
        if "last_access_at" in (obj.get("status") or {}):
            break
        await asyncio.sleep(0.025)
    written = int(obj["metadata"]["resourceVersion"])
    await until(lambda: cache.revision >= written)
    resp = await client.get("/w/alice/ws/x", headers=bearer("alice"))
    assert resp.status == 502
    assert cache.get("alice", "ws") is None, "a failed upstream is forgotten"

    await cluster.set_status("alice", "ws", {"endpoint": upstream.url})
    await until(lambda: cache.get("alice", "ws") is not None)
    resp = await client.get("/w/alice/ws/x", headers=bearer("alice"))
    assert resp.status == 200
    assert (await resp.json())["raw_path"] == "/x"

    await cluster.set_status("alice", "ws", {"endpoint": None, "observed_status": "STANDBY"})
    await until(lambda: cache.get("alice", "ws") is None)
    resp = await client.get("/w/alice/ws/x", headers=bearer("alice"))
    assert resp.status == 503


async def test_cache_never_decides_who_may_pass(cluster: Cluster, upstream: Upstream) -> None:
    cache = cache_of(cluster)
    await cluster.workspace("alice", "ws", upstream.url)
    await until(lambda: cache.get("alice", "ws") is not None)
    resp = await cluster.replicas[0].client.get("/w/alice/ws/x", headers=bearer("bob"))
    assert resp.status == 404


async def test_deleted_workspace_leaves_the_cache(cluster: Cluster, upstream: Upstream) -> None:
    cache = cache_of(cluster)
    await cluster.workspace("alice", "ws", upstream.url)
    await until(lambda: cache.get("alice", "ws") is not None)
    await cluster.store.delete("workspaces", "alice", "ws")
    await until(lambda: cache.get("alice", "ws") is None)
    resp = await cluster.replicas[0].client.get("/w/alice/ws/x", headers=bearer("alice"))
    assert resp.status in (404, 503)
