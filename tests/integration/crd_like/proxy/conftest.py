"""The real server app (PostgreSQL store, proxy mounted) and real upstreams.

- ``replicas(n)``: n server apps on one fresh database, each with its own replica id,
  served on 127.0.0.1 by aiohttp's test server, sharing one session secret.
- ``upstream``: a local aiohttp app that echoes requests, streams big bodies, resets
  connections, echoes WebSockets (text, binary, close codes) and counts connections.
- ``workspace_container``: a real codehub/workspace-test:local container (busybox httpd
  and a websocketd echo) with its port published on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from proxykit import SECRET, TOKENS, Cluster, Replica, Upstream, _upstream_app

from codehub.crd_like.config import ApiConfig
from codehub.crd_like.proxy import PROXY_KEY
from codehub.crd_like.proxy.logs import RedactingAccessLogger
from codehub.crd_like.server.app import create_app
from codehub.crd_like.store.postgres import PostgresStore

IMAGE = "codehub/workspace-test:local"


@pytest.fixture
async def cluster_factory(
    database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    opened: list[Cluster] = []

    async def make(n: int = 1, **overrides: Any) -> Cluster:
        store = await PostgresStore.open(database_url, watch_poll_interval=0.5)
        replicas = []
        for i in range(n):
            config = ApiConfig(
                database_url=database_url,
                token_file=str(tokens),
                state_dir=tmp_path,
                session_secret=SECRET,
                replica_id=f"replica-{i}",
                **overrides,
            )
            app_store = await PostgresStore.open(database_url, watch_poll_interval=0.5)
            app = create_app(config, app_store, close_store=True)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server(
                access_log_class=RedactingAccessLogger,
                access_log=logging.getLogger("codehub.proxy.access"),
            )
            client = TestClient(server)
            await client.start_server()
            replicas.append(Replica(client, app[PROXY_KEY]))
        cluster = Cluster(store, replicas)
        opened.append(cluster)
        return cluster

    yield make
    for cluster in opened:
        for replica in cluster.replicas:
            await replica.client.close()
        await cluster.store.close()


@pytest.fixture
async def cluster(cluster_factory: Callable[..., Awaitable[Cluster]]) -> Cluster:
    return await cluster_factory(1)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream(url="")
    runner = web.AppRunner(_upstream_app(up))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    up.url = f"http://127.0.0.1:{port}"
    yield up
    await runner.cleanup()


# ------------------------------------------------------------------ a real workspace container


@pytest.fixture
def workspace_container(
    docker_client: Any, service_env: dict[str, str], scope_labels: dict[str, str]
) -> Iterator[str]:
    """The container's base URL (http://127.0.0.1:PORT), once its /healthz answers."""
    build = Path(__file__).resolve().parents[4] / "scripts/images/workspace-test/build"
    subprocess.run([str(build)], env={**os.environ, **service_env}, check=True)
    container = docker_client.containers.run(
        IMAGE,
        detach=True,
        ports={"8080/tcp": ("127.0.0.1", None)},
        labels=dict(scope_labels),
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            if _healthy(url):
                break
            container.reload()
            assert container.status in ("created", "running"), container.logs()
            time.sleep(0.1)
        yield url
    finally:
        container.remove(force=True)


def _healthy(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url + "/healthz", timeout=2) as r:
        return bool(r.status == 200)
    return False
