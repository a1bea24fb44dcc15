"""Without an engine, the Docker controller fails fast with Unreachable (retryable), never
with a raw docker/requests exception or one that leaks the connection details."""

from __future__ import annotations

import pytest

from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.errors import UnreachableError
from codehub.adapters.interfaces import InstanceSpec


@pytest.fixture(params=["unix:///nonexistent/codehub-test/docker.sock", "tcp://127.0.0.1:1"])
async def unreachable(request: pytest.FixtureRequest) -> DockerInstanceController:
    return DockerInstanceController(DockerConfig(docker_host=request.param, start_timeout=5))


async def test_every_method_reports_unreachable(unreachable: DockerInstanceController) -> None:
    calls = [
        unreachable.start(InstanceSpec(uid="u1", image_ref="img:1")),
        unreachable.delete("u1"),
        unreachable.is_running("u1"),
        unreachable.upstream("u1"),
        unreachable.list_instances(),
    ]
    try:
        for call in calls:
            with pytest.raises(UnreachableError) as info:
                await call
            assert info.value.retryable
            assert info.value.__cause__ is not None
    finally:
        await unreachable.close()
