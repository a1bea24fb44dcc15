"""In headless Chromium: sign in with a pasted token, open a STANDBY workspace, see the
loading page (screenshot kept), land in the workspace when it runs, and exchange
WebSocket messages with it from the page, all through the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from conftest import ERROR_PAGE, artifact, goto
from operator_e2e import USER, Stack, status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "web"
WORKSPACE_TITLE = "codehub workspace-test"
#: A hang guard for a busy shared machine, not a performance assertion.
LAND_DEADLINE_SECONDS = 180.0

ECHO_SCRIPT = """(path) => new Promise((ok, fail) => {
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + path);
  const got = [];
  ws.onopen = () => { ws.send('hello from the page'); ws.send('second'); };
  ws.onmessage = (e) => { got.push(e.data); if (got.length === 2) { ws.close(1000); ok(got); } };
  ws.onerror = () => fail('websocket error');
})"""


async def land(page: Any, title: str) -> None:
    """Until the page shows ``title`` (polled from Python: the loading page's CSP forbids
    the string evaluation ``wait_for_function`` uses)."""
    deadline = time.monotonic() + LAND_DEADLINE_SECONDS
    seen = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a title read during a reload may fail
            seen = await page.title()
            if seen == title:
                return
        await asyncio.sleep(0.25)
    pytest.fail(f"never landed on {title!r}; last title {seen!r} at {page.url}")


async def test_sign_in_wake_land_and_talk_websocket(browser_stack: Stack, browser: Any) -> None:
    stack = browser_stack
    await stack.create(NAME, desired="STANDBY")
    await stack.wait_display(NAME, "STANDBY")
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    wakes: list[str] = []
    page.on(
        "response",
        lambda r: (
            wakes.append(f"{r.status} {r.url} {r.headers.get('x-codehub-wake', '')}")
            if r.request.is_navigation_request()
            else None
        ),
    )

    await goto(page, f"{stack.server.url}/w/{USER}/{NAME}/")
    assert "/w/-/signin" in page.url
    assert await page.title() == "Sign in to codehub"
    await page.fill("#token", stack.server.tokens[USER])
    async with page.expect_navigation():
        await page.click("button[type=submit]")

    # The loading page (unless the workspace already started, which the header tells).
    assert any(w.endswith(" woken") for w in wakes), (wakes, page.url, await page.content())
    if (await page.title()).startswith("Waking up"):
        phase = await page.text_content("#phase")
        assert phase in ("Starting", "Waiting to start", "Ready, opening it"), phase
        shot = artifact("loading-page.png")
        await page.screenshot(path=str(shot))
        print(f"loading page screenshot: {shot}")

    await land(page, WORKSPACE_TITLE)
    assert page.url.endswith(f"/w/{USER}/{NAME}/")
    obj = await stack.get(NAME)
    assert obj["spec"]["desired_state"] == "RUNNING"
    assert obj["metadata"]["annotations"]["codehub.io/desired-state-source"] == "wake"
    assert status(obj)["observed_status"] == "RUNNING"

    echoed = await page.evaluate(ECHO_SCRIPT, f"/w/{USER}/{NAME}/")
    assert echoed == ["hello from the page", "second"]
    await context.close()


async def test_link_from_codehub_open_signs_in(browser_stack: Stack, browser: Any) -> None:
    """``codehub open`` prints a link; the browser follows it into a running workspace."""
    stack = browser_stack
    await stack.create("linked", desired="RUNNING")
    await stack.wait_display("linked", "RUNNING")
    link = stack.cli("open", "linked").stdout.strip()
    assert "/w/-/link/" in link
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    try:
        await goto(page, link)
    except Exception as exc:
        if ERROR_PAGE not in str(exc):
            raise
        # The redirect's second leg failed in Chromium (a network change as Docker's
        # bridge moves) after the server had answered the link: the link is spent and
        # the session cookie set, so the workspace is opened directly, as a user would.
        print("the link's redirect was cut by the browser; opening the workspace")
        await goto(page, link.split("/w/-/link/")[0] + f"/w/{USER}/linked/")
    await land(page, WORKSPACE_TITLE)
    assert page.url.endswith(f"/w/{USER}/linked/")
    again = await goto(page, link)
    assert again is not None
    assert again.status == 401, "the link works once"
    await context.close()


async def test_archived_workspace_restores_then_opens(browser_stack: Stack, browser: Any) -> None:
    """A page load of an ARCHIVED workspace restores it first; the page says so."""
    stack = browser_stack
    await stack.create("old", desired="RUNNING")
    await stack.wait_display("old", "RUNNING")
    await stack.set_desired("old", "PENDING")
    await stack.wait_display("old", "ARCHIVED")
    link = stack.cli("open", "old").stdout.strip()
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await goto(page, link)
    if (await page.title()).startswith("Waking up"):
        phase = await page.text_content("#phase")
        # "Waiting to restore": the wake is recorded, the restore not claimed yet
        phases = ("Waiting to restore", "Restoring from the archive", "Starting")
        assert phase in (*phases, "Ready, opening it"), phase
        shot = artifact("loading-page-restoring.png")
        await page.screenshot(path=str(shot))
        print(f"loading page (archived) screenshot: {shot}")
    await land(page, WORKSPACE_TITLE)
    obj = await stack.get("old")
    assert obj["metadata"]["annotations"]["codehub.io/desired-state-source"] == "wake"
    assert status(obj)["observed_status"] == "RUNNING"
    await context.close()
