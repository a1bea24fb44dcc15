"""Shared by the real-stack reconcile tests: the ``Real`` bundle (API client, operator
context over the real Docker and S3 adapters, the gate) and helpers that look at the
engine directly. The ``real`` fixture that builds it is in this folder's conftest.py."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.s3_object_store import S3ObjectStore
from codehub.crd_like.client.api import ApiClient
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.reconcile_view import Outcome

NS = "dora"
IMAGE = "codehub/workspace-test:local"

FILES = {
    "notes.txt": b"hello from the real stack\n",
    "project/src/main.py": b"print('codehub')\n" * 100,
    "project/data.bin": bytes(range(256)) * 64,
}


class Real:
    def __init__(
        self,
        client: ApiClient,
        ctx: OperatorContext,
        objects: S3ObjectStore,
        docker_client: docker.DockerClient,
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.gate = ReconcileGate(ctx)  # the one way to reconcile, as in the coordinator
        self.objects = objects
        self.docker = docker_client


async def settle(real: Real, name: str) -> Outcome:
    """Call reconcile as kopf would on retries (real time; the backoff is 1 s here)."""
    import asyncio

    for _ in range(30):
        outcome = await real.gate.reconcile_now(await real.client.get(NS, name))
        if outcome.result != "retry":
            return outcome
        await asyncio.sleep(outcome.delay)
    raise AssertionError(f"{name} never settled")


async def status(real: Real, name: str) -> dict[str, Any]:
    return dict((await real.client.get(NS, name)).get("status") or {})


def container_exec(real: Real, uid: str, script: str) -> bytes:
    container = real.docker.containers.get(naming.container_name(uid))
    code, output = container.exec_run(["sh", "-c", script], user="1000:1000")
    assert code == 0, output
    return bytes(output)


def write_files(real: Real, uid: str) -> None:
    """Copy FILES into the running container's home (owned by the workspace user)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("project", "project/src"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.uid = info.gid = 1000
            tar.addfile(info)
        for path, data in FILES.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.uid = info.gid = 1000
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    container = real.docker.containers.get(naming.container_name(uid))
    assert container.put_archive(naming.HOME_MOUNT, buf.getvalue())


def checksums(real: Real, uid: str) -> dict[str, str]:
    out = {}
    for path in FILES:
        line = container_exec(real, uid, f"sha256sum {naming.HOME_MOUNT}/{path}").decode()
        out[path] = line.split()[0]
    return out


def volume_exists(real: Real, uid: str) -> bool:
    try:
        real.docker.volumes.get(naming.volume_name(uid))
        return True
    except docker.errors.NotFound:
        return False


def container_exists(real: Real, uid: str) -> bool:
    try:
        real.docker.containers.get(naming.container_name(uid))
        return True
    except docker.errors.NotFound:
        return False


async def set_desired(real: Real, name: str, desired: str) -> None:
    await real.client.patch_merge(NS, name, {"spec": {"desired_state": desired}})
