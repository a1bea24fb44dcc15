"""The real server app (PostgreSQL store, proxy mounted) and real upstreams.

- ``cluster_factory(n)``: n server apps on one fresh database (the shared ``make_api``
  harness), each with its own replica id, sharing one session secret.
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
from proxykit import PROXY_USERS, SECRET, Cluster, Replica, Upstream, _upstream_app
from support.api import ApiFactory, serve_app

from codehub.crd_like.proxy import PROXY_KEY
from codehub.crd_like.proxy.logs import RedactingAccessLogger
from codehub.crd_like.store.postgres import PostgresStore

IMAGE = "codehub/workspace-test:local"


@pytest.fixture
async def cluster_factory(
    database_url: str, make_api: ApiFactory
) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    opened: list[PostgresStore] = []
    serve = {
        "access_log_class": RedactingAccessLogger,
        "access_log": logging.getLogger("codehub.proxy.access"),
    }

    async def make(n: int = 1, **overrides: Any) -> Cluster:
        store = await PostgresStore.open(database_url, watch_poll_interval=0.5)
        opened.append(store)
        replicas = []
        for i in range(n):
            api = await make_api(
                "postgres",
                identities=PROXY_USERS,
                serve=serve,
                session_secret=SECRET,
                replica_id=f"replica-{i}",
                **overrides,
            )
            replicas.append(Replica(api.http, api.http.app[PROXY_KEY]))
        return Cluster(store, replicas)

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def cluster(cluster_factory: Callable[..., Awaitable[Cluster]]) -> Cluster:
    return await cluster_factory(1)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream(url="")
    runner, up.url = await serve_app(_upstream_app(up))
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
