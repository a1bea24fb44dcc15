"""Disk full during a restore: the home volume is a 2 MiB tmpfs and the archive holds
6 MiB of incompressible data. The restore fails with DISK_FULL, and the volume does not
look restored: none of the archive's files is in place, only the staging folder (which
the next restore removes first) may hold a part of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import docker
import pytest
from test_storage_contract import RealHarness, new_uid

from codehub.adapters import naming
from codehub.adapters.archive_format import MARKER_FILE, STAGING_DIR
from codehub.adapters.config import DockerConfig, S3Config
from codehub.adapters.errors import CodehubError, ErrorCode


@pytest.fixture
def s3_config(settings: Any, s3_bucket: str) -> S3Config:
    base: S3Config = settings.s3_config()
    return S3Config(
        endpoint=base.endpoint,
        bucket=s3_bucket,
        access_key=base.access_key,
        secret_key=base.secret_key,
        region=base.region,
    )


@pytest.fixture
async def real(
    docker_config: DockerConfig,
    s3_config: S3Config,
    docker_client: docker.DockerClient,
    scope_labels: dict[str, str],
    test_images: object,
) -> AsyncIterator[RealHarness]:
    h = RealHarness(docker_config, s3_config, docker_client, scope_labels)
    try:
        yield h
    finally:
        await h.close()


async def test_restore_into_a_full_volume_is_disk_full_and_not_complete(
    real: RealHarness, scope_labels: dict[str, str]
) -> None:
    p = real.provider
    uid = new_uid()
    await p.provision(uid)
    await asyncio.to_thread(
        real.sh,
        uid,
        "dd if=/dev/urandom of=/data/big.bin bs=1M count=6 2>/dev/null && echo x > /data/small.txt",
    )
    key = await p.archive(uid, "full")
    await p.delete_volume(uid)

    labels = {**naming.workspace_labels(uid), naming.LABEL_ROLE: "workspace", **scope_labels}
    await asyncio.to_thread(
        real.client.api.create_volume,
        naming.volume_name(uid),
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=2m,uid=1000,gid=1000"},
        labels=labels,
    )
    try:
        with pytest.raises(CodehubError) as failure:
            await p.restore(uid, key)
        assert failure.value.code == ErrorCode.DISK_FULL
        top = await asyncio.to_thread(real.sh, uid, "ls -A /data", user="0:0")
        entries = set(top.split())
        print(f"\nDISK_FULL: {failure.value}; volume top level: {sorted(entries)}")
        assert "big.bin" not in entries
        assert "small.txt" not in entries
        assert entries <= {STAGING_DIR, MARKER_FILE}
    finally:
        await p.delete_volume(uid)
