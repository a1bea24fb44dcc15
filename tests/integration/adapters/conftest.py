"""Adapter fixtures shared by the instance and storage suites.

The Docker fixtures build on the session fixtures of tests/conftest.py (``settings``,
``scope_labels``, ``test_images``, ``docker_client``, ``docker_config``): everything they
create carries the run's scope labels, so the session teardown finds and removes it even
after a crash.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import docker
import docker.errors
import pytest

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.fake_instance import FakeInstanceController

WORKSPACE_IMAGE = "codehub/workspace-test:local"


@pytest.fixture
async def docker_instance(
    docker_config: DockerConfig, test_images: object
) -> AsyncIterator[DockerInstanceController]:
    """A DockerInstanceController on the run's engine; workspace containers removed after."""
    controller = DockerInstanceController(docker_config)
    try:
        yield controller
    finally:
        for uid in await controller.list_instances():
            await controller.delete(uid)
        await controller.close()


@pytest.fixture
async def fake_instance() -> AsyncIterator[FakeInstanceController]:
    """An in-memory controller whose running instances really answer HTTP on 127.0.0.1."""
    controller = FakeInstanceController(serve_http=True)
    try:
        yield controller
    finally:
        await controller.close()


@pytest.fixture
def docker_volume(
    docker_client: docker.DockerClient, scope_labels: dict[str, str]
) -> Iterator[Callable[[str], str]]:
    """Factory: create the home volume of a uid directly (labelled like the provider's)."""
    created: list[str] = []

    def create(uid: str) -> str:
        name = naming.volume_name(uid)
        labels = {**naming.workspace_labels(uid), **scope_labels}
        docker_client.volumes.create(name, labels=labels)
        created.append(name)
        return name

    yield create
    for name in created:
        # Containers still using it (fixture teardown order is not ours to choose) go first.
        for container in docker_client.containers.list(all=True, filters={"volume": name}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(name).remove(force=True)
