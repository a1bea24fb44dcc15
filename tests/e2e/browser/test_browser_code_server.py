"""VS Code (code-server) through the proxy in headless Chromium: the workbench loads
under the ``/w/{ns}/{name}/`` prefix and its WebSockets connect through the proxy.

The image ``codehub/code-server:local`` is opt-in (``scripts/images/code-server/build``);
without it this test skips with that reason.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import artifact, goto
from operator_e2e import USER, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "codehub/code-server:local"
NAME = "vscode"
#: code-server's first start on a busy 2-core machine is slow; a hang guard only.
WORKBENCH_DEADLINE_SECONDS = 240.0


@pytest.fixture
def code_server_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(
            f"{IMAGE} is not built; it is opt-in: run scripts/images/code-server/build "
            "(or CODEHUB_BUILD_CODE_SERVER=1 scripts/build-test-images)"
        )
    return IMAGE


async def test_vscode_workbench_through_the_proxy(
    browser_stack: Stack, browser: Any, code_server_image: str
) -> None:
    stack = browser_stack
    await stack.create(NAME, desired="RUNNING", image=code_server_image)
    await stack.wait_display(NAME, "RUNNING")
    link = stack.cli("open", NAME).stdout.strip()
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    sockets: list[Any] = []
    received: dict[str, int] = {}

    def on_socket(ws: Any) -> None:
        sockets.append(ws)
        received.setdefault(ws.url, 0)

        def count(_payload: Any) -> None:
            received[ws.url] += 1

        ws.on("framereceived", count)

    page.on("websocket", on_socket)
    # code-server answers 200 only once its own start is done; the proxy's 502 before.
    deadline = time.monotonic() + WORKBENCH_DEADLINE_SECONDS
    await goto(page, link)
    while not await page.query_selector(".monaco-workbench"):
        if time.monotonic() > deadline:
            pytest.fail(f"no .monaco-workbench at {page.url}: {(await page.content())[:500]}")
        if await page.query_selector("body > h1"):  # a proxy page: try again
            await asyncio.sleep(2)
            await goto(page, f"{stack.server.url}/w/{USER}/{NAME}/")
        else:
            await asyncio.sleep(0.5)
    assert f"/w/{USER}/{NAME}/" in page.url
    while not any(n for n in received.values()):
        if time.monotonic() > deadline:
            pytest.fail(f"no WebSocket frames received: {[s.url for s in sockets]}")
        await asyncio.sleep(0.5)
    prefix = stack.server.url.replace("https://", "wss://") + f"/w/{USER}/{NAME}/"
    assert any(url.startswith(prefix) and n for url, n in received.items()), received
    shot = artifact("code-server-workbench.png")
    await page.screenshot(path=str(shot))
    print(f"code-server workbench screenshot: {shot}")
    await context.close()
