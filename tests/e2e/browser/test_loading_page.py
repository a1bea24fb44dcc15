"""The loading page's script in Chromium, fed by a scripted event stream (no server):
progress as percentage, bytes and rate; phases; the page's CSP lets only its own script
run. A screenshot with progress is kept."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import artifact

from codehub.crd_like.proxy.routing import Forward
from codehub.crd_like.proxy.wake_pages import error_page, limited_page, loading_page
from codehub.crd_like.server.admission import LimitExceeded
from codehub.crd_like.store.interface import RunningRef

pytestmark = [pytest.mark.e2e]

ORIGIN = "https://codehub.test"
OBJ = {
    "metadata": {"namespace": "alice", "name": "w", "uid": "u"},
    "spec": {"desired_state": "RUNNING"},
    "status": {"observed_status": "PENDING", "archive_key": "k", "operation": "RESTORING"},
}
MiB = 1 << 20


def sse(state: dict[str, Any]) -> str:
    data = {"workspace": "w", "namespace": "alice", "desired_state": "RUNNING", **state}
    return f"id: 7\nevent: state_changed\ndata: {json.dumps(data)}\n\nretry: 60000\n\n"


async def text_of(page: Any, selector: str, wanted: str) -> str:
    """Poll from Python (the page's CSP forbids Playwright's string evaluation)."""
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        seen = await page.text_content(selector) or ""
        if wanted in seen:
            return seen
        await asyncio.sleep(0.1)
    pytest.fail(f"{selector} never showed {wanted!r}; last {seen!r}")


async def test_progress_phase_and_csp(browser: Any) -> None:
    answer = loading_page(OBJ, Forward("alice", "w", "/", ""), woken=True)
    state = {
        "observed_status": "PENDING",
        "display": "ARCHIVED",
        "operation": "RESTORING",
        "progress": {"bytes_done": 42 * MiB, "bytes_total": 100 * MiB, "bytes_per_second": 5 * MiB},
    }
    context = await browser.new_context()
    page = await context.new_page()
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )

    async def workspace(route: Any) -> None:
        await route.fulfill(status=200, headers=dict(answer.headers), body=answer.text or "")

    async def events(route: Any) -> None:
        await route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=sse(state)
        )

    await page.route(f"{ORIGIN}/w/alice/w/", workspace)
    await page.route(f"{ORIGIN}/w/-/events/alice/w", events)
    await page.goto(f"{ORIGIN}/w/alice/w/")
    detail = await text_of(page, "#detail", "42%")
    assert "42.0 MiB of 100.0 MiB" in detail
    assert "5.0 MiB/s" in detail
    assert await page.text_content("#phase") == "Restoring from the archive"
    shot = artifact("loading-page-progress.png")
    await page.screenshot(path=str(shot))
    print(f"loading page (progress) screenshot: {shot}")
    assert violations == []
    await context.close()


def serving(answer: Any) -> Any:
    async def serve(route: Any) -> None:
        await route.fulfill(status=answer.status, headers=dict(answer.headers), body=answer.text)

    return serve


async def test_limit_and_error_pages_render_without_script(browser: Any) -> None:
    """The 429 and ERROR pages are readable and run nothing (screenshots kept)."""
    limit = LimitExceeded(
        "per_user", 2, 2, [RunningRef("alice", "one"), RunningRef("alice", "two")]
    )
    broken = {
        "metadata": {"namespace": "alice", "name": "w", "uid": "u"},
        "spec": {"desired_state": "RUNNING"},
        "status": {
            "observed_status": "ERROR",
            "error_info": {"reason": "ContainerGone", "message": "the container disappeared"},
        },
    }
    context = await browser.new_context()
    page = await context.new_page()
    for name, answer in (
        ("limit", limited_page(limit, "alice", "w")),
        ("error", error_page(broken)),
    ):
        await page.route(f"{ORIGIN}/w/alice/w/", serving(answer))
        await page.goto(f"{ORIGIN}/w/alice/w/")
        assert await page.query_selector("script") is None
        shot = artifact(f"{name}-page.png")
        await page.screenshot(path=str(shot))
        print(f"{name} page screenshot: {shot}")
        await page.unroute(f"{ORIGIN}/w/alice/w/")
    assert "codehub recover w -n alice" in (await page.text_content("body") or "")
    await context.close()
