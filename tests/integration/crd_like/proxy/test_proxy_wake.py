"""Auto-wake against real PostgreSQL: page loads wake sleeping workspaces through the
running-limit admission; everything else gets a 503 and changes nothing; the loading
page's event stream is cookie-authorised for that one workspace only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from proxykit import SECRET, Cluster, bearer

from codehub.crd_like.proxy import session

SOURCE = "codehub.io/desired-state-source"
CHANGED_AT = "codehub.io/desired-state-changed-at"
PAGE = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}


def cookie(user: str) -> dict[str, str]:
    token = session.issue_session(SECRET.encode(), user, time.time(), 600)
    return {"Cookie": f"{session.COOKIE_NAME}={token}"}


async def sleeping(
    cluster: Cluster, ns: str, name: str, *, archived: bool = False, error: bool = False
) -> dict[str, Any]:
    desired = "PENDING" if archived else "STANDBY"
    await cluster.store.create(
        "workspaces",
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"desired_state": desired},
        },
    )
    status: dict[str, Any] = {"observed_status": "PENDING" if archived else "STANDBY"}
    if archived:
        status["archive_key"] = f"archives/{ns}/{name}.tar.gz"
    if error:
        status["observed_status"] = "ERROR"
        status["error_info"] = {"reason": "ContainerGone", "message": "the <container> vanished"}
    return await cluster.set_status(ns, name, status)


async def spec_and_source(cluster: Cluster, ns: str, name: str) -> tuple[Any, Any, Any]:
    obj = await cluster.store.get("workspaces", ns, name)
    ann = obj["metadata"].get("annotations") or {}
    return obj["spec"]["desired_state"], ann.get(SOURCE), obj["metadata"]["generation"]


async def test_page_load_wakes_standby_once(cluster: Cluster) -> None:
    await sleeping(cluster, "alice", "ws")
    client = cluster.replicas[0].client
    resp = await client.get("/w/alice/ws/some/page?x=1", headers={**PAGE, **cookie("alice")})
    assert resp.status == 200
    assert resp.headers["X-Codehub-Wake"] == "woken"
    text = await resp.text()
    assert "Waking up your workspace" in text
    assert "/w/-/events/alice/ws" in text
    assert "Starting" in text
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in csp
    assert "default-src 'none'" in csp
    assert "http://" not in text, "no external assets"
    assert "https://" not in text, "no external assets"
    obj = await cluster.store.get("workspaces", "alice", "ws")
    assert obj["spec"]["desired_state"] == "RUNNING"
    assert obj["metadata"]["annotations"][SOURCE] == "wake"
    assert obj["metadata"]["annotations"][CHANGED_AT]
    generation = obj["metadata"]["generation"]
    again = await client.get("/w/alice/ws/", headers={**PAGE, **bearer("alice")})
    assert again.status == 200
    assert again.headers["X-Codehub-Wake"] == "waiting"
    assert await spec_and_source(cluster, "alice", "ws") == ("RUNNING", "wake", generation)
    for _ in range(100):
        if (await cluster.status("alice", "ws")).get("last_activity_source") == "wake":
            break
        await asyncio.sleep(0.05)
    assert (await cluster.status("alice", "ws"))["last_activity_source"] == "wake"


async def test_archived_page_load_restores(cluster: Cluster) -> None:
    await sleeping(cluster, "alice", "old", archived=True)
    resp = await cluster.replicas[0].client.get(
        "/w/alice/old/", headers={**PAGE, **cookie("alice")}
    )
    assert resp.status == 200
    assert "Restoring from the archive" in await resp.text()
    desired, source, _ = await spec_and_source(cluster, "alice", "old")
    assert (desired, source) == ("RUNNING", "wake")


async def test_non_navigation_does_not_wake(cluster: Cluster) -> None:
    before = await sleeping(cluster, "alice", "ws")
    client = cluster.replicas[0].client
    asks = [
        {"Accept": "application/json"},
        {"Accept": "text/css,*/*;q=0.1"},
        {"Accept": "*/*", "X-Requested-With": "XMLHttpRequest"},
        {"Accept": "text/html", "Sec-Fetch-Mode": "cors"},
        {
            "Accept": "text/html",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Origin": f"http://{cluster.replicas[0].host}",
        },
    ]
    for headers in asks:
        resp = await client.get("/w/alice/ws/app.js", headers={**headers, **cookie("alice")})
        assert resp.status == 503, headers
        assert resp.headers["Retry-After"].isdigit()
        assert resp.headers["X-Codehub-Not-Running"] == "1"
    resp = await client.post("/w/alice/ws/", headers={**PAGE, **bearer("alice")})
    assert resp.status == 503
    after = await cluster.store.get("workspaces", "alice", "ws")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_ten_concurrent_page_loads_wake_exactly_the_limit(
    cluster_factory: Callable[..., Awaitable[Cluster]],
) -> None:
    cluster = await cluster_factory(2, max_running_per_user=2)
    names = [f"ws{i}" for i in range(10)]
    for name in names:
        await sleeping(cluster, "alice", name)
    clients = [r.client for r in cluster.replicas]

    async def load(i: int, name: str) -> tuple[int, str]:
        resp = await clients[i % 2].get(f"/w/alice/{name}/", headers={**PAGE, **cookie("alice")})
        return resp.status, await resp.text()

    answers = await asyncio.gather(*(load(i, n) for i, n in enumerate(names)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 200] + [429] * 8
    desired = [(await spec_and_source(cluster, "alice", n))[0] for n in names]
    assert desired.count("RUNNING") == 2
    assert desired.count("STANDBY") == 8
    woken = {n for n, d in zip(names, desired, strict=True) if d == "RUNNING"}
    refused = [text for status, text in answers if status == 429]
    assert all("Workspace limit reached" in t and "codehub stop" in t for t in refused)
    assert all(all(f"/w/alice/{n}/" in t for n in woken) for t in refused)
    metrics = ""
    for c in clients:
        metrics += await (await c.get("/metrics", headers=bearer("admin"))).text()
    woke = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('codehub_proxy_wakes_total{result="woken"}')
    )
    limited = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('codehub_proxy_wakes_total{result="limited"}')
    )
    assert (woke, limited) == (2, 8)


async def test_at_the_limit_nothing_changes(
    cluster_factory: Callable[..., Awaitable[Cluster]],
) -> None:
    cluster = await cluster_factory(1, max_running_per_user=1)
    await cluster.workspace("alice", "busy", "http://127.0.0.1:9")
    before = await sleeping(cluster, "alice", "ws")
    resp = await cluster.replicas[0].client.get("/w/alice/ws/", headers={**PAGE, **cookie("alice")})
    assert resp.status == 429
    text = await resp.text()
    assert "/w/alice/busy/" in text
    assert "kubectl patch workspace busy -n alice" in text
    after = await cluster.store.get("workspaces", "alice", "ws")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_error_page_explains_and_changes_nothing(cluster: Cluster) -> None:
    before = await sleeping(cluster, "alice", "bad", error=True)
    resp = await cluster.replicas[0].client.get(
        "/w/alice/bad/", headers={**PAGE, **bearer("alice")}
    )
    assert resp.status == 503
    text = await resp.text()
    assert "ContainerGone" in text
    assert "the &lt;container&gt; vanished" in text
    assert "codehub recover bad -n alice" in text
    assert "kubectl annotate ws bad -n alice codehub.io/recover=" in text
    assert "<script" not in text
    after = await cluster.store.get("workspaces", "alice", "bad")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_another_users_workspace_cannot_be_woken(cluster: Cluster) -> None:
    before = await sleeping(cluster, "alice", "ws")
    client = cluster.replicas[0].client
    for creds in (cookie("bob"), bearer("bob")):
        resp = await client.get("/w/alice/ws/", headers={**PAGE, **creds})
        assert resp.status == 404
    after = await cluster.store.get("workspaces", "alice", "ws")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def first_event(resp: aiohttp.ClientResponse) -> str:
    lines: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line and lines:
            return "\n".join(lines)
        if line:
            lines.append(line)
    return "\n".join(lines)


async def test_event_stream_takes_the_cookie_for_one_workspace_only(cluster: Cluster) -> None:
    await sleeping(cluster, "alice", "ws")
    await sleeping(cluster, "bob", "theirs")
    client = cluster.replicas[0].client
    sse = {"Accept": "text/event-stream"}
    async with client.get("/w/-/events/alice/ws", headers={**sse, **cookie("alice")}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        event = await first_event(resp)
    assert "event: state_changed" in event
    assert '"workspace":"ws"' in event
    assert '"observed_status":"STANDBY"' in event
    for path, creds in (
        ("/w/-/events/bob/theirs", cookie("alice")),
        ("/w/-/events/alice/nope", cookie("alice")),
    ):
        resp = await client.get(path, headers={**sse, **creds})
        assert resp.status == 404, path
    resp = await client.get("/w/-/events/alice/ws", headers=sse)
    assert resp.status == 401
    resp = await client.get("/w/-/events/alice/ws", headers={**sse, "Cookie": "codehub_session=x"})
    assert resp.status == 401
    resp = await client.get(
        "/api/v1/namespaces/alice/workspaces/ws/events", headers=cookie("alice")
    )
    assert resp.status == 401, "the API itself never takes the cookie"
