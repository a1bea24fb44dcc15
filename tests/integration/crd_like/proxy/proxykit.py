"""Helpers of the proxy integration tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from support.api import IDENTITIES
from support.api import bearer as api_bearer

from codehub.crd_like.proxy import ProxyState
from codehub.crd_like.store.postgres import PostgresStore

#: The users of the proxy tests (support.api's alice, bob and admin).
PROXY_USERS = [IDENTITIES[name] for name in ("alice", "bob", "admin")]
SECRET = "test-session-secret-shared-by-replicas"


def bearer(user: str) -> dict[str, str]:
    return api_bearer(IDENTITIES[user].token)


@dataclass
class Replica:
    client: TestClient[Any, Any]
    state: ProxyState

    @property
    def base(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def host(self) -> str:
        return f"{self.client.host}:{self.client.port}"


@dataclass
class Cluster:
    store: PostgresStore
    replicas: list[Replica]

    async def workspace(self, ns: str, name: str, endpoint: str | None = None) -> dict[str, Any]:
        obj = await self.store.create(
            "workspaces",
            {
                "apiVersion": "codehub.io/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"desired_state": "RUNNING"},
            },
        )
        if endpoint is not None:
            obj = await self.set_status(
                ns, name, {"observed_status": "RUNNING", "endpoint": endpoint}
            )
        return obj

    async def set_status(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        def mutate(cur: dict[str, Any]) -> dict[str, Any]:
            cur["status"] = {**(cur.get("status") or {}), **patch}
            return cur

        return await self.store.update("workspaces", ns, name, mutate, subresource="status")

    async def status(self, ns: str, name: str) -> dict[str, Any]:
        obj = await self.store.get("workspaces", ns, name)
        return dict(obj.get("status") or {})


# ------------------------------------------------------------------ upstream


@dataclass
class Upstream:
    url: str
    peers: set[tuple[str, int]] = field(default_factory=set)
    ws_closes: list[int | None] = field(default_factory=list)
    uploaded: list[int] = field(default_factory=list)


def _upstream_app(up: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            up.peers.add((peer[0], peer[1]))
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": body.decode(errors="replace"),
            },
            headers={"Set-Cookie": "app=1; Path=/", "Location": "/landed"},
        )

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        chunk = b"\0" * (1 << 20)
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.StreamResponse:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        up.uploaded.append(total)
        return web.json_response({"received": total})

    async def reset(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response()

    async def ws(request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith("close:"):
                await sock.close(code=int(msg.data[6:]))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        up.ws_closes.append(sock.close_code)
        return sock

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_post("/upload", upload)
    app.router.add_get("/reset", reset)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def raw_request(
    host: str, port: int, target: str, headers: dict[str, str], ssl: Any = None
) -> tuple[int, bytes]:
    """Send ``target`` exactly as written (clients would normalise it); status and body."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def json_of(body: bytes) -> Any:
    return json.loads(body)
