"""SIGKILL of the server while clients are in the middle of proxied requests.

Through ``/w/{ns}/{name}/`` (docs/proxy.md) a client holds an open WebSocket (the test
image echoes lines) and is half-way through a large download when the server is killed.
Both must look broken to the client: the download either fails or is complete and
sha256-exact (never a short or wrong body that looks complete), the WebSocket ends
without a normal close. The restarted server (a new replica: a new PID, so a new replica
id) serves the workspace again, and the killed replica's ``proxy_connections`` row stops
counting after ``CODEHUB_REPLICA_TTL``: ``status.open_connections`` goes back to 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from typing import Any

import aiohttp
from chaos_faults import Chaos, ensure_running, kill_server_process
from operator_e2e import USER, Stack, status, uid_of

BIG = 64 << 20  # far more than the socket buffers between client, proxy and app
FIRST = 256 << 10
PATIENCE = 90.0


def _root_exec(stack: Stack, uid: str, script: str) -> str:
    """As root in the container: the app's static directory belongs to root."""
    c = stack.container(uid)
    if c is None:
        raise RuntimeError(f"no container ws-{uid}")
    code, out = c.exec_run(["sh", "-c", script], user="0")
    text = out.decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"exec failed ({code}): {text}")
    return str(text)


async def _running(chaos: Chaos) -> tuple[str, str] | None:
    name = await ensure_running(chaos)
    with contextlib.suppress(Exception):
        obj = await chaos.stack.get(name)
        st = status(obj)
        if st.get("display") == "RUNNING" and st.get("operation", "NONE") == "NONE":
            return name, uid_of(obj)
    return None


async def _open_connections(stack: Stack, name: str) -> int | None:
    with contextlib.suppress(Exception):
        return int(status(await stack.get(name)).get("open_connections") or 0)
    return None


async def _finish_download(resp: aiohttp.ClientResponse, head: bytes) -> tuple[bool, int, str]:
    """Read the rest after the kill: (broken, bytes received, sha256 of what came)."""
    digest = hashlib.sha256(head)
    got = len(head)
    try:
        while chunk := await asyncio.wait_for(resp.content.read(1 << 20), 60):
            digest.update(chunk)
            got += len(chunk)
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        return True, got, digest.hexdigest()
    return False, got, digest.hexdigest()


async def kill_server_mid_proxy(chaos: Chaos) -> str:
    """Long because it is one story: connect, kill, look at both clients, recover."""
    stack, ledger = chaos.stack, chaos.ledger
    found = await _running(chaos)
    if found is None:
        return "no RUNNING workspace to proxy"
    name, uid = found
    try:
        out = await asyncio.to_thread(
            _root_exec,
            stack,
            uid,
            f"head -c {BIG} /dev/urandom > /srv/www/chaos-big && sha256sum /srv/www/chaos-big",
        )
    except Exception as exc:
        return f"could not place the download: {exc}"
    sha = out.split()[0]
    ctx = ssl.create_default_context(cafile=stack.server.ca_file)
    headers = {"Authorization": f"Bearer {stack.server.tokens[USER]}"}
    base = f"{stack.server.url}/w/{USER}/{name}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        try:
            ws = await http.ws_connect(base + "/ws", ssl=ctx)
            await ws.send_str("before the kill")
            echo = await asyncio.wait_for(ws.receive(), 30)
            resp = await http.get(base + "/chaos-big", ssl=ctx)
            head = b""
            while resp.status == 200 and len(head) < FIRST:
                head += await asyncio.wait_for(resp.content.read(FIRST - len(head)), 30)
        except Exception as exc:
            return f"proxy not reachable before the kill: {exc!r}"
        ledger.check("proxy websocket echoes", echo.data == "before the kill", repr(echo))
        ledger.check("proxy download starts", resp.status == 200, f"status {resp.status}")
        counted = await _wait_counted(stack, name)
        ledger.check("open websocket counted in status", counted, name)
        await asyncio.to_thread(kill_server_process, stack)
        broken, got, digest = await _finish_download(resp, head)
        exact = got == BIG and digest == sha
        ledger.check(
            "killed download broken or exact", broken or exact, f"{got} bytes, sha {digest}"
        )
        ledger.faults[f"proxy download {'cut mid-flight' if broken else 'done before kill'}"] += 1
        msg = await asyncio.wait_for(ws.receive(), 60)
        ledger.check(
            "killed websocket ends abnormally",
            msg.type != aiohttp.WSMsgType.TEXT and ws.close_code in (None, 1006),
            f"{msg.type} close code {ws.close_code}",
        )
        resp.release()
        await ws.close()
    await asyncio.to_thread(stack.server.start)
    await _served_again(chaos, name, ctx, headers)
    return f"SIGKILL API server mid-proxy ({name})"


async def _wait_counted(stack: Stack, name: str) -> bool:
    """The open WebSocket reaches status (the write is throttled, not immediate), so
    that its going back to 0 later means something."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (await _open_connections(stack, name) or 0) >= 1:
            return True
        await asyncio.sleep(0.3)
    return False


async def _served_again(chaos: Chaos, name: str, ctx: ssl.SSLContext, headers: Any) -> None:
    """The new replica serves the workspace, and, once the dead replica's row expired,
    a request's activity write reports no open connection."""
    stack, ledger = chaos.stack, chaos.ledger
    served, count = False, None
    deadline = time.monotonic() + PATIENCE
    async with aiohttp.ClientSession(headers=headers) as http:
        while time.monotonic() < deadline and not (served and count == 0):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{stack.server.url}/w/{USER}/{name}/healthz", ssl=ctx) as r:
                    served = served or (r.status == 200 and (await r.read()) == b"ok\n")
            count = await _open_connections(stack, name)
            await asyncio.sleep(1.0)
    ledger.check("new replica serves the workspace", served, name)
    ledger.check("dead replica's connections expire", count == 0, f"{name}: {count}")
