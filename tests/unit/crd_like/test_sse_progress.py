"""SSE ``state_changed`` carries status.progress (docs/events.md), so the loading page can
show how far an archive or restore has got; a new progress is a new event, and its
removal sends ``progress: null``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientResponse
from support.api import ApiFactory, Identity
from support.sse import next_sse_event

NS = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
ALICE = {"Authorization": "Bearer a"}
OP = {"Authorization": "Bearer o", "Content-Type": "application/merge-patch+json"}
USERS = [Identity("a", "alice", "1"), Identity("o", "op", "3", ("codehub:operator",))]


async def _state(stream: ClientResponse) -> dict[str, Any]:
    """The next state_changed payload (heartbeats skipped)."""
    return (await next_sse_event(stream, "state_changed"))[1]


def _progress(done: int) -> dict[str, Any]:
    return {
        "operation": "RESTORING",
        "bytes_done": done,
        "bytes_total": 1000,
        "bytes_per_second": 50.0,
        "updated_at": "2026-01-01T00:00:00Z",
    }


async def test_state_changed_follows_progress(make_api: ApiFactory) -> None:
    api = await make_api(identities=USERS, sse_heartbeat_interval=0.5)
    client = api.http
    r = await client.post(
        NS, json={"metadata": {"name": "p"}, "spec": {"desired_state": "PENDING"}}, headers=ALICE
    )
    assert r.status == 201, await r.text()
    stream = await client.get("/api/v1/namespaces/alice/workspaces/p/events", headers=ALICE)
    assert (await _state(stream))["progress"] is None

    async def write(progress: dict[str, Any] | None) -> None:
        body = {"status": {"operation": "RESTORING", "progress": progress}}
        resp = await client.patch(NS + "/p/status", data=json.dumps(body), headers=OP)
        assert resp.status == 200, await resp.text()

    await write(_progress(250))
    assert (await _state(stream))["progress"] == _progress(250)
    await write(_progress(600))
    assert (await _state(stream))["progress"]["bytes_done"] == 600
    await write(None)
    cleared = await _state(stream)
    assert cleared["progress"] is None
    assert cleared["operation"] == "RESTORING"
    stream.close()
