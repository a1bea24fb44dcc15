"""WebSocket pass-through: text, binary, ping/pong handled per hop, close codes relayed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import yarl
from aiohttp import web

from . import pages
from .forward import upstream_headers
from .routing import Forward, redact

log = logging.getLogger(__name__)

_WS_OWN_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
    }
)


def sendable(code: int | None) -> int:
    """A close code that may go on the wire (1005/1006/1015 are only ever reported)."""
    if code is None or code == 1005:
        return 1000
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011


def is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> int | None:
    """Copy messages until ``source`` closes; returns the close code it sent, if any.

    Close frames are handled here, not by aiohttp (autoclose off), so the code the
    closing side chose is the one the other side receives.
    """
    while True:
        msg = await source.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            return int(msg.data) if isinstance(msg.data, int) else None
        elif msg.type in (
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return None


async def forward_websocket(
    request: web.Request, client: aiohttp.ClientSession, url: yarl.URL, fwd: Forward
) -> web.StreamResponse:
    """Connect upstream first (a refusal is a plain 502), then upgrade and relay."""
    headers = upstream_headers(request, fwd)
    for key in list(headers):
        if key.lower() in _WS_OWN_HEADERS:
            headers.popall(key, None)
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    try:
        upstream = await client.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoclose=False,
            max_msg_size=0,
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.info("proxy: websocket upstream of %s failed: %r", redact(request.raw_path), exc)
        return pages.error(request, 502, "upstream_unreachable", "the workspace did not answer")
    downstream = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        max_msg_size=0,
    )
    try:
        await downstream.prepare(request)
        to_up = asyncio.ensure_future(_pump(downstream, upstream))
        to_down = asyncio.ensure_future(_pump(upstream, downstream))
        done, _ = await asyncio.wait({to_up, to_down}, return_when=asyncio.FIRST_COMPLETED)
        first = to_up if to_up in done else to_down
        code = sendable(first.result() if first.exception() is None else 1011)
        closing, other = (downstream, upstream) if first is to_up else (upstream, downstream)
        await other.close(code=code)
        await closing.close(code=code)
        for task in (to_up, to_down):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await upstream.close()
        await downstream.close()
    return downstream
