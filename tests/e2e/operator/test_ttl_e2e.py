"""Idle TTLs on the real stack (docs/activity-and-ttl.md): a coordinator with
``TTL_MANAGER_INTERVAL=1``, workspaces with TTLs of a few seconds, the API server's
proxy and SSE stream.

- RUNNING -> STANDBY -> ARCHIVED by TTL, recorded as Events, the source annotation and
  metrics, with an ``idle_warning`` on the SSE stream before the standby;
- an open WebSocket through the proxy keeps a workspace up while another one is sent to
  standby, and closing it lets the TTL act (the close is counted even when the client's
  disconnect cancels the proxy's handler);
- a user's start after the TTL's standby is not overridden.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from operator_e2e import USER, CoordinatorProcess, History, Stack, sse_stream, status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SOURCE = "codehub.io/desired-state-source"
TTL_ENV = {"TTL_MANAGER_INTERVAL": "1"}


@pytest.fixture
def api_server_factory(api_server_factory: Callable[..., Any]) -> Callable[..., Any]:
    """The stack's server with a short idle warning window and activity interval."""

    def factory(extra_env: dict[str, str] | None = None, tag: str = "api") -> Any:
        env = {
            **(extra_env or {}),
            "CODEHUB_IDLE_WARNING_SECONDS": "2",
            "CODEHUB_ACTIVITY_INTERVAL": "0.5",
            "CODEHUB_REPLICA_TTL": "3",
        }
        return api_server_factory(extra_env=env, tag=tag)

    return factory


@pytest.fixture
def ttl_coordinator(stack: Stack) -> CoordinatorProcess:
    coord = stack.start_coordinator("ttl", env=TTL_ENV)
    stack.wait_leader(coord)
    return coord


def ssl_context(stack: Stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack.server.ca_file)


def bearer(stack: Stack, user: str = USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.server.tokens[user]}"}


async def create(stack: Stack, name: str, standby_ttl: int, archive_ttl: int) -> dict[str, Any]:
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": USER},
        "spec": {
            "desired_state": "RUNNING",
            "image_ref": stack.image,
            "standby_ttl_seconds": standby_ttl,
            "archive_ttl_seconds": archive_ttl,
        },
    }
    async with stack.api() as api:
        obj: dict[str, Any] = await api.create(USER, body)
        return obj


@contextlib.asynccontextmanager
async def sse_events(stack: Stack) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """Every SSE event of the user's namespace, collected in the background."""
    seen: list[tuple[str, dict[str, Any]]] = []
    async with sse_stream(stack, lambda event, data: seen.append((event, data))):
        yield seen


async def reasons(stack: Stack, name: str) -> list[str]:
    return [str(e.get("reason")) for e in await stack.events(name)]


def by_ttl(desired: str) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        notes = (obj.get("metadata") or {}).get("annotations") or {}
        return (obj.get("spec") or {}).get("desired_state") == desired and notes.get(
            SOURCE
        ) == "ttl"

    return check


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """``wanted`` is a subsequence of ``seen``."""
    rest = iter(seen)
    return all(any(x == w for x in rest) for w in wanted)


async def test_idle_workspace_goes_to_standby_then_archive_by_ttl(
    stack: Stack, ttl_coordinator: CoordinatorProcess, history: History
) -> None:
    async with sse_events(stack) as seen:
        await create(stack, "idle", standby_ttl=3, archive_ttl=3)
        # The levels last only a few seconds each: the watch's history sees them all.
        await stack.wait_for("idle", by_ttl("STANDBY"), "sent to standby by the TTL")
        await stack.wait_for("idle", by_ttl("PENDING"), "archived by the TTL")
        archived = await stack.wait_display("idle", "ARCHIVED")
        warnings = [d for e, d in seen if e == "idle_warning" and d["workspace"] == "idle"]
    assert in_order(history.observed("idle"), ["RUNNING", "STANDBY", "PENDING"])
    assert warnings, f"no idle_warning among {seen}"
    assert 0 <= warnings[0]["seconds_left"] <= 3
    assert status(archived)["archive_key"]
    assert {"IdleStandby", "IdleArchive"} <= set(await reasons(stack, "idle"))
    metrics = ttl_coordinator.metrics()
    assert 'codehub_ttl_actions_total{action="standby"} 1.0' in metrics
    assert 'codehub_ttl_actions_total{action="archive"} 1.0' in metrics
    wide = stack.cli("get", "ws", "idle", "-o", "wide").stdout.splitlines()
    assert "IDLE-ACTION" in wide[0]
    assert "CONNS" in wide[0]


async def test_open_websocket_keeps_it_up_and_a_users_start_wins(
    stack: Stack, ttl_coordinator: CoordinatorProcess, history: History
) -> None:
    await create(stack, "kept", standby_ttl=3, archive_ttl=0)
    await create(stack, "mine", standby_ttl=3, archive_ttl=0)
    await stack.wait_display("kept", "RUNNING")
    async with aiohttp.ClientSession() as session:
        url = f"{stack.server.url}/w/{USER}/kept/ws"
        async with session.ws_connect(url, headers=bearer(stack), ssl=ssl_context(stack)) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=30)).data == "hello"
            await stack.wait_for(
                "kept", lambda o: (status(o).get("open_connections") or 0) >= 1, "connected"
            )
            # "mine" has no connection: the TTL sends it to standby meanwhile.
            await stack.wait_for("mine", by_ttl("STANDBY"), "sent to standby by the TTL")
            await stack.wait_display("mine", "STANDBY")  # archive_ttl 0: it stays there
            kept = await stack.get("kept")
            assert kept["spec"]["desired_state"] == "RUNNING"
            assert "IdleStandby" not in await reasons(stack, "kept")
            # The user starts "mine" again: the old idle period no longer counts, so the
            # TTL lets it reach RUNNING (and may send it back only after a new 3 s).
            mark = len(history.states["mine"])
            await stack.set_desired("mine", "RUNNING")
            started = await stack.get("mine")
            assert started["metadata"]["annotations"][SOURCE] == "api"
            up = ("RUNNING", "NONE", "RUNNING", "RUNNING")
            await stack.wait_for(
                "mine", lambda _: up in history.states["mine"][mark:], "RUNNING again"
            )
            assert (await stack.get("kept"))["spec"]["desired_state"] == "RUNNING"
    # Connection closed: "kept" is idle from now on, and the TTL acts.
    await stack.wait_for(
        "kept", lambda o: (status(o).get("open_connections") or 0) == 0, "disconnected"
    )
    await stack.wait_for("kept", by_ttl("STANDBY"), "sent to standby after the close")
    assert "IdleStandby" in await reasons(stack, "kept")
