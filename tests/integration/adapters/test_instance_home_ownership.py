"""The workspace user can write its home on a fresh volume, whatever the image's /home/coder.

Provisioning only creates the volume; the first container that mounts it hands its root
to 1000:1000 (adapters/home_ownership.py). These tests start workspaces on fresh volumes
made like the provider's (no job ever ran on them) and look from inside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator

import docker
import docker.errors
import pytest

from codehub.adapters import naming
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.interfaces import InstanceSpec

IMAGE = "codehub/workspace-test:local"
#: Every workspace these tests started (the engine is shared with other test runs).
STARTED: set[str] = set()


@pytest.fixture
def derived_image(
    docker_client: docker.DockerClient, scope_labels: dict[str, str], test_images: object
) -> Iterator[Callable[[str], str]]:
    """Factory: the workspace-test image with ``script`` run on it as root (then USER 1000)."""
    made: list[str] = []

    def make(script: str) -> str:
        container = docker_client.containers.run(
            IMAGE, ["sh", "-c", script], user="0", labels=scope_labels, detach=True
        )
        try:
            container.wait()
            tag = f"codehub/test-home-{uuid.uuid4().hex[:8]}:local"
            repo, _, version = tag.rpartition(":")
            cmd = docker_client.images.get(IMAGE).attrs["Config"]["Cmd"]
            changes = ["USER 1000:1000", f"CMD {json.dumps(cmd)}"]
            container.commit(repo, version, changes=changes)
        finally:
            container.remove(force=True)
        made.append(tag)
        return tag

    yield make
    for tag in made:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


def _exec(client: docker.DockerClient, uid: str, script: str) -> str:
    container = client.containers.get(naming.container_name(uid))
    result = container.exec_run(["sh", "-c", script], user="1000:1000")
    return bytes(result.output).decode()


async def _home_after_start(
    controller: DockerInstanceController,
    client: docker.DockerClient,
    make_volume: Callable[[str], str],
    image: str,
) -> list[str]:
    uid = str(uuid.uuid4())
    STARTED.add(uid)
    make_volume(uid)
    await controller.start(InstanceSpec(uid=uid, image_ref=image))
    out = await asyncio.to_thread(
        _exec, client, uid, "stat -c %u:%g /home/coder; touch /home/coder/w && echo ok; ls -A ~"
    )
    await controller.delete(uid)
    return out.split()


def _job_creates(
    client: docker.DockerClient, uid_of: set[str], since: float, until: float
) -> list[str]:
    """The kinds of job containers created for the workspaces ``uid_of`` in a time span."""
    events = client.events(
        since=since,
        until=until,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"{naming.LABEL_ROLE}=job"},
    )
    events = [
        e for e in events if e["Actor"]["Attributes"].get(naming.LABEL_WORKSPACE_ID) in uid_of
    ]
    return [e["Actor"]["Attributes"].get("codehub.io/job", "") for e in events]


async def test_image_with_owned_home_needs_no_job(
    docker_instance: DockerInstanceController,
    docker_client: docker.DockerClient,
    docker_volume: Callable[[str], str],
) -> None:
    t0 = time.time()
    home = await _home_after_start(docker_instance, docker_client, docker_volume, IMAGE)
    assert home == ["1000:1000", "ok", "w"]
    t1 = time.time()
    # A second workspace of the same image: the image is known, no container but its own.
    home = await _home_after_start(docker_instance, docker_client, docker_volume, IMAGE)
    assert home == ["1000:1000", "ok", "w"]
    t2 = time.time() + 1
    assert await asyncio.to_thread(_job_creates, docker_client, STARTED, t0 - 1, t1) == [
        "home-check"
    ]
    assert await asyncio.to_thread(_job_creates, docker_client, STARTED, t1, t2) == []
    image_id = docker_client.images.get(IMAGE).id
    assert docker_instance.home._owns_home[image_id] is True


@pytest.mark.parametrize(
    ("what", "script"),
    [
        ("no /home/coder", "rm -rf /home/coder"),
        (
            "/home/coder owned by root, with a file",
            "chown 0:0 /home/coder && echo x > /home/coder/root-file",
        ),
    ],
)
async def test_image_without_owned_home_gets_an_owned_home(
    docker_instance: DockerInstanceController,
    docker_client: docker.DockerClient,
    docker_volume: Callable[[str], str],
    derived_image: Callable[[str], str],
    what: str,
    script: str,
) -> None:
    image = derived_image(script)
    # The home's root is the workspace user's, and nothing of the image's copy is in it.
    assert await _home_after_start(docker_instance, docker_client, docker_volume, image) == [
        "1000:1000",
        "ok",
        "w",
    ], what
    image_id = docker_client.images.get(image).id
    assert docker_instance.home._owns_home[image_id] is False
