"""A workspace cannot raise its privileges or exhaust the host's processes
(docs/security.md), asserted from ``docker inspect`` and from inside the container."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import docker
import pytest

from codehub.adapters import naming
from codehub.adapters.docker_instance import PIDS_LIMIT, DockerInstanceController
from codehub.adapters.interfaces import InstanceSpec

IMAGE = "codehub/workspace-test:local"


@pytest.fixture
async def started(
    docker_instance: DockerInstanceController,
    docker_client: docker.DockerClient,
    docker_volume: Callable[[str], str],
) -> str:
    uid = str(uuid.uuid4())
    docker_volume(uid)
    await docker_instance.start(
        InstanceSpec(uid=uid, image_ref=IMAGE, labels=naming.workspace_labels(uid, "alice", "p"))
    )
    return uid


async def test_no_new_privileges_and_a_pids_limit(
    started: str, docker_client: docker.DockerClient
) -> None:
    attrs = await asyncio.to_thread(
        docker_client.api.inspect_container, naming.container_name(started)
    )
    host = attrs["HostConfig"]
    assert "no-new-privileges" in (host.get("SecurityOpt") or [])
    assert host["PidsLimit"] == PIDS_LIMIT
    container = docker_client.containers.get(attrs["Id"])
    status = container.exec_run(["/bin/busybox", "cat", "/proc/self/status"])
    assert status.exit_code == 0
    fields = dict(line.split(":", 1) for line in status.output.decode().splitlines() if ":" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["CapEff"].strip() == "0000000000000000"
    limit = container.exec_run(["/bin/busybox", "cat", "/sys/fs/cgroup/pids.max"])
    if limit.exit_code == 0:  # cgroup v2; v1 keeps it elsewhere
        assert limit.output.decode().strip() == str(PIDS_LIMIT)
