"""Browser end-to-end fixtures: the whole stack (API server with the proxy, a leader
coordinator, real containers) and headless Chromium driven by Playwright.

Chromium is Debian's ``/usr/bin/chromium``; nothing is downloaded. Without it, or
without Playwright, the browser tests skip with the reason. Screenshots go to
``tests/artifacts/`` (ignored by git); their paths are printed.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from operator_e2e import Stack, open_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture
def browser_stack(
    request: pytest.FixtureRequest, api_server_factory: Callable[..., Any]
) -> Iterator[Stack]:
    """API server (the proxy included) on a fresh database and one leader coordinator."""
    server = api_server_factory(
        extra_env={"MAX_RUNNING_PER_USER": "10", "CODEHUB_ACTIVITY_INTERVAL": "2"}, tag="web"
    )
    with open_stack(request, server) as st:
        coord = st.start_coordinator("web")
        st.wait_leader(coord)
        yield st


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    """Headless Debian Chromium (never a downloaded one)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed in .venv")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


#: Chromium aborts a navigation in flight when the host's network changes, and Docker's
#: bridge coming up or going down (as the first container on it starts, or the last one
#: stops) is such a change. The browser then had no answer to show, so ``goto`` makes
#: the navigation again; any answer the server gave, an error page included, is kept.
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
#: A navigation Chromium replaced by its own error page (a later leg of it failed).
ERROR_PAGE = "chrome-error://"


async def goto(page: Any, url: str, attempts: int = 3) -> Any:
    """``page.goto(url)``, made again if Chromium aborted it for a network change."""
    for attempt in range(1, attempts + 1):
        try:
            return await page.goto(url)
        except Exception as exc:
            if NETWORK_CHANGED not in str(exc) or attempt == attempts:
                raise
            print(f"navigation to {url.split('/w/')[0]}/w/... aborted by a network change; again")
    raise AssertionError("unreachable")


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
