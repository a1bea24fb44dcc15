"""Forwarding through the real server on PostgreSQL to real upstreams: redirect, prefix
strip, X-Forwarded-*, streaming both ways in bounded memory, WebSockets, keep-alive,
upstream failures, sleeping workspaces, path tricks."""

from __future__ import annotations

import aiohttp
import pytest
import yarl
from proxykit import Cluster, Upstream, bearer, json_of, raw_request

ALICE = bearer("alice")


async def test_trailing_slash_redirect_keeps_query(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    resp = await client.get("/w/alice/ws?a=1&b=2", headers=ALICE, allow_redirects=False)
    assert resp.status == 308
    assert resp.headers["Location"] == "/w/alice/ws/?a=1&b=2"
    status, _ = await raw_request(str(client.host), int(client.port or 0), "/w/alice/ws?b=%2F", {})
    assert status == 308


async def test_prefix_stripped_query_kept_forwarded_headers(
    cluster: Cluster, upstream: Upstream
) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    replica = cluster.replicas[0]
    headers = {
        **ALICE,
        "Cookie": "codehub_session=secret-cookie; theme=dark",
        "X-Forwarded-For": "10.9.8.7",
    }
    url = yarl.URL(replica.base + "/w/alice/ws/some/path%20x?q=1&r=%2F", encoded=True)
    resp = await replica.client.session.post(url, headers=headers, data=b"hello")
    assert resp.status == 200
    seen = await resp.json()
    assert seen["method"] == "POST"
    assert seen["raw_path"] == "/some/path%20x?q=1&r=%2F"
    assert seen["body"] == "hello"
    fwd = {k.lower(): v for k, v in seen["headers"].items()}
    assert fwd["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert fwd["x-forwarded-proto"] == "http"
    assert fwd["x-forwarded-host"] == replica.host
    assert fwd["x-forwarded-prefix"] == "/w/alice/ws"
    assert "authorization" not in fwd
    assert fwd["cookie"] == "theme=dark"
    assert resp.headers["Location"] == "/w/alice/ws/landed"
    assert resp.headers["Set-Cookie"] == "app=1; Path=/"


async def test_real_workspace_container(cluster: Cluster, workspace_container: str) -> None:
    await cluster.workspace("alice", "ws", workspace_container)
    client = cluster.replicas[0].client
    resp = await client.get("/w/alice/ws/healthz", headers=ALICE)
    assert resp.status == 200
    assert (await resp.text()).strip() == "ok"
    resp = await client.get("/w/alice/ws/echo?x=1", headers=ALICE)
    text = await resp.text()
    assert "uri=/echo?x=1" in text, text
    assert "query=x=1" in text, text
    async with client.ws_connect("/w/alice/ws/ws", headers=ALICE) as sock:
        await sock.send_str("hello through the proxy")
        msg = await sock.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.TEXT
        assert msg.data.strip() == "hello through the proxy"


async def test_websocket_binary_and_close_codes(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    async with client.ws_connect("/w/alice/ws/ws", headers=ALICE) as sock:
        await sock.send_bytes(b"\x00\x01\x02\xff")
        msg = await sock.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.BINARY
        assert msg.data == b"\xff\x02\x01\x00"
        await sock.send_str("text")
        assert (await sock.receive(timeout=30)).data == "text"
        await sock.send_str("close:4001")
        msg = await sock.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 4001
    async with client.ws_connect("/w/alice/ws/ws", headers=ALICE) as sock:
        await sock.send_str("x")
        await sock.receive(timeout=30)
        await sock.close(code=4002)
    await _until(lambda: 4002 in upstream.ws_closes)


async def _until(cond: object, rounds: int = 500) -> None:
    import asyncio

    for _ in range(rounds):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition never held: {cond}")


def _hwm_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_one_gigabyte_download_and_big_upload_in_bounded_memory(
    cluster: Cluster, upstream: Upstream
) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    size = 1 << 30
    before = _hwm_kib()
    resp = await client.get(f"/w/alice/ws/big?size={size}", headers=ALICE)
    assert resp.status == 200
    assert resp.content_length == size
    got = 0
    async for chunk in resp.content.iter_chunked(1 << 20):
        got += len(chunk)
    assert got == size

    up_size = 256 << 20

    async def body() -> object:
        chunk = b"u" * (1 << 20)
        for _ in range(up_size >> 20):
            yield chunk

    resp = await client.post("/w/alice/ws/upload", headers=ALICE, data=body())
    assert (await resp.json())["received"] == up_size
    grown_mib = (_hwm_kib() - before) / 1024
    assert grown_mib < 200, f"peak memory grew by {grown_mib:.0f} MiB"


async def test_upstream_connections_are_kept_alive(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    for i in range(20):
        resp = await client.get(f"/w/alice/ws/n{i}", headers=ALICE)
        assert resp.status == 200
        await resp.read()
    assert 1 <= len(upstream.peers) <= 2, upstream.peers


async def test_refused_and_reset_upstreams_are_502(cluster: Cluster, upstream: Upstream) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    await cluster.workspace("alice", "dead", f"http://127.0.0.1:{dead_port}")
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    resp = await client.get("/w/alice/dead/", headers=ALICE)
    assert resp.status == 502
    assert (await resp.json())["error"] == "upstream_unreachable"
    resp = await client.get("/w/alice/dead/", headers={**ALICE, "Accept": "text/html"})
    assert resp.status == 502
    assert resp.content_type == "text/html"
    assert "<script" not in await resp.text()
    resp = await client.get("/w/alice/ws/reset", headers=ALICE)
    assert resp.status == 502
    resp = await client.get("/w/alice/ws/still-fine", headers=ALICE)
    assert resp.status == 200


async def test_not_running_is_503_with_retry_after(cluster: Cluster) -> None:
    await cluster.workspace("alice", "ws")
    before = await cluster.store.get("workspaces", "alice", "ws")
    resp = await cluster.replicas[0].client.get("/w/alice/ws/", headers=ALICE)
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert (await resp.json())["error"] == "workspace_not_running"
    after = await cluster.store.get("workspaces", "alice", "ws")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    ("target", "statuses"),
    [
        ("/w/alice/ws/../../bob/ws/", {400, 404}),
        ("/w/alice/ws/%2e%2e/%2e%2e/bob/ws/", {400}),
        ("/w/alice/ws/%252e%252e/%252e%252e/bob/ws/", {400}),
        ("/w/alice/ws/..%2f..%2fbob%2fws/", {400}),
        ("/w/alice%2fws/", {404}),
        ("/w/alice/ws%2f..%2f..%2fbob%2fws/", {404}),
        ("/w/%2e%2e/bob/ws/", {404}),
        ("/w/bob/ws/", {404}),
    ],
)
async def test_path_tricks_never_reach_another_workspace(
    cluster: Cluster, upstream: Upstream, target: str, statuses: set[int]
) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    await cluster.workspace("bob", "ws", upstream.url)
    client = cluster.replicas[0].client
    status, body = await raw_request(str(client.host), int(client.port or 0), target, ALICE)
    assert status in statuses, (status, body)
    assert b"raw_path" not in body


async def test_oversized_headers_are_refused(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    status, _ = await raw_request(
        str(client.host), int(client.port or 0), "/w/alice/ws/", {**ALICE, "X-Big": "a" * 20000}
    )
    assert status in (400, 431)
    assert upstream.peers == set()


async def test_metrics(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    await (await client.get("/w/alice/ws/", headers=ALICE)).read()
    await (await client.get("/w/alice/nope/", headers=ALICE)).read()
    text = await (await client.get("/metrics", headers=bearer("admin"))).text()
    assert 'codehub_proxy_requests_total{code_class="2xx"} 1.0' in text
    assert 'codehub_proxy_requests_total{code_class="4xx"} 1.0' in text
    assert "codehub_proxy_open_connections 0.0" in text
    assert "codehub_proxy_request_duration_seconds_count" in text
    assert "codehub_activity_writes_total" in text


def test_json_helper() -> None:
    assert json_of(b'{"a": 1}') == {"a": 1}


async def test_client_leaving_mid_download(
    cluster: Cluster, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    resp = await client.get(f"/w/alice/ws/big?size={256 << 20}", headers=ALICE)
    await resp.content.readexactly(1 << 20)
    resp.close()
    again = await client.get("/w/alice/ws/after", headers=ALICE)
    assert again.status == 200
    assert "unhandled error" not in caplog.text


async def test_head_request(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    resp = await client.head(f"/w/alice/ws/big?size={10 << 20}", headers=ALICE)
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(10 << 20)
    assert await resp.read() == b""
    again = await client.get("/w/alice/ws/after", headers=ALICE)
    assert again.status == 200
