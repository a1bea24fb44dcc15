"""Progress of a long archive on the real stack (docs/operations.md#progress): a workspace
whose home holds 300 MB of incompressible data is archived; while the operation runs
``status.progress`` appears on the SSE stream (``state_changed.progress``, what the
loading page reads) with growing ``bytes_done``, and it is gone once the workspace is
ARCHIVED. Restoring it clears any progress too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from operator_e2e import CoordinatorProcess, Stack, sse_stream, status, uid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOME_BYTES = 300 * 1000 * 1000


@pytest.fixture
def coordinator(stack: Stack) -> CoordinatorProcess:
    coord = stack.start_coordinator("progress")
    stack.wait_leader(coord)
    return coord


@contextlib.asynccontextmanager
async def states(stack: Stack, name: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every ``state_changed`` payload of ``name`` from the SSE stream, in order."""
    seen: list[dict[str, Any]] = []

    def on_event(event: str, data: dict[str, Any]) -> None:
        if event == "state_changed":
            seen.append(data)

    async with sse_stream(stack, on_event, name):
        yield seen


async def test_progress_appears_during_a_long_archive_and_is_cleared_after(
    stack: Stack, coordinator: CoordinatorProcess
) -> None:
    obj = await stack.create("big", "RUNNING")
    await stack.wait_display("big", "RUNNING")
    stack.exec(uid_of(obj), f"head -c {HOME_BYTES} /dev/urandom > big.bin && sync")
    async with states(stack, "big") as seen:
        await stack.set_desired("big", "PENDING")
        archived = await stack.wait_display("big", "ARCHIVED")
        assert status(archived).get("progress") is None
        reports = [s["progress"] for s in seen if s.get("progress")]
        assert reports, f"no progress on the SSE stream during the archive: {seen}"
        assert {r["operation"] for r in reports} == {"ARCHIVING"}
        done = [r["bytes_done"] for r in reports]
        assert done == sorted(done)
        assert all(r["bytes_total"] is None or r["bytes_total"] >= HOME_BYTES // 2 for r in reports)
        assert seen[-1]["display"] == "ARCHIVED"
        assert seen[-1]["progress"] is None

        await stack.set_desired("big", "RUNNING")
        running = await stack.wait_display("big", "RUNNING")
        assert status(running).get("progress") is None
        restores = [
            s["progress"]
            for s in seen
            if s.get("progress", {}) and s["progress"]["operation"] == "RESTORING"
        ]
        print(f"progress reports: {len(reports)} while archiving, {len(restores)} while restoring")
    described = stack.cli("describe", "ws", "big").stdout
    assert "progress:" not in described
