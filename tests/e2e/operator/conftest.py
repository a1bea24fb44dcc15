"""Fixtures for the operator e2e tests (helpers live in operator_e2e.py).

``stack``: an API server on a fresh database (so a fresh leader lock), scope labels for
everything Docker-side, the run's bucket; ``coordinator``: one coordinator subprocess that
is leader; ``history``: every state each workspace went through, recorded from a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from operator_e2e import USER, CoordinatorProcess, History, Stack, open_stack


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, s3_client: Any, api_server_factory: Callable[..., Any]
) -> Iterator[Stack]:
    """API server on a fresh database plus what coordinators need; coordinators on demand."""
    server = api_server_factory(extra_env={"MAX_RUNNING_PER_USER": "10"}, tag="op")
    with open_stack(request, server, s3_client) as st:
        yield st


@pytest.fixture
def coordinator(stack: Stack) -> CoordinatorProcess:
    """One coordinator (the leader) running against ``stack``."""
    coord = stack.start_coordinator("solo")
    stack.wait_leader(coord)
    return coord


@pytest.fixture
async def history(stack: Stack) -> AsyncIterator[History]:
    """Records every state of every workspace of the test user, from a watch."""
    rec = History()
    async with stack.api("admin") as api:
        listing = await api.list(USER)
    for obj in listing.get("items", []):
        rec.record(obj)
    start_rv = str(listing["metadata"]["resourceVersion"])
    if start_rv in ("", "0"):
        # An empty database lists at "0", which a watch takes as "from now": a race with
        # the test's first writes. An anchor write elsewhere gives a real revision.
        async with stack.api("bob") as api:
            anchor = await api.create(
                "bob",
                {
                    "apiVersion": "codehub.io/v1alpha1",
                    "kind": "Workspace",
                    "metadata": {"name": "history-anchor", "namespace": "bob"},
                    "spec": {"desired_state": "PENDING"},
                },
            )
        start_rv = str(anchor["metadata"]["resourceVersion"])

    async def follow() -> None:
        rv = start_rv
        while True:
            try:
                async with stack.api("admin") as api:
                    watch = api.watch(USER, resource_version=rv)
                    async for _type, obj in watch:
                        if "metadata" in obj and obj.get("kind", "Workspace") == "Workspace":
                            rec.record(obj)
                            rv = str(obj["metadata"].get("resourceVersion") or rv)
                    rv = watch.resource_version or rv
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)

    task = asyncio.create_task(follow())
    try:
        yield rec
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
