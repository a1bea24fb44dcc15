"""``codehub edge`` as a process: nginx as its child, pools refreshed from the server,
nginx stopped when the command is."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from proxykit import Cluster, Upstream, bearer

from codehub.crd_like.proxy.edge import SECRET_ENV
from codehub.crd_like.proxy.edge_run import nginx_binary

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (scripts/install-system-packages)"
)

SECRET = "edge-command-secret-for-tests"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_edge_command_serves_refreshes_pools_and_stops_nginx(
    cluster_factory: Callable[..., Awaitable[Cluster]],
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    cluster = await cluster_factory(1, edge_secret=SECRET)
    await cluster.workspace("alice", "ws", upstream.url)
    state = tmp_path / "state"
    env = {**os.environ, SECRET_ENV: SECRET, "CODEHUB_STATE_DIR": str(state)}
    for name in ("CODEHUB_TLS_CERT", "CODEHUB_TLS_KEY"):
        env.pop(name, None)
    listen = f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "codehub.operator.cli", "edge"),
        *("--app", cluster.replicas[0].host, "--listen", listen),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert f"https://{listen}/" in banner, banner
        nginx_pid = int(banner.rsplit("nginx pid ", 1)[1].rstrip(")\n"))
        assert alive(nginx_pid)
        conf = state / "edge" / "nginx.conf"
        assert conf.stat().st_mode & 0o077 == 0
        text = conf.read_text()
        assert "worker_processes auto;" in text, "one worker per core by default"
        assert "proxy_cache_valid 200 1s;" in text, "the 1 s auth cache by default"
        pool = upstream.url.removeprefix("http://")
        for _ in range(600):  # the 2 s refresh, then a reload
            if pool in conf.read_text():
                break
            await asyncio.sleep(0.05)
        assert f'"{pool}" codehub_w0;' in conf.read_text()
        tls = ssl.create_default_context(cafile=str(state / "tls" / "server.crt"))
        async with aiohttp.ClientSession() as session:
            url = f"https://{listen}/w/alice/ws/through-the-command"
            async with session.get(url, headers=bearer("alice"), ssl=tls) as resp:
                assert resp.status == 200
                seen = await resp.json()
        assert seen["raw_path"] == "/through-the-command"
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert not alive(nginx_pid), "nginx outlived codehub edge"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
