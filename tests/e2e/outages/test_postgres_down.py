"""PostgreSQL down for a while (a private instance this test starts and stops): the API
answers 503 with a Status body and Retry-After, promptly (the store's breaker: no request
waits the connection-acquisition timeout; how long each took is printed, not asserted),
the coordinator drops leadership and takes it again, and nothing is half-written (what
was refused during the outage does not exist afterwards).

``CODEHUB_OUTAGE_SECONDS`` sets the outage (default 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.api import IDENTITIES
from support.private_services import ServerThread, private_postgres

from codehub.crd_like.config import ApiConfig
from codehub.operator.coordinator import Coordinator, LeaderComponent, LeaderTerm
from codehub.operator.leader import LeaderElector
from codehub.operator.settings import Settings

OUTAGE = float(os.environ.get("CODEHUB_OUTAGE_SECONDS", "30"))
#: Liveness bound only (a hang must fail, not block CI).
PATIENCE = 120.0
NS = "alice"
LIST = f"/apis/codehub.io/v1alpha1/namespaces/{NS}/workspaces"


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": "STANDBY"},
    }


async def until(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not await predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def pg() -> AsyncIterator[tuple[Any, str]]:
    # Not under pytest's tmp_path: its parents are private to root, and PostgreSQL runs
    # as its own user.
    root = Path(tempfile.mkdtemp(prefix="codehub-pg-outage-"))
    os.chmod(root, 0o755)
    postgres = private_postgres(root)
    try:
        url = await asyncio.to_thread(postgres.up)
        yield postgres, url
    finally:
        await asyncio.to_thread(postgres.down)
        shutil.rmtree(root, ignore_errors=True)


async def _no_context(settings: Settings, labels: Any, metrics: Any) -> object:
    return object()


async def _idle(term: LeaderTerm) -> None:
    term.mark_running("idle")
    await asyncio.Event().wait()


async def test_api_503_coordinator_reelected_nothing_half_written(
    pg: tuple[Any, str], tmp_path: Path
) -> None:
    """Long because the outage is one story: before, during, after."""
    postgres, url = pg
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("".join(i.csv() + "\n" for i in IDENTITIES.values()))
    server = ServerThread(
        ApiConfig(database_url=url, token_file=str(tokens), state_dir=tmp_path / "state")
    )
    server.start()
    elector = LeaderElector(
        url, 7_000_011, "outage-a", retry_interval=0.5, check_interval=0.5, check_timeout=2.0
    )
    coordinator = Coordinator(
        Settings(database_url=url, coordinator_retry_interval=0.5, node_id="outage-a"),
        components=lambda: [LeaderComponent("idle", _idle)],
        context_factory=_no_context,
        elector=elector,
        metrics=object(),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(coordinator.run(stop))
    headers = {"Authorization": f"Bearer {IDENTITIES['alice'].token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        retry_after: list[str | None] = []

        async def status_of(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.request(method, server.url + path, json=body) as r:
                    retry_after.append(r.headers.get("Retry-After"))
                    return r.status, await r.json(content_type=None)
            return 0, None

        async def leader() -> bool:
            return bool(coordinator.health()["leader"])

        async def follower() -> bool:
            return not coordinator.health()["leader"]

        async def api_up() -> bool:
            return (await status_of("GET", LIST))[0] == 200

        try:
            await until(api_up, "API serving")
            await until(leader, "coordinator leader")
            assert (await status_of("POST", LIST, manifest("before")))[0] == 201

            await asyncio.to_thread(postgres.down)
            outage_end = time.monotonic() + OUTAGE
            answers: list[tuple[str, int, Any]] = []
            took: list[float] = []
            headers_seen: list[str | None] = []
            while time.monotonic() < outage_end:
                for method, body in (("GET", None), ("POST", manifest("during"))):
                    asked = time.monotonic()
                    code, doc = await status_of(method, LIST, body)
                    took.append(time.monotonic() - asked)
                    headers_seen.append(retry_after[-1] if retry_after else None)
                    answers.append((method, code, doc))
                await asyncio.sleep(0.5)
            await until(follower, "coordinator steps down")

            await asyncio.to_thread(postgres.up)
            await until(api_up, "API serving again")
            await until(leader, "coordinator leader again")
            code, listed = await status_of("GET", LIST)
            names = sorted(i["metadata"]["name"] for i in listed["items"])
            after = await status_of("POST", LIST, manifest("after"))
        finally:
            stop.set()
            await asyncio.wait_for(running, PATIENCE)
            await asyncio.to_thread(server.close)

    codes = {(m, c) for m, c, _ in answers}
    print(f"\nanswers during a {OUTAGE:g} s outage: {sorted(codes)}; terms: {coordinator.terms}")
    acquire = ApiConfig(database_url=url).database_acquire_timeout
    print(
        f"{len(took)} answers during the outage took {min(took):.3f} s to {max(took):.3f} s "
        f"(median {sorted(took)[len(took) // 2]:.3f} s) against a connection-acquisition "
        f"timeout of {acquire:g} s (psycopg_pool's default, used before the breaker: 30 s)"
    )
    assert codes == {("GET", 503), ("POST", 503)}
    for _, _, doc in answers:
        assert doc["kind"] == "Status"
        assert doc["code"] == 503
    assert len(headers_seen) == len(answers)
    assert all(h is not None and int(h) >= 1 for h in headers_seen), headers_seen
    assert names == ["before"], "a write refused during the outage was kept"
    assert after[0] == 201
    assert coordinator.terms == 2
