"""Activity: WebSocket counts per workspace across two replicas (rows in PostgreSQL),
a dead replica's rows expire, last_access_at is written at most once per interval."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from proxykit import Cluster, Upstream, bearer

from codehub.crd_like.proxy import WorkspaceRef

ALICE = bearer("alice")


async def test_open_connections_summed_over_replicas(
    cluster_factory: Callable[..., Awaitable[Cluster]], upstream: Upstream
) -> None:
    cluster = await cluster_factory(2)
    obj = await cluster.workspace("alice", "ws", upstream.url)
    uid = obj["metadata"]["uid"]
    a, b = cluster.replicas
    activity = a.state.activity
    now = dt.datetime.now(dt.UTC)
    ttl = a.state.tracker.replica_ttl
    async with a.client.ws_connect("/w/alice/ws/ws", headers=ALICE) as s1:
        async with b.client.ws_connect("/w/alice/ws/ws", headers=ALICE) as s2:
            await s1.send_str("1")
            await s1.receive(timeout=30)
            await s2.send_str("2")
            await s2.receive(timeout=30)
            assert await activity.open_connections(uid, now, ttl) == 2
            assert a.state.tracker.open == {WorkspaceRef.of(obj): 1}
            status = await cluster.status("alice", "ws")
            assert status["last_activity_source"] == "websocket"
            assert status["open_connections"] >= 1
        await _until_count(activity, uid, ttl, 1)
    await _until_count(activity, uid, ttl, 0)
    metrics = await (await a.client.get("/metrics", headers=bearer("admin"))).text()
    assert "codehub_proxy_open_connections 0.0" in metrics


async def _until_count(activity: object, uid: str, ttl: float, want: int) -> None:
    import asyncio

    for _ in range(500):
        now = dt.datetime.now(dt.UTC)
        if await activity.open_connections(uid, now, ttl) == want:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"open connections never reached {want}")


async def test_dead_replica_rows_stop_counting_and_expire(
    cluster: Cluster, upstream: Upstream
) -> None:
    obj = await cluster.workspace("alice", "ws", upstream.url)
    uid = obj["metadata"]["uid"]
    replica = cluster.replicas[0]
    activity, ttl = replica.state.activity, replica.state.tracker.replica_ttl
    now = dt.datetime.now(dt.UTC)
    await activity.set_open("crashed", uid, 3, now - dt.timedelta(seconds=ttl + 1))
    await activity.set_open("alive", uid, 2, now)
    assert await activity.open_connections(uid, now, ttl) == 2
    assert await activity.expire(now, ttl) == 1
    assert await activity.open_connections(uid, now + dt.timedelta(seconds=ttl + 1), ttl) == 0
    await activity.heartbeat("alive", now + dt.timedelta(seconds=ttl))
    assert await activity.open_connections(uid, now + dt.timedelta(seconds=ttl + 1), ttl) == 2


async def test_last_access_written_once_per_interval_across_replicas(
    cluster_factory: Callable[..., Awaitable[Cluster]], upstream: Upstream
) -> None:
    cluster = await cluster_factory(2, activity_interval=30.0)
    obj = await cluster.workspace("alice", "ws", upstream.url)
    await cluster.set_status("alice", "ws", {"error_count": 0, "operation": "NONE"})
    ref = WorkspaceRef.of(obj)
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    clock = {"now": t0}
    trackers = [r.state.tracker for r in cluster.replicas]
    for tracker in trackers:
        tracker.clock = lambda: clock["now"]
    assert await trackers[0].touch(ref, "api") is True
    first = await cluster.status("alice", "ws")
    assert first["last_access_at"] == "2030-01-01T00:00:00Z"
    assert first["last_activity_source"] == "api"
    assert first["open_connections"] == 0
    assert (first["observed_status"], first["endpoint"]) == ("RUNNING", upstream.url)
    assert (first["error_count"], first["operation"]) == (0, "NONE")
    clock["now"] = t0 + dt.timedelta(seconds=29)
    assert await trackers[0].touch(ref, "http") is False
    assert await trackers[1].touch(ref, "wake") is False
    assert (await cluster.status("alice", "ws"))["last_access_at"] == first["last_access_at"]
    clock["now"] = t0 + dt.timedelta(seconds=31)
    assert await trackers[1].touch(ref, "wake") is True
    assert await trackers[0].flush() == 0
    second = await cluster.status("alice", "ws")
    assert second["last_access_at"] == "2030-01-01T00:00:31Z"
    assert second["last_activity_source"] == "wake"
    clock["now"] = t0 + dt.timedelta(seconds=62)
    assert await trackers[0].flush() == 1
    assert (await cluster.status("alice", "ws"))["last_activity_source"] == "http"
    text = await (await cluster.replicas[1].client.get("/metrics", headers=bearer("admin"))).text()
    assert "codehub_activity_writes_total 1.0" in text


async def test_http_traffic_marks_activity(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    assert (await client.get("/w/alice/ws/", headers=ALICE)).status == 200
    import asyncio

    for _ in range(500):
        status = await cluster.status("alice", "ws")
        if status.get("last_access_at"):
            break
        await asyncio.sleep(0.02)
    assert status["last_activity_source"] == "http"
    assert status["open_connections"] == 0
