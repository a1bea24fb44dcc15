"""reconcile() on the real stack: the API server over a PostgresStore, the Docker engine
and SeaweedFS S3 through the real adapters. One full cycle, byte-exact:
create -> RUNNING -> STANDBY -> archived (PENDING + archive) -> RUNNING -> deleted."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from aiohttp.test_utils import TestServer

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.s3_object_store import S3ObjectStore
from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.config import ApiConfig
from codehub.crd_like.server.app import create_app
from codehub.crd_like.store.postgres import PostgresStore
from codehub.operator.context import OperatorContext
from codehub.operator.gate import ReconcileGate
from codehub.operator.metrics import Metrics
from codehub.operator.reconcile_view import Outcome
from codehub.operator.settings import Settings

NS = "dora"
TOKEN = "real-operator"
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


@pytest.fixture
async def real(
    tmp_path: Path,
    database_url: str,
    settings: Settings,
    scope_labels: dict[str, str],
    s3_bucket: str,
    test_images: dict[str, str],
    docker_client: docker.DockerClient,
) -> AsyncIterator[Real]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f'{TOKEN},codehub-operator,op,"codehub:operator,codehub:admin"\n')
    store = await PostgresStore.open(database_url)
    server = TestServer(
        create_app(ApiConfig(database_url=database_url, token_file=str(tokens)), store),
        host="127.0.0.1",
    )
    await server.start_server()
    client = ApiClient(str(server.make_url("")).rstrip("/"), TOKEN)
    base = settings.docker_config(scope_labels)
    docker_config = DockerConfig(
        docker_host=base.docker_host,
        job_image=base.job_image,
        job_timeout=base.job_timeout,
        start_timeout=60.0,
        health_path=base.health_path,
        scope_labels=dict(scope_labels),
    )
    s3_config = dataclasses.replace(settings.s3_config(), bucket=s3_bucket)
    instances = DockerInstanceController(docker_config)
    storage = VolumeS3StorageProvider(docker_config, s3_config)
    ctx = OperatorContext(
        settings=dataclasses.replace(
            settings, reconciler_retry_backoff=1.0, reconciler_interval=1.0
        ),
        api=client,
        instances=instances,
        storage=storage,
        metrics=Metrics(),
    )
    try:
        yield Real(client, ctx, S3ObjectStore(s3_config), docker_client)
    finally:
        await client.close()
        await server.close()
        await store.close()
        await instances.close()
        await storage.close()


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


async def test_full_cycle_on_docker_and_s3(real: Real) -> None:
    obj = await real.client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "cycle", "namespace": NS, "finalizers": ["codehub.io/finalizer"]},
            "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
        },
    )
    uid = obj["metadata"]["uid"]

    assert (await settle(real, "cycle")).detail == "converged"
    st = await status(real, "cycle")
    assert st["display"] == "RUNNING"
    assert await real.ctx.instances.is_running(uid)
    write_files(real, uid)
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}
    assert checksums(real, uid) == expected

    await set_desired(real, "cycle", "STANDBY")
    assert (await settle(real, "cycle")).detail == "converged"
    assert (await status(real, "cycle"))["display"] == "STANDBY"
    assert not container_exists(real, uid)
    assert volume_exists(real, uid)

    await set_desired(real, "cycle", "PENDING")
    assert (await settle(real, "cycle")).detail == "converged"
    st = await status(real, "cycle")
    assert st["display"] == "ARCHIVED"
    key = st["archive_key"]
    assert key.startswith(f"archives/{uid}/")
    assert await real.objects.exists(key)
    assert await real.objects.exists(naming.meta_key(key))
    assert not volume_exists(real, uid)

    await set_desired(real, "cycle", "RUNNING")
    assert (await settle(real, "cycle")).detail == "converged"
    st = await status(real, "cycle")
    assert st["display"] == "RUNNING"
    assert checksums(real, uid) == expected

    await real.client.delete(NS, "cycle")
    outcome = await settle(real, "cycle")
    assert outcome.deleted
    assert not container_exists(real, uid)
    assert not volume_exists(real, uid)
    assert await real.objects.exists(key)  # archives are left for the GC
