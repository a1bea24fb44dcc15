"""Fixtures for the operator e2e tests (helpers live in operator_e2e.py).

``stack``: an API server on a fresh database (so a fresh leader lock), scope labels for
everything Docker-side, the run's bucket; ``coordinator``: one coordinator subprocess that
is leader; ``history``: every state each workspace went through, recorded from a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_e2e import TEST_LABEL, USER, CoordinatorProcess, History, Stack


@pytest.fixture
def stack(
    service_env: dict[str, str],
    api_server_factory: Callable[..., Any],
    run_id: str,
    s3_bucket: str,
    test_images: dict[str, str],
    docker_client: Any,
    tmp_path: Path,
) -> Iterator[Stack]:
    """API server on a fresh database plus what coordinators need; coordinators on demand."""
    from urllib.parse import urlparse

    from minio import Minio

    server = api_server_factory(extra_env={"MAX_RUNNING_PER_USER": "10"}, tag="op")
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
    url = urlparse(service_env["CODEHUB_S3_ENDPOINT"])
    s3 = Minio(
        url.netloc,
        access_key=service_env["CODEHUB_S3_ACCESS_KEY"],
        secret_key=service_env["CODEHUB_S3_SECRET_KEY"],
        secure=url.scheme == "https",
    )
    st = Stack(
        server=server,
        settings_env=settings_env,
        scope_labels=labels,
        state=tmp_path,
        docker=docker_client,
        s3=s3,
        bucket=s3_bucket,
        image=test_images.get("workspace-test", "codehub/workspace-test:local"),
    )
    try:
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
