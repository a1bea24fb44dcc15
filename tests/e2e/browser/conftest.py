"""Browser end-to-end fixtures: the whole stack (API server with the proxy, a leader
coordinator, real containers) and headless Chromium driven by Playwright.

Chromium is Debian's ``/usr/bin/chromium``; nothing is downloaded. Without it, or
without Playwright, the browser tests skip with the reason. Screenshots go to
``tests/artifacts/`` (ignored by git); their paths are printed.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from operator_e2e import TEST_LABEL, Stack

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
    api_server_factory: Callable[..., Any],
    run_id: str,
    s3_bucket: str,
    test_images: dict[str, str],
    docker_client: Any,
    tmp_path: Path,
) -> Iterator[Stack]:
    """API server (the proxy included) on a fresh database and one leader coordinator."""
    server = api_server_factory(
        extra_env={"MAX_RUNNING_PER_USER": "10", "CODEHUB_ACTIVITY_INTERVAL": "2"}, tag="web"
    )
    case = uuid.uuid4().hex[:10]
    labels = {"codehub.io/test-run": run_id, TEST_LABEL: case}
    settings_env = {
        **server.env,
        "CODEHUB_SERVER": server.url,
        "CODEHUB_TOKEN": server.tokens["operator"],
        "CODEHUB_CA_FILE": server.ca_file,
        "CODEHUB_S3_BUCKET": s3_bucket,
        "PYTHONUNBUFFERED": "1",
        "RECONCILER_INTERVAL": "1",
        "RECONCILER_RETRY_BACKOFF": "1",
        "HEALTH_MONITOR_INTERVAL": "1",
        "COORDINATOR_RETRY_INTERVAL": "1",
    }
    st = Stack(
        server=server,
        settings_env=settings_env,
        scope_labels=labels,
        state=tmp_path,
        docker=docker_client,
        s3=None,
        bucket=s3_bucket,
        image=test_images.get("workspace-test", "codehub/workspace-test:local"),
    )
    try:
        coord = st.start_coordinator("web")
        st.wait_leader(coord)
        yield st
    finally:
        for c in st.coordinators:
            with contextlib.suppress(Exception):
                c.terminate()
        selector = {"label": f"{TEST_LABEL}={case}"}
        for c in docker_client.containers.list(all=True, filters=selector):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for v in docker_client.volumes.list(filters=selector):
            with contextlib.suppress(Exception):
                v.remove(force=True)


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


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
