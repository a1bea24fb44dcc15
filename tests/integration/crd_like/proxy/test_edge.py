"""The native edge: real nginx (HTTPS) in front of the real server on PostgreSQL.

The same properties the Python proxy proves, through nginx: the server decides who may
pass and where to (``/w/-/edge-auth``), nginx moves the bytes of plain forwards, and
everything else falls back to the Python proxy unchanged.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yarl
from aiohttp import web
from proxykit import Cluster, Upstream, bearer, raw_request
from support.api import serve_app

from codehub.crd_like.proxy.edge import EDGE_AUTH_PATH, SECRET_HEADER
from codehub.crd_like.proxy.edge_conf import EdgeConfig
from codehub.crd_like.proxy.edge_run import EdgeProcess, nginx_binary
from codehub.crd_like.proxy.routing import LINK_PATH
from codehub.crd_like.server.tls import ensure_certificate
from codehub.operator.cli.edge import fetch_pools

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (scripts/install-system-packages)"
)

ALICE = bearer("alice")
HTML = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
EDGE_SECRET = "edge-secret-for-tests-only"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Edge:
    cluster: Cluster
    process: EdgeProcess
    session: aiohttp.ClientSession
    tls: ssl.SSLContext

    @property
    def base(self) -> str:
        return f"https://{self.process.cfg.listen}"

    @property
    def host(self) -> str:
        return self.process.cfg.listen

    def get(self, path: str, **kw: object) -> aiohttp.client._RequestContextManager:
        url = yarl.URL(self.base + path, encoded=True)
        return self.session.get(url, ssl=self.tls, allow_redirects=False, **kw)  # type: ignore[arg-type]

    async def raw(self, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """``target`` exactly as written, over TLS (clients would normalise it)."""
        host, _, port = self.host.rpartition(":")
        return await raw_request(host, int(port), target, headers, ssl=self.tls)


@pytest.fixture
async def edge_factory(
    cluster_factory: Callable[..., Awaitable[Cluster]],
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Edge]]]:
    made: list[Edge] = []

    async def make(upstreams: tuple[str, ...] = (), auth_cache: int = 0) -> Edge:
        cluster = await cluster_factory(1, edge_secret=EDGE_SECRET)
        cert, key = ensure_certificate(tmp_path / "state")
        cfg = EdgeConfig(
            listen=f"127.0.0.1:{free_port()}",
            app=cluster.replicas[0].host,
            cert=cert,
            key=key,
            secret=EDGE_SECRET,
            workdir=tmp_path / f"edge{len(made)}",
            auth_cache=auth_cache,
            upstreams=upstreams,
        )
        process = EdgeProcess(cfg)
        await asyncio.to_thread(process.start)
        tls = ssl.create_default_context(cafile=str(cert))
        edge = Edge(cluster, process, aiohttp.ClientSession(), tls)
        made.append(edge)
        return edge

    yield make
    for edge in made:
        await edge.session.close()
        await asyncio.to_thread(edge.process.stop)


def host_port(url: str) -> str:
    return url.removeprefix("http://")


async def test_forward_by_nginx_strips_prefix_and_credentials(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory(upstreams=(host_port(upstream.url),))
    await edge.cluster.workspace("alice", "ws", upstream.url)
    headers = {
        **ALICE,
        "Cookie": "codehub_session=secret-cookie; theme=dark",
        "X-Forwarded-For": "10.9.8.7",
    }
    async with edge.get("/w/alice/ws/some/path%20x?q=1&r=%2F", headers=headers) as resp:
        assert resp.status == 200
        seen = await resp.json()
        location = resp.headers["Location"]
        set_cookie = resp.headers["Set-Cookie"]
    assert seen["raw_path"] == "/some/path%20x?q=1&r=%2F"
    fwd = {k.lower(): v for k, v in seen["headers"].items()}
    # https: nginx forwarded it (the Python proxy behind the edge speaks plain HTTP).
    assert fwd["x-forwarded-proto"] == "https"
    assert fwd["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert fwd["x-forwarded-host"] == edge.host
    assert fwd["x-forwarded-prefix"] == "/w/alice/ws"
    assert "authorization" not in fwd
    assert fwd["cookie"] == "theme=dark"
    assert SECRET_HEADER.lower() not in fwd
    assert location == "/w/alice/ws/landed"
    assert set_cookie == "app=1; Path=/"


async def test_pooled_upstream_connections_are_kept_alive(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory(upstreams=(host_port(upstream.url),))
    await edge.cluster.workspace("alice", "ws", upstream.url)
    for i in range(20):
        async with edge.get(f"/w/alice/ws/n{i}", headers=ALICE) as resp:
            assert resp.status == 200
            await resp.read()
    assert 1 <= len(upstream.peers) <= 2, upstream.peers


async def test_fallbacks_answer_as_the_python_proxy(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory()
    await edge.cluster.workspace("alice", "ws", upstream.url)
    await edge.cluster.workspace("alice", "sleepy")
    direct = edge.cluster.replicas[0].client
    async with edge.get("/w/alice/ws?a=1", headers=ALICE) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "/w/alice/ws/?a=1"
    for extra in ({}, HTML):
        async with edge.get("/w/alice/nope/x", headers={**bearer("bob"), **extra}) as resp:
            missing = (resp.status, resp.content_type, await resp.read())
        async with edge.get("/w/alice/ws/x", headers={**bearer("bob"), **extra}) as resp:
            other = (resp.status, resp.content_type, await resp.read())
        py = await direct.get("/w/alice/ws/x", headers={**bearer("bob"), **extra})
        assert missing[0] == 404
        assert other == (404, missing[1], missing[2].replace(b"nope", b"ws"))
        assert other[2] == await py.read()
    async with edge.get("/w/alice/ws/x") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with edge.get("/w/alice/sleepy/app.js", headers=ALICE) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"].isdigit()
    async with edge.get("/w/alice/sleepy/", headers={**ALICE, **HTML}) as resp:
        assert resp.content_type == "text/html"
        assert "X-Codehub-Wake" in resp.headers
    assert upstream.peers == set()


@pytest.mark.parametrize(
    ("target", "statuses"),
    [
        ("/w/alice/ws/../../bob/ws/", {400, 404}),
        ("/w/alice/ws/%2e%2e/%2e%2e/bob/ws/", {400}),
        ("/w/alice/ws/%252e%252e/%252e%252e/bob/ws/", {400}),
        ("/w/alice/ws/..%2f..%2fbob%2fws/", {400}),
        ("/w/alice%2fws/", {404}),
        ("/w/alice/ws%2f..%2f..%2fbob%2fws/", {404}),
        ("/w/%2e%2e/bob/ws/", {400, 404}),
        ("/w/bob/ws/", {404}),
    ],
)
async def test_path_tricks_never_reach_another_workspace(
    edge_factory: Callable[..., Awaitable[Edge]],
    upstream: Upstream,
    target: str,
    statuses: set[int],
) -> None:
    edge = await edge_factory()
    await edge.cluster.workspace("alice", "ws", upstream.url)
    await edge.cluster.workspace("bob", "ws", upstream.url)
    status, body = await edge.raw(target, ALICE)
    assert status in statuses, (status, body)
    assert b"raw_path" not in body


async def test_websocket_falls_back_and_is_counted(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory(upstreams=(host_port(upstream.url),))
    await edge.cluster.workspace("alice", "ws", upstream.url)
    tracker = edge.cluster.replicas[0].state.tracker
    url = yarl.URL(edge.base.replace("https://", "wss://") + "/w/alice/ws/ws")
    async with edge.session.ws_connect(url, headers=ALICE, ssl=edge.tls) as sock:
        await sock.send_str("through the edge")
        msg = await sock.receive(timeout=30)
        assert msg.data == "through the edge"
        assert sum(tracker.open.values()) == 1
        await sock.send_bytes(b"\x00\x01")
        assert (await sock.receive(timeout=30)).data == b"\x01\x00"
    assert upstream.ws_closes


async def test_large_download_streams(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory(upstreams=(host_port(upstream.url),))
    await edge.cluster.workspace("alice", "ws", upstream.url)
    size = 256 << 20
    got = 0
    async with edge.get(f"/w/alice/ws/big?size={size}", headers=ALICE) as resp:
        assert resp.status == 200
        assert resp.content_length == size
        async for chunk in resp.content.iter_chunked(1 << 20):
            got += len(chunk)
    assert got == size
    assert not any((edge.process.cfg.workdir / "tmp" / "proxy").rglob("*")), "buffered to disk"


async def test_auth_endpoint_needs_the_secret(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory()
    await edge.cluster.workspace("alice", "ws", upstream.url)
    direct = edge.cluster.replicas[0].client
    asked = {"X-Original-URI": "/w/alice/ws/", "X-Original-Authorization": ALICE["Authorization"]}
    for secret in ({}, {SECRET_HEADER: "wrong"}):
        resp = await direct.get(EDGE_AUTH_PATH, headers={**asked, **secret})
        assert resp.status == 404
    async with edge.get(EDGE_AUTH_PATH, headers={**asked, SECRET_HEADER: EDGE_SECRET}) as resp:
        assert resp.status == 404, "nginx must blank a client's secret header"
    resp = await direct.get(EDGE_AUTH_PATH, headers={**asked, SECRET_HEADER: EDGE_SECRET})
    assert resp.status == 200
    assert resp.headers["X-Codehub-Upstream"] == host_port(upstream.url)


async def test_auth_cache_reuses_answers_briefly(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory(upstreams=(host_port(upstream.url),), auth_cache=1)
    await edge.cluster.workspace("alice", "ws", upstream.url)
    for _ in range(5):
        async with edge.get("/w/alice/ws/same", headers=ALICE) as resp:
            assert resp.status == 200
    entries = (edge.process.cfg.workdir / "auth-cache").rglob("*")
    cached = [p.read_bytes() for p in entries if p.is_file()]
    assert any(b"/w/alice/ws/same" in entry for entry in cached if entry), "nothing cached"
    async with edge.get("/w/alice/ws/same", headers=bearer("bob")) as resp:
        assert resp.status == 404, "another credential is never served a cached answer"
    for theme in ("dark", "light"):
        async with edge.get("/w/alice/ws/same", headers={**ALICE, "Cookie": f"t={theme}"}) as resp:
            seen = {k.lower(): v for k, v in (await resp.json())["headers"].items()}
        assert seen["cookie"] == f"t={theme}", "the app gets the cookies of this request"
    async with edge.get("/w/alice/ws/same", headers={**ALICE, "Upgrade": "websocket"}) as resp:
        assert resp.status != 200 or "raw_path" not in await resp.text()


async def _until(check: Callable[[], Awaitable[bool]], limit: float = 20.0) -> bool:
    """Poll ``check`` until it holds (True) or ``limit`` seconds pass (False)."""
    deadline = asyncio.get_running_loop().time() + limit
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_auth_cache_follows_a_moved_endpoint(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    """Cached answers are files nginx keeps open; a new answer for the same key is a new
    file, so after the cache lifetime the edge follows the workspace, and never goes back."""

    async def answer(_: web.Request) -> web.Response:
        return web.Response(text="moved")

    moved = web.Application()
    moved.router.add_get("/{tail:.*}", answer)
    runner, other = await serve_app(moved)
    try:
        edge = await edge_factory(
            upstreams=(host_port(upstream.url), host_port(other)), auth_cache=1
        )
        await edge.cluster.workspace("alice", "ws", upstream.url)

        async def body() -> str:
            async with edge.get("/w/alice/ws/x", headers=ALICE) as resp:
                return await resp.text()

        assert "raw_path" in await body()
        await edge.cluster.set_status("alice", "ws", {"endpoint": other})

        async def followed() -> bool:
            return await body() == "moved"

        assert await _until(followed), "the edge kept the old endpoint"
        assert [await body() for _ in range(20)] == ["moved"] * 20
    finally:
        await runner.cleanup()


async def test_auth_cache_forgets_a_stopped_workspace(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    """The revocation lag is bounded: once the cached answer expires the server decides
    again (a refusal is never cached), and nginx stops forwarding."""
    edge = await edge_factory(upstreams=(host_port(upstream.url),), auth_cache=1)
    await edge.cluster.workspace("alice", "ws", upstream.url)
    async with edge.get("/w/alice/ws/x", headers=ALICE) as resp:
        assert resp.status == 200
    await edge.cluster.set_status("alice", "ws", {"observed_status": "STOPPED", "endpoint": None})

    async def refused() -> bool:
        async with edge.get("/w/alice/ws/x", headers=ALICE) as resp:
            return resp.status != 200 and "raw_path" not in await resp.text()

    assert await _until(refused), "a stopped workspace kept passing"
    assert await refused(), "and it stays refused"


async def test_no_credential_in_the_access_log(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory(upstreams=(host_port(upstream.url),))
    await edge.cluster.workspace("alice", "ws", upstream.url)
    cookie = {"Cookie": "codehub_session=cookie-secret-value"}
    async with edge.get("/w/alice/ws/x", headers={**ALICE, **cookie}) as resp:
        assert resp.status == 200
    async with edge.get(LINK_PATH + "link-token-secret") as resp:
        await resp.read()
    await asyncio.to_thread(edge.process.stop)  # flushes the buffered log
    log = edge.process.access_log.read_text()
    assert "/w/alice/ws/x" in log
    token = ALICE["Authorization"].split()[1]
    for secret in (token, "cookie-secret-value", "link-token-secret", EDGE_SECRET):
        assert secret not in log
    assert re.search(r"/w/-/link/REDACTED", log)


async def test_pools_name_running_loopback_endpoints_only(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    edge = await edge_factory()
    await edge.cluster.workspace("alice", "ws", upstream.url)
    await edge.cluster.workspace("alice", "elsewhere", "http://workspace.example:8080")
    await edge.cluster.workspace("alice", "sleepy")
    app = edge.cluster.replicas[0].host
    pools = None
    for _ in range(200):  # the endpoint watch catches up
        pools = await asyncio.to_thread(fetch_pools, app, EDGE_SECRET)
        if pools:
            break
        await asyncio.sleep(0.05)
    assert pools == (host_port(upstream.url),)
    assert await asyncio.to_thread(fetch_pools, app, "wrong secret") is None


async def test_python_forwards_behind_the_edge_keep_the_clients_forwarded_headers(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    """A ``localhost`` endpoint is not one nginx may reach (127.0.0.1 only): the Python
    proxy forwards it, and still names the client and HTTPS, never the edge."""
    edge = await edge_factory()
    await edge.cluster.workspace("alice", "ws", upstream.url.replace("127.0.0.1", "localhost"))
    headers = {**ALICE, "X-Forwarded-For": "10.9.8.7", SECRET_HEADER: "client-made"}
    async with edge.get("/w/alice/ws/via-python?x=1", headers=headers) as resp:
        assert resp.status == 200
        seen = await resp.json()
    assert seen["raw_path"] == "/via-python?x=1"
    fwd = {k.lower(): v for k, v in seen["headers"].items()}
    assert fwd["x-forwarded-proto"] == "https"
    assert fwd["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert fwd["x-forwarded-host"] == edge.host
    assert SECRET_HEADER.lower() not in fwd
    assert "authorization" not in fwd
    direct = edge.cluster.replicas[0].client
    resp = await direct.get("/w/alice/ws/direct", headers={**headers, "X-Forwarded-Proto": "https"})
    fwd = {k.lower(): v for k, v in (await resp.json())["headers"].items()}
    assert fwd["x-forwarded-proto"] == "http", "without the secret nothing is trusted"
    assert fwd["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"


async def test_real_workspace_container_through_the_edge(
    edge_factory: Callable[..., Awaitable[Edge]], workspace_container: str
) -> None:
    edge = await edge_factory(upstreams=(host_port(workspace_container),))
    await edge.cluster.workspace("alice", "ws", workspace_container)
    async with edge.get("/w/alice/ws/healthz", headers=ALICE) as resp:
        assert resp.status == 200
        assert (await resp.text()).strip() == "ok"
    async with edge.get("/w/alice/ws/echo?x=1", headers=ALICE) as resp:
        text = await resp.text()
    assert "uri=/echo?x=1" in text, text
    url = yarl.URL(edge.base.replace("https://", "wss://") + "/w/alice/ws/ws")
    async with edge.session.ws_connect(url, headers=ALICE, ssl=edge.tls) as sock:
        await sock.send_str("hello through the edge")
        msg = await sock.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.TEXT
        assert msg.data.strip() == "hello through the edge"


async def test_api_watch_streams_through_the_edge(
    edge_factory: Callable[..., Awaitable[Edge]], upstream: Upstream
) -> None:
    """The API behind the edge is unbuffered: a watch event arrives while the stream is open."""
    edge = await edge_factory()
    path = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces?watch=true"
    async with edge.get(path, headers=ALICE) as resp:
        assert resp.status == 200
        await edge.cluster.workspace("alice", "watched", upstream.url)
        line = await asyncio.wait_for(resp.content.readline(), 30)
    assert b'"watched"' in line, line
