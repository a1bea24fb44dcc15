"""The orphan sweeper on a real Docker engine and a real API (docs/coordinator.md).

Engine objects of a workspace that no longer exists go after the delay; a labelled object
whose workspace exists, an unlabelled one with a workspace-like name, and another stack's
labelled one are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import pytest
from prometheus_client import CollectorRegistry

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.engine_objects import DockerLabelledObjects
from codehub.operator.clock import FakeClock
from codehub.operator.orphan_sweeper import OrphanSweeper

IMAGE = "codehub/storage-job:local"
DELAY = 60.0


class Engine:
    """Creates labelled objects directly on the engine and removes leftovers at the end."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.volumes: list[str] = []
        self.containers: list[str] = []

    def volume(self, name: str, labels: dict[str, str]) -> str:
        self.client.volumes.create(name, labels=labels)
        self.volumes.append(name)
        return name

    def container(self, name: str, labels: dict[str, str], volume: str | None = None) -> str:
        binds = {volume: {"bind": "/data", "mode": "rw"}} if volume else None
        created = self.client.api.create_container(
            IMAGE,
            command=["sleep", "600"],
            name=name,
            labels=labels,
            host_config=self.client.api.create_host_config(binds=binds),
        )
        self.containers.append(name)
        return str(created["Id"])

    def exists(self, kind: str, name: str) -> bool:
        try:
            if kind == "volume":
                self.client.api.inspect_volume(name)
            else:
                self.client.api.inspect_container(name)
            return True
        except docker.errors.NotFound:
            return False

    def cleanup(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(name, force=True)
        for name in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_volume(name)


@pytest.fixture
def engine(docker_client: docker.DockerClient, test_images: object) -> Iterator[Engine]:
    made = Engine(docker_client)
    try:
        yield made
    finally:
        made.cleanup()


def labels(uid: str, role: str, scope: dict[str, str]) -> dict[str, str]:
    return {**naming.workspace_labels(uid), naming.LABEL_ROLE: role, **scope}


async def test_orphans_go_after_the_delay_and_nothing_else(
    make_api: Any, engine: Engine, docker_config: DockerConfig, scope_labels: dict[str, str]
) -> None:
    """Long because the scene (six kinds of engine objects) is the point of the test."""
    api = await make_api()
    created = await api.client("alice").create(
        "alice",
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "alive"},
            "spec": {"desired_state": "STANDBY"},
        },
    )
    live = str(created["metadata"]["uid"])
    # A scope of this test's own: the session's other objects (other tests' containers and
    # volumes, whose workspaces live in other APIs) must be neither counted nor removed.
    scope_labels = {**scope_labels, "codehub.io/test-case": uuid.uuid4().hex[:10]}
    docker_config = dataclasses.replace(docker_config, scope_labels=scope_labels)
    gone = str(uuid.uuid4())
    stranger = str(uuid.uuid4())
    other_run = {key: "another-run" for key in scope_labels}

    orphan_volume = engine.volume(naming.volume_name(gone), labels(gone, "workspace", scope_labels))
    orphan_container = engine.container(
        naming.container_name(gone), labels(gone, "workspace", scope_labels), orphan_volume
    )
    orphan_job = engine.container(f"ws-{gone}-job", labels(gone, "job", scope_labels))
    live_volume = engine.volume(naming.volume_name(live), labels(live, "workspace", scope_labels))
    unlabelled = engine.volume(naming.volume_name(stranger), {})
    foreign = engine.container(
        naming.container_name(stranger), labels(stranger, "workspace", other_run)
    )

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    registry = CollectorRegistry()
    sweeper = OrphanSweeper(
        api=api.client("operator"),
        engine=DockerLabelledObjects(docker_config),
        delay=DELAY,
        registry=registry,
        clock=clock,
    )
    try:
        first = await sweeper.pass_once()
        assert first.waiting == 3
        assert first.live == 1
        clock.advance(DELAY / 2)
        assert not (await sweeper.pass_once()).removed
        assert engine.exists("volume", orphan_volume)
        clock.advance(DELAY)
        report = await sweeper.pass_once()
    finally:
        await sweeper.engine.close()

    assert report.removed == {"job": 1, "container": 1, "volume": 1}
    assert not engine.exists("volume", orphan_volume)
    assert not engine.exists("container", orphan_container)
    assert not engine.exists("container", orphan_job)
    assert engine.exists("volume", live_volume)
    assert engine.exists("volume", unlabelled)
    assert engine.exists("container", foreign)
    for kind in ("job", "container", "volume"):
        sample = registry.get_sample_value("codehub_orphan_resources_removed_total", {"kind": kind})
        assert sample == 1
