"""Small answers (a Content-Length up to 64 KiB) are read whole and sent in one write
(docs/adr/0010-proxy-performance.md): bytes and headers arrive exactly, answers that
announce a length without a body (304) do not wait for one, and an upstream that breaks
inside such a body never yields a complete answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from proxykit import Cluster, bearer

from codehub.crd_like.proxy.forward import SMALL_BODY

ALICE = bearer("alice")


def _answer(path: str) -> tuple[bytes, bool]:
    """Raw bytes the upstream sends for ``path``; True when it then closes."""
    if path.startswith("/size/"):
        size = int(path.rpartition("/")[2])
        body = bytes(i % 251 for i in range(size))
        head = f"HTTP/1.1 200 OK\r\nContent-Type: x-test/bytes\r\nContent-Length: {size}\r\n"
        return head.encode() + b"X-App: yes\r\n\r\n" + body, False
    if path == "/not-modified":
        # A 304 announces the length of the representation; no body follows.
        return b'HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: "e"\r\n\r\n', False
    if path == "/short":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b", True
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", False


@pytest.fixture
async def raw_upstream() -> AsyncIterator[str]:
    """An HTTP/1.1 keep-alive upstream that writes exactly the bytes of ``_answer``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                data, close = _answer(path)
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_small_and_boundary_bodies_arrive_exactly(
    cluster: Cluster, raw_upstream: str
) -> None:
    await cluster.workspace("alice", "ws", raw_upstream)
    client = cluster.replicas[0].client
    for size in (0, 3, SMALL_BODY - 1, SMALL_BODY, SMALL_BODY + 1, 3 * SMALL_BODY + 7):
        resp = await client.get(f"/w/alice/ws/size/{size}", headers=ALICE)
        body = await resp.read()
        assert resp.status == 200, size
        assert body == bytes(i % 251 for i in range(size)), size
        assert resp.headers["Content-Length"] == str(size)
        assert resp.headers["Content-Type"] == "x-test/bytes"
        assert resp.headers["X-App"] == "yes"


async def test_not_modified_with_a_length_does_not_wait_for_a_body(
    cluster: Cluster, raw_upstream: str
) -> None:
    await cluster.workspace("alice", "ws", raw_upstream)
    client = cluster.replicas[0].client
    resp = await asyncio.wait_for(client.get("/w/alice/ws/not-modified", headers=ALICE), 10)
    assert resp.status == 304
    assert resp.headers["ETag"] == '"e"'
    assert await resp.read() == b""
    again = await client.get("/w/alice/ws/size/3", headers=ALICE)
    assert again.status == 200


async def test_upstream_breaking_inside_a_small_body_is_never_a_complete_answer(
    cluster: Cluster, raw_upstream: str
) -> None:
    await cluster.workspace("alice", "ws", raw_upstream)
    client = cluster.replicas[0].client

    async def fetch() -> bytes:
        resp = await client.get("/w/alice/ws/short", headers=ALICE)
        return await resp.read()

    with pytest.raises(aiohttp.ClientError):
        await fetch()
    again = await client.get("/w/alice/ws/size/3", headers=ALICE)
    assert again.status == 200
