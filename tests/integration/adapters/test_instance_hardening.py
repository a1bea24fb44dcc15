"""Workspace containers are hardened as docs/storage.md requires, asserted from ``docker inspect``.

A workspace runs arbitrary user code, so: no root, no privileges, no way to reach the
engine, reachable only through 127.0.0.1, never restarted behind the operator's back, and
held to the limits the user asked for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import docker
import pytest

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.interfaces import InstanceSpec, Resources

IMAGE = "codehub/workspace-test:local"


async def start_and_inspect(
    controller: DockerInstanceController,
    client: docker.DockerClient,
    make_volume: Callable[[str], str],
    resources: Resources,
) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    make_volume(uid)
    spec = InstanceSpec(
        uid=uid,
        image_ref=IMAGE,
        resources=resources,
        labels=naming.workspace_labels(uid, "alice", "dev"),
    )
    await controller.start(spec)
    attrs: dict[str, Any] = await asyncio.to_thread(
        client.api.inspect_container, naming.container_name(uid)
    )
    return attrs


@pytest.fixture
async def limited(
    docker_instance: DockerInstanceController,
    docker_client: docker.DockerClient,
    docker_volume: Callable[[str], str],
) -> dict[str, Any]:
    return await start_and_inspect(
        docker_instance, docker_client, docker_volume, Resources(cpu="500m", memory="256Mi")
    )


def test_runs_as_user_1000(limited: dict[str, Any], docker_client: docker.DockerClient) -> None:
    assert limited["Config"]["User"] == "1000:1000"
    container = docker_client.containers.get(limited["Id"])
    result = container.exec_run(["/bin/busybox", "id", "-u"])
    assert result.exit_code == 0
    assert result.output.decode().strip() == "1000"
    result = container.exec_run(["/bin/busybox", "id", "-g"])
    assert result.output.decode().strip() == "1000"


def test_not_privileged_and_capabilities_dropped(limited: dict[str, Any]) -> None:
    host = limited["HostConfig"]
    assert host["Privileged"] is False
    assert not host.get("CapAdd")
    assert "NET_RAW" in (host.get("CapDrop") or [])
    assert not host.get("Devices")
    assert host.get("PidMode", "") in ("", "private")
    assert host.get("NetworkMode") not in ("host",)


def test_only_the_home_volume_is_mounted(limited: dict[str, Any]) -> None:
    uid = limited["Config"]["Labels"][naming.LABEL_WORKSPACE_ID]
    mounts = limited["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [
        ("volume", naming.volume_name(uid), naming.HOME_MOUNT)
    ]
    assert not limited["HostConfig"].get("Binds")
    for mount in mounts:
        assert "docker.sock" not in (mount.get("Source") or "")
        assert not (mount.get("Source") or "").endswith(".sock")
    assert "HOME=/home/coder" in limited["Config"]["Env"]


def test_port_published_on_loopback_only(limited: dict[str, Any]) -> None:
    bindings = limited["HostConfig"]["PortBindings"]
    assert set(bindings) == {f"{naming.APP_PORT}/tcp"}
    assert [b["HostIp"] for b in bindings[f"{naming.APP_PORT}/tcp"]] == ["127.0.0.1"]
    published = limited["NetworkSettings"]["Ports"][f"{naming.APP_PORT}/tcp"]
    assert published
    assert {b["HostIp"] for b in published} == {"127.0.0.1"}
    assert all(int(b["HostPort"]) > 0 for b in published)
    assert not limited["HostConfig"].get("PublishAllPorts")


def test_never_restarted_by_the_engine(limited: dict[str, Any]) -> None:
    assert limited["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert limited["HostConfig"].get("AutoRemove") is False


def test_limits_applied(limited: dict[str, Any]) -> None:
    assert limited["HostConfig"]["NanoCpus"] == 500_000_000
    assert limited["HostConfig"]["Memory"] == 256 * 2**20
    assert limited["HostConfig"]["MemorySwap"] == 256 * 2**20


def test_labels_identify_and_scope(limited: dict[str, Any], docker_config: DockerConfig) -> None:
    labels = limited["Config"]["Labels"]
    uid = labels[naming.LABEL_WORKSPACE_ID]
    assert limited["Name"] == f"/{naming.container_name(uid)}"
    assert labels[naming.LABEL_NAMESPACE] == "alice"
    assert labels[naming.LABEL_NAME] == "dev"
    assert labels[naming.LABEL_ROLE] == "workspace"
    for key, value in docker_config.scope_labels.items():
        assert labels[key] == value


async def test_no_limits_when_none_given(
    docker_instance: DockerInstanceController,
    docker_client: docker.DockerClient,
    docker_volume: Callable[[str], str],
) -> None:
    attrs = await start_and_inspect(docker_instance, docker_client, docker_volume, Resources())
    assert attrs["HostConfig"]["NanoCpus"] == 0
    assert attrs["HostConfig"]["Memory"] == 0
