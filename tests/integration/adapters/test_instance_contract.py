"""One InstanceController contract, run against the fake and real Docker.

The contract: docs/state-machine.md and docs/storage.md.

Every behaviour the operator relies on is checked for both implementations: idempotent
start and delete, recreation of stopped or half-created containers, refusal without a
home volume, a reachable upstream on 127.0.0.1, clear image errors, and a listing whose
engine cost does not grow with the number of workspaces.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import docker
import pytest

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.errors import ActionFailedError, ErrorCode
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.interfaces import InstanceController, InstanceSpec

IMAGE = "codehub/workspace-test:local"
#: Pulling from 127.0.0.1:1 fails at once (connection refused): no registry is involved
#: and the fake recognises the "does-not-exist" marker.
MISSING_IMAGE = "127.0.0.1:1/codehub/does-not-exist:never"


class Harness(abc.ABC):
    """What a test needs to do to an implementation from outside the interface."""

    controller: InstanceController
    image = IMAGE

    @abc.abstractmethod
    async def create_volume(self, uid: str) -> None: ...

    @abc.abstractmethod
    async def container_id(self, uid: str) -> str | None: ...

    @abc.abstractmethod
    async def kill_behind_back(self, uid: str) -> None:
        """The container stops on its own (crash, OOM, ``docker kill``) and stays."""

    @abc.abstractmethod
    async def create_without_start(self, uid: str) -> None:
        """Leave what a crash between create and start leaves."""

    @abc.abstractmethod
    def engine_calls(self) -> int: ...

    @abc.abstractmethod
    async def other_image(self) -> str:
        """A second valid image reference for the same content."""

    def spec(self, uid: str, image: str | None = None) -> InstanceSpec:
        return InstanceSpec(
            uid=uid,
            image_ref=image or self.image,
            labels=naming.workspace_labels(uid, "contract-ns", f"ws-{uid[:8]}"),
        )


class FakeHarness(Harness):
    def __init__(self, controller: FakeInstanceController) -> None:
        self.controller = controller
        self.fake = controller

    async def create_volume(self, uid: str) -> None:
        self.fake.add_volume(uid)

    async def container_id(self, uid: str) -> str | None:
        return self.fake.container_id_sync(uid)

    async def kill_behind_back(self, uid: str) -> None:
        await self.fake.stop_behind_back(uid)

    async def create_without_start(self, uid: str) -> None:
        self.fake.create_without_start(uid, self.image)

    def engine_calls(self) -> int:
        return self.fake.engine_calls

    async def other_image(self) -> str:
        return "codehub/workspace-test:other"


class DockerHarness(Harness):
    def __init__(
        self,
        controller: DockerInstanceController,
        client: docker.DockerClient,
        config: DockerConfig,
        make_volume: Callable[[str], str],
        run_id: str,
    ) -> None:
        self.controller = controller
        self.docker = controller
        self.client = client
        self.config = config
        self.make_volume = make_volume
        self.run_id = run_id
        self.tags: list[str] = []

    async def create_volume(self, uid: str) -> None:
        await asyncio.to_thread(self.make_volume, uid)

    async def container_id(self, uid: str) -> str | None:
        return await self.docker.container_id(uid)

    async def kill_behind_back(self, uid: str) -> None:
        def kill() -> None:
            container = self.client.containers.get(naming.container_name(uid))
            container.kill()
            container.wait(timeout=30)

        await asyncio.to_thread(kill)

    async def create_without_start(self, uid: str) -> None:
        labels = {
            **naming.workspace_labels(uid),
            naming.LABEL_ROLE: "workspace",
            **self.config.scope_labels,
        }

        def create() -> None:
            self.client.api.create_container(
                self.image,
                name=naming.container_name(uid),
                labels=labels,
                ports=[naming.APP_PORT],
                host_config=self.client.api.create_host_config(
                    port_bindings={naming.APP_PORT: ("127.0.0.1",)},
                    mounts=[
                        docker.types.Mount(
                            naming.HOME_MOUNT, naming.volume_name(uid), type="volume"
                        )
                    ],
                ),
            )

        await asyncio.to_thread(create)

    def engine_calls(self) -> int:
        return self.docker.engine_calls

    async def other_image(self) -> str:
        tag = f"other-{self.run_id}"
        await asyncio.to_thread(self.client.images.get(IMAGE).tag, "codehub/workspace-test", tag)
        self.tags.append(f"codehub/workspace-test:{tag}")
        return self.tags[-1]

    async def cleanup(self) -> None:
        for uid in await self.docker.list_instances():
            await self.docker.delete(uid)
        for tag in self.tags:
            await asyncio.to_thread(self.client.images.remove, tag)


@pytest.fixture(params=["fake", "docker"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    # Only synchronous fixtures may be resolved lazily from an async fixture, so the
    # controllers are built here rather than taken from the conftest's async fixtures.
    if request.param == "fake":
        fake = FakeInstanceController(serve_http=True)
        try:
            yield FakeHarness(fake)
        finally:
            await fake.close()
        return
    request.getfixturevalue("test_images")
    config: DockerConfig = request.getfixturevalue("docker_config")
    docker_harness = DockerHarness(
        DockerInstanceController(config),
        request.getfixturevalue("docker_client"),
        config,
        request.getfixturevalue("docker_volume"),
        request.getfixturevalue("run_id"),
    )
    try:
        yield docker_harness
    finally:
        await docker_harness.cleanup()
        await docker_harness.docker.close()


def new_uid() -> str:
    return str(uuid.uuid4())


async def get_healthz(upstream: str) -> int:
    assert upstream.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.get(f"{upstream}/healthz") as response:
        return response.status


async def test_start_twice_is_a_noop(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.controller.start(harness.spec(uid))
    first = await harness.container_id(uid)
    assert first is not None
    upstream = await harness.controller.upstream(uid)

    await harness.controller.start(harness.spec(uid))

    assert await harness.container_id(uid) == first
    assert await harness.controller.upstream(uid) == upstream
    assert await harness.controller.is_running(uid)
    assert await harness.controller.is_running(uid)


async def test_upstream_answers_health_on_loopback(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    assert await harness.controller.upstream(uid) is None
    await harness.controller.start(harness.spec(uid))
    upstream = await harness.controller.upstream(uid)
    assert upstream is not None
    assert await get_healthz(upstream) == 200
    assert await harness.controller.upstream(uid) == upstream


async def test_upstream_passes_websockets(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.controller.start(harness.spec(uid))
    upstream = await harness.controller.upstream(uid)
    assert upstream is not None
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{upstream}/ws") as ws:
        await ws.send_str("hello codehub")
        reply = await asyncio.wait_for(ws.receive(), 30)
        assert reply.type == aiohttp.WSMsgType.TEXT
        assert reply.data.strip() == "hello codehub"


async def test_start_after_container_stopped_recreates(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.controller.start(harness.spec(uid))
    first = await harness.container_id(uid)
    await harness.kill_behind_back(uid)
    assert not await harness.controller.is_running(uid)
    assert await harness.controller.upstream(uid) is None
    listed = (await harness.controller.list_instances())[uid]
    assert listed.running is False
    assert listed.upstream is None

    await harness.controller.start(harness.spec(uid))

    assert await harness.container_id(uid) != first
    assert await harness.controller.is_running(uid)
    upstream = await harness.controller.upstream(uid)
    assert upstream is not None
    assert await get_healthz(upstream) == 200


async def test_start_after_crash_between_create_and_start_recovers(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.create_without_start(uid)
    assert not await harness.controller.is_running(uid)
    assert (await harness.controller.list_instances())[uid].running is False

    await harness.controller.start(harness.spec(uid))
    await harness.controller.start(harness.spec(uid))

    assert await harness.controller.is_running(uid)
    upstream = await harness.controller.upstream(uid)
    assert upstream is not None
    assert await get_healthz(upstream) == 200


async def test_start_with_another_image_recreates(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.controller.start(harness.spec(uid))
    first = await harness.container_id(uid)

    await harness.controller.start(harness.spec(uid, await harness.other_image()))

    assert await harness.container_id(uid) != first
    assert await harness.controller.is_running(uid)


async def test_start_without_volume_fails_and_creates_nothing(harness: Harness) -> None:
    uid = new_uid()
    for _ in range(2):
        with pytest.raises(ActionFailedError) as info:
            await harness.controller.start(harness.spec(uid))
        assert info.value.code is ErrorCode.VOLUME_NOT_FOUND
        assert info.value.retryable
    assert await harness.container_id(uid) is None
    assert uid not in await harness.controller.list_instances()


async def test_docker_start_without_volume_does_not_create_it(
    docker_instance: DockerInstanceController, docker_client: docker.DockerClient
) -> None:
    """Docker would silently create an empty volume for the mount: that must not happen."""
    uid = new_uid()
    with pytest.raises(ActionFailedError):
        await docker_instance.start(InstanceSpec(uid=uid, image_ref=IMAGE))
    volumes = await asyncio.to_thread(
        docker_client.volumes.list, filters={"name": naming.volume_name(uid)}
    )
    assert volumes == []


async def test_missing_image_is_a_clear_image_pull_error(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    for _ in range(2):
        with pytest.raises(ActionFailedError) as info:
            await harness.controller.start(harness.spec(uid, MISSING_IMAGE))
        assert info.value.code is ErrorCode.IMAGE_PULL_FAILED
        assert "does-not-exist" in str(info.value)
    assert not await harness.controller.is_running(uid)


async def test_delete_twice_and_missing(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.controller.start(harness.spec(uid))
    upstream = await harness.controller.upstream(uid)
    assert upstream is not None

    await harness.controller.delete(uid)
    await harness.controller.delete(uid)
    await harness.controller.delete(new_uid())

    assert await harness.container_id(uid) is None
    assert not await harness.controller.is_running(uid)
    assert await harness.controller.upstream(uid) is None
    assert uid not in await harness.controller.list_instances()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_healthz(upstream)


async def test_delete_of_stopped_and_half_created(harness: Harness) -> None:
    stopped, half = new_uid(), new_uid()
    for uid in (stopped, half):
        await harness.create_volume(uid)
    await harness.controller.start(harness.spec(stopped))
    await harness.kill_behind_back(stopped)
    await harness.create_without_start(half)

    for uid in (stopped, half):
        await harness.controller.delete(uid)
        assert await harness.container_id(uid) is None


async def test_restart_after_delete(harness: Harness) -> None:
    uid = new_uid()
    await harness.create_volume(uid)
    await harness.controller.start(harness.spec(uid))
    await harness.controller.delete(uid)
    await harness.controller.start(harness.spec(uid))
    upstream = await harness.controller.upstream(uid)
    assert upstream is not None
    assert await get_healthz(upstream) == 200


async def test_list_instances_reports_all_in_constant_engine_calls(harness: Harness) -> None:
    uids = [new_uid() for _ in range(5)]
    for uid in uids:
        await harness.create_volume(uid)

    async def listing() -> tuple[dict[str, Any], int]:
        before = harness.engine_calls()
        result = await harness.controller.list_instances()
        return result, harness.engine_calls() - before

    await harness.controller.start(harness.spec(uids[0]))
    one, calls_for_one = await listing()
    await asyncio.gather(*(harness.controller.start(harness.spec(uid)) for uid in uids[1:]))
    five, calls_for_five = await listing()

    assert uids[0] in one
    assert set(uids) <= set(five)
    assert calls_for_one == calls_for_five
    assert calls_for_five == 1
    for uid in uids:
        info = five[uid]
        assert info.uid == uid
        assert info.running
        assert info.upstream == await harness.controller.upstream(uid)


async def test_docker_paused_container_is_not_running_and_is_recreated(
    docker_instance: DockerInstanceController,
    docker_client: docker.DockerClient,
    docker_volume: Callable[[str], str],
) -> None:
    uid = new_uid()
    docker_volume(uid)
    spec = InstanceSpec(uid=uid, image_ref=IMAGE)
    await docker_instance.start(spec)
    first = await docker_instance.container_id(uid)
    await asyncio.to_thread(docker_client.api.pause, naming.container_name(uid))

    assert not await docker_instance.is_running(uid)
    assert (await docker_instance.list_instances())[uid].running is False
    await docker_instance.start(spec)

    assert await docker_instance.container_id(uid) != first
    upstream = await docker_instance.upstream(uid)
    assert upstream is not None
    assert await get_healthz(upstream) == 200
