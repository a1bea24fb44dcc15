"""Over HTTPS, as ``codehub server`` serves it: a browser-like cookie jar keeps the
session cookie (Secure, Path=/w/) and sends it to the proxy, never to the API."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from proxykit import PROXY_USERS, SECRET, Upstream
from support.api import ApiFactory

from codehub.crd_like.server.tls import ensure_certificate, server_ssl_context
from codehub.crd_like.store.postgres import PostgresStore


@pytest.fixture
async def https_server(
    database_url: str, tmp_path: Path, make_api: ApiFactory
) -> AsyncIterator[tuple[str, ssl.SSLContext, PostgresStore]]:
    cert, key = ensure_certificate(tmp_path)
    store = await PostgresStore.open(database_url, watch_poll_interval=0.5)
    try:
        api = await make_api(
            "postgres",
            identities=PROXY_USERS,
            serve={"ssl": server_ssl_context(cert, key)},
            session_secret=SECRET,
        )
        yield api.url, ssl.create_default_context(cafile=str(cert)), store
    finally:
        await store.close()


async def test_browser_session_over_https(
    https_server: tuple[str, ssl.SSLContext, PostgresStore], upstream: Upstream
) -> None:
    base, ctx, store = https_server
    await store.create(
        "workspaces",
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "ws", "namespace": "alice"},
            "spec": {"desired_state": "RUNNING"},
        },
    )

    def running(cur: dict[str, object]) -> dict[str, object]:
        cur["status"] = {"observed_status": "RUNNING", "endpoint": upstream.url}
        return cur

    await store.update("workspaces", "alice", "ws", running, subresource="status")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=ctx)
    ) as browser:
        html = {"Accept": "text/html"}
        resp = await browser.get(f"{base}/w/alice/ws/", headers=html)
        assert resp.status == 200
        assert resp.url.path == "/w/-/signin"
        resp = await browser.post(
            f"{base}/w/-/signin", data={"token": "alice-t", "next": "/w/alice/ws/"}, headers=html
        )
        assert resp.status == 200
        seen = await resp.json()
        assert seen["raw_path"] == "/"
        assert seen["headers"]["X-Forwarded-Proto"] == "https"
        assert "codehub_session" not in seen["headers"].get("Cookie", "")
        api = await browser.get(f"{base}/apis/codehub.io/v1alpha1/namespaces/alice/workspaces")
        assert api.status == 401
        assert "codehub_session" in {c.key for c in jar}
