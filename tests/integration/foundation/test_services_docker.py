"""The local workspace image on the real engine, reached only through 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import docker
import pytest
from docker.models.containers import Container


@pytest.fixture
def workspace_container(
    docker_client: docker.DockerClient,
    test_images: dict[str, str],
    scope_labels: dict[str, str],
) -> Iterator[tuple[Container, int]]:
    container = docker_client.containers.run(
        test_images["workspace-test"],
        detach=True,
        labels=dict(scope_labels),
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        yield container, int(binding["HostPort"])
    finally:
        container.remove(force=True)


async def _get_when_ready(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    last: Exception | None = None
    for _ in range(100):
        try:
            async with session.get(url) as resp:
                return resp.status, await resp.text()
        except aiohttp.ClientError as exc:
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered: {last!r}")


async def test_healthz_and_websocket_echo(workspace_container: tuple[Container, int]) -> None:
    _, port = workspace_container
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        status, body = await _get_when_ready(session, f"{base}/healthz")
        assert (status, body.strip()) == (200, "ok")
        async with session.get(f"{base}/does-not-exist") as resp:
            assert resp.status == 404
        async with session.ws_connect(f"{base}/ws") as ws:
            for text in ("hello", "second message"):
                await ws.send_str(text)
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT
                assert msg.data == text


def test_image_runs_as_coder(
    docker_client: docker.DockerClient,
    test_images: dict[str, str],
    scope_labels: dict[str, str],
) -> None:
    out = (
        docker_client.containers.run(
            test_images["workspace-test"],
            [
                "sh",
                "-c",
                "id -u; echo $HOME; stat -c %u /home/coder; "
                "for t in find stat md5sum readlink head tar gzip sha256sum; do which $t; done",
            ],
            labels=dict(scope_labels),
            remove=True,
        )
        .decode()
        .split()
    )
    assert out[:3] == ["1000", "/home/coder", "1000"]
    assert len(out) == 3 + 8
