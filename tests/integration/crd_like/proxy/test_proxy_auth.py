"""Who may pass: owner and admin; everyone else gets the missing-workspace answer. The
session cookie (sign-in page or single-use link) works for the proxy only."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from proxykit import SECRET, Cluster, Upstream, bearer

from codehub.crd_like.proxy import session

HTML = {"Accept": "text/html"}


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{session.COOKIE_NAME}={token}"}


def good_cookie(user: str, *, ttl: float = 600, now: float | None = None) -> dict[str, str]:
    return cookie(session.issue_session(SECRET.encode(), user, now or time.time(), ttl))


async def answer(resp: aiohttp.ClientResponse) -> tuple[int, str, str]:
    return resp.status, resp.content_type, await resp.text()


async def test_owner_and_admin_pass_others_see_missing(
    cluster: Cluster, upstream: Upstream
) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    for user in ("alice", "admin"):
        resp = await client.get("/w/alice/ws/x", headers=bearer(user))
        assert resp.status == 200, user
    for extra in ({}, HTML):
        missing = await answer(
            await client.get("/w/alice/nope/x", headers={**bearer("alice"), **extra})
        )
        other = await answer(await client.get("/w/alice/ws/x", headers={**bearer("bob"), **extra}))
        assert missing[0] == 404
        assert other == (missing[0], missing[1], missing[2].replace("nope", "ws"))
    assert upstream.peers, "owner requests reached the upstream"


async def test_without_credentials(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    resp = await client.get("/w/alice/ws/x?y=1", allow_redirects=False)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/w/alice/ws/x?y=1", headers=HTML, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/w/-/signin?next=%2Fw%2Falice%2Fws%2Fx%3Fy%3D1"
    resp = await client.get("/w/alice/ws/x", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    assert upstream.peers == set()


async def test_signin_page_sets_a_proxy_only_cookie(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    await cluster.workspace("bob", "ws", upstream.url)
    client = cluster.replicas[0].client
    page = await client.get("/w/-/signin?next=/w/alice/ws/", headers=HTML)
    text = await page.text()
    assert page.status == 200
    assert "<form" in text
    assert "http://" not in text
    assert "https://" not in text
    assert 'value="/w/alice/ws/"' in text
    bad = await client.post("/w/-/signin", data={"token": "nope"}, allow_redirects=False)
    assert bad.status == 401
    assert "Set-Cookie" not in bad.headers
    resp = await client.post(
        "/w/-/signin", data={"token": "alice-t", "next": "/w/alice/ws/"}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/w/alice/ws/"
    set_cookie = resp.headers["Set-Cookie"]
    flags = {p.strip().split("=")[0] for p in set_cookie.split(";")[1:]}
    assert {"Path", "Max-Age", "HttpOnly", "Secure", "SameSite"} <= flags
    assert "Path=/w/" in set_cookie
    assert "SameSite=Lax" in set_cookie
    token = set_cookie.split(";")[0].split("=", 1)[1]
    jar = cookie(token)
    assert (await client.get("/w/alice/ws/x", headers=jar)).status == 200
    assert (await client.get("/w/bob/ws/x", headers=jar)).status == 404
    for path in ("/apis/codehub.io/v1alpha1/namespaces/alice/workspaces", "/api/v1/namespaces"):
        assert (await client.get(path, headers=jar)).status == 401


async def test_cross_site_signin_post_refused(cluster: Cluster) -> None:
    client = cluster.replicas[0].client
    resp = await client.post(
        "/w/-/signin",
        data={"token": "alice-t"},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert "Set-Cookie" not in resp.headers


async def test_forged_expired_and_revoked_cookies(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    forged = session.issue_session(b"not-the-secret", "alice", time.time(), 600)
    cases: list[dict[str, str]] = [
        cookie(forged),
        cookie("garbage"),
        good_cookie("alice", ttl=60, now=time.time() - 120),
        good_cookie("mallory"),
    ]
    for jar in cases:
        resp = await client.get("/w/alice/ws/", headers=jar, allow_redirects=False)
        assert resp.status == 401, jar
        assert "Max-Age=0" in resp.headers["Set-Cookie"]
    assert upstream.peers == set()


async def _mint(client: Any, user: str, ns: str, name: str) -> aiohttp.ClientResponse:
    resp: aiohttp.ClientResponse = await client.post(
        "/proxy/v1/signin-links", json={"namespace": ns, "name": name}, headers=bearer(user)
    )
    return resp


async def test_signin_link_single_use_across_replicas(
    cluster_factory: Callable[..., Awaitable[Cluster]],
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = await cluster_factory(2)
    await cluster.workspace("alice", "ws", upstream.url)
    a, b = (r.client for r in cluster.replicas)
    resp = await _mint(a, "alice", "alice", "ws")
    assert resp.status == 201
    url = (await resp.json())["url"]
    path = url[url.index("/w/-/link/") :]
    first = await b.get(path, allow_redirects=False)
    assert first.status == 303
    assert first.headers["Location"] == "/w/alice/ws/"
    assert "HttpOnly" in first.headers["Set-Cookie"]
    for replay in (a, b):
        again = await replay.get(path, allow_redirects=False)
        assert again.status == 401
        assert "Set-Cookie" not in again.headers
    assert (await _mint(a, "bob", "alice", "ws")).status == 404
    assert (await _mint(a, "alice", "alice", "nope")).status == 404
    assert (await _mint(a, "admin", "alice", "ws")).status == 201
    assert (await a.post("/proxy/v1/signin-links", json={})).status == 401
    token = path.rsplit("/", 1)[1]
    assert "/w/-/link/REDACTED" in caplog.text
    assert token not in caplog.text


async def test_expired_and_forged_links(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    client = cluster.replicas[0].client
    old, _ = session.issue_link(SECRET.encode(), "alice", "alice", "ws", time.time() - 61, 60)
    forged, _ = session.issue_link(b"x" * 32, "alice", "alice", "ws", time.time(), 60)
    for token in (old, forged, "v1.x.y"):
        resp = await client.get(f"/w/-/link/{token}", allow_redirects=False)
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers


async def test_websocket_origin_check(cluster: Cluster, upstream: Upstream) -> None:
    await cluster.workspace("alice", "ws", upstream.url)
    replica = cluster.replicas[0]
    jar = good_cookie("alice")
    for headers in ({**jar, "Origin": "https://evil.example"}, jar):
        resp = await replica.client.get(
            "/w/alice/ws/ws",
            headers={
                **headers,
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert resp.status == 403
    origin = f"http://{replica.host}"
    async with replica.client.ws_connect(
        "/w/alice/ws/ws", headers={**jar, "Origin": origin}
    ) as sock:
        await sock.send_str("hi")
        assert (await sock.receive(timeout=30)).data == "hi"
