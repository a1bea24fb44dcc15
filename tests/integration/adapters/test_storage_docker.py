"""Docker + SeaweedFS only: exact round trip at size, faults, credentials, job hardening."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import docker
import pytest
from test_storage_contract import (
    JOB_IMAGE,
    RealHarness,
    expected_manifest,
    new_uid,
    sample_tree,
    visible,
)

from codehub.adapters import naming
from codehub.adapters.archive_format import MARKER_FILE
from codehub.adapters.config import DockerConfig, S3Config
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    ErrorCode,
    OperationTimeoutError,
    UnreachableError,
)
from codehub.adapters.s3_object_store import S3ObjectStore
from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider


@pytest.fixture(scope="module")
def s3_config(settings: Any, s3_bucket: str) -> S3Config:
    base: S3Config = settings.s3_config()
    return dataclasses.replace(base, bucket=s3_bucket)


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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Killer:
    """Kills a job container of the given kind ``delay`` seconds after it starts."""

    def __init__(self, client: docker.DockerClient, kind: str, delay: float) -> None:
        self.client, self.kind, self.delay = client, kind, delay
        self.killed: list[str] = []
        self.armed = True

    def __call__(self, kind: str, cid: str) -> None:
        if kind != self.kind or not self.armed:
            return
        self.armed = False

        def kill() -> None:
            try:
                self.client.api.kill(cid)
                self.killed.append(cid)
            except docker.errors.APIError:
                pass  # already finished: the test then sees no failure and says so

        threading.Timer(self.delay, kill).start()


BIG_TREE_SCRIPT = r"""
set -e
cd /data
mkdir -p .hidden-dir/empty src/deep/er/still emptydir many
echo secret > .dotfile
: > zero
dd if=/dev/urandom of=big.bin bs=1M count=200 2>/dev/null
ln -s big.bin big.link
ln -s ../../.dotfile src/deep/up.link
ln -s /home/coder/src abs.link
chmod 700 .hidden-dir
chmod 750 src/deep
i=0
while [ $i -lt 100 ]; do
  mkdir many/d$i
  j=0
  while [ $j -lt 100 ]; do echo "file $i $j" > many/d$i/f$j; j=$((j+1)); done
  i=$((i+1))
done
chmod 600 many/d7/f7
chmod 755 many/d8/f8
"""


@pytest.mark.slow
async def test_exact_round_trip_big_tree(real: RealHarness) -> None:
    p = real.provider
    src, dst = new_uid(), new_uid()
    await p.provision(src)
    await asyncio.to_thread(real.sh, src, BIG_TREE_SCRIPT)
    before = await real.manifest(src)
    assert sum(1 for k in before if k.startswith("many/")) == 10_100
    assert before["big.bin"][2] == 200 * 1024 * 1024
    assert before["zero"][:3] == ("file", 0o644, 0)
    assert before["emptydir"][0] == "dir"

    key = await p.archive(src, "big")
    # Restoring into a volume with other content leaves exactly the archive's.
    await p.provision(dst)
    await asyncio.to_thread(real.sh, dst, "mkdir -p /data/many/extra && echo x > /data/stray")
    await p.restore(dst, key)
    assert await real.manifest(dst) == before
    await p.delete_volume(src)
    await p.delete_volume(dst)


async def _source_with_data(real: RealHarness, mb: int) -> str:
    uid = new_uid()
    await real.provider.provision(uid)
    await asyncio.to_thread(
        real.sh,
        uid,
        f"cd /data && echo a > a && mkdir d && dd if=/dev/urandom of=d/r bs=1M count={mb} "
        "2>/dev/null",
    )
    return uid


@pytest.mark.slow
async def test_job_killed_mid_archive_then_rerun(real: RealHarness) -> None:
    p = real.provider
    src = await _source_with_data(real, 60)
    before = await real.manifest(src)
    killer = Killer(real.client, "archive", 1.0)
    p.on_job_started = killer
    with pytest.raises(ActionFailedError):
        await p.archive(src, "killed")
    assert killer.killed, "the job finished before it could be killed"
    key = naming.archive_key(src, "killed")
    # Whatever was uploaded, the crash-only HEAD check does not accept it.
    assert not (await real.store.exists(key) and await real.store.exists(naming.meta_key(key)))
    assert not await real.store.exists(naming.meta_key(key))

    p.on_job_started = None
    assert await p.archive(src, "killed") == key
    dst = new_uid()
    await p.restore(dst, key)
    assert await real.manifest(dst) == before
    for uid in (src, dst):
        await p.delete_volume(uid)


@pytest.mark.slow
async def test_job_killed_mid_restore_then_rerun(real: RealHarness) -> None:
    p = real.provider
    src = await _source_with_data(real, 120)
    before = await real.manifest(src)
    key = await p.archive(src, "ok")
    dst = new_uid()
    await p.provision(dst)
    await real.populate(dst, sample_tree())
    old = await real.manifest(dst)

    killer = Killer(real.client, "restore", 0.2)
    p.on_job_started = killer
    with pytest.raises(CodehubError):
        await p.restore(dst, key)
    assert killer.killed, "the job finished before it could be killed"
    after_kill = await real.manifest(dst)
    # A failed restore never looks complete: old content intact, or the marker says so.
    assert MARKER_FILE in after_kill or visible(after_kill) == old

    p.on_job_started = None
    await p.restore(dst, key)
    assert await real.manifest(dst) == before
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_job_timeout_kills_and_removes_the_job(
    real: RealHarness, docker_config: DockerConfig, s3_config: S3Config
) -> None:
    src = await _source_with_data(real, 40)
    provider = VolumeS3StorageProvider(
        dataclasses.replace(docker_config, job_timeout=0.3), s3_config
    )
    try:
        with pytest.raises(OperationTimeoutError) as info:
            await provider.archive(src, "timeout")
        assert not info.value.retryable
        key = naming.archive_key(src, "timeout")
        assert not await real.store.exists(naming.meta_key(key))
        leftovers = real.client.containers.list(
            all=True, filters={"label": f"{naming.LABEL_WORKSPACE_ID}={src}"}
        )
        assert leftovers == []
    finally:
        await provider.close()
    await real.provider.delete_volume(src)


async def test_archive_refuses_volume_with_unfinished_restore(real: RealHarness) -> None:
    uid = new_uid()
    await real.provider.provision(uid)
    await asyncio.to_thread(real.sh, uid, f": > /data/{MARKER_FILE}")
    with pytest.raises(ActionFailedError) as info:
        await real.provider.archive(uid, "op1")
    assert "unfinished_restore" in str(info.value)
    assert not await real.store.exists(naming.meta_key(naming.archive_key(uid, "op1")))
    await real.provider.delete_volume(uid)


async def test_job_containers_are_hardened(real: RealHarness) -> None:
    p = real.provider
    seen: dict[str, dict[str, Any]] = {}

    def inspect(kind: str, cid: str) -> None:
        seen[kind] = real.client.api.inspect_container(cid)

    p.on_job_started = inspect
    src, dst = new_uid(), new_uid()
    await p.provision(src)
    await real.populate(src, sample_tree())
    key = await p.archive(src, "hard")
    await p.restore(dst, key)
    assert {"archive", "restore"} <= set(seen)  # provisioning starts no container
    secret = real.access.config.secret_key
    for kind, info in seen.items():
        cfg, host = info["Config"], info["HostConfig"]
        assert cfg["User"] == "1000:1000", kind
        assert host["Privileged"] is False, kind
        assert host["NetworkMode"] == "none", kind
        assert "ALL" in (host["CapDrop"] or []), kind
        mounts = info["Mounts"]
        assert [m["Destination"] for m in mounts] == ["/data"], kind
        assert all("docker.sock" not in (m.get("Source") or "") for m in mounts), kind
        env = " ".join(cfg.get("Env") or [])
        assert secret not in env, kind
        assert secret not in " ".join(cfg.get("Cmd") or []), kind
        assert mounts[0]["RW"] is (kind != "archive"), kind
        assert info["Config"]["Labels"][naming.LABEL_ROLE] == "job"
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_s3_unreachable(
    real: RealHarness, docker_config: DockerConfig, s3_config: S3Config
) -> None:
    down = dataclasses.replace(s3_config, endpoint=f"http://127.0.0.1:{_closed_port()}")
    provider = VolumeS3StorageProvider(docker_config, down)
    store = S3ObjectStore(down)
    uid = new_uid()
    try:
        await real.provider.provision(uid)
        with pytest.raises(UnreachableError) as info:
            await provider.archive(uid, "op1")
        assert info.value.code is ErrorCode.S3_ACCESS_ERROR
        assert info.value.retryable
        with pytest.raises(UnreachableError):
            await provider.restore(uid, naming.archive_key(uid, "op1"))
        with pytest.raises(UnreachableError):
            await store.list("archives/")
        with pytest.raises(UnreachableError):
            await store.exists("archives/x")
        with pytest.raises(UnreachableError):
            await store.delete("archives/x")
    finally:
        await provider.close()
    await real.provider.delete_volume(uid)


def _error_texts(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts += [str(cur), repr(cur), repr(cur.args)]
        if isinstance(cur, CodehubError):
            parts += [cur.message, repr(cur.context)]
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


async def test_wrong_credentials_clear_error_without_secret(
    real: RealHarness,
    docker_config: DockerConfig,
    s3_config: S3Config,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_secret = "WRONG-secret-" + new_uid()
    bad = dataclasses.replace(s3_config, secret_key=wrong_secret)
    provider = VolumeS3StorageProvider(docker_config, bad)
    store = S3ObjectStore(bad)
    uid = new_uid()
    caplog.set_level(logging.DEBUG)
    errors: list[CodehubError] = []
    try:
        await real.provider.provision(uid)
        for call in (
            provider.archive(uid, "op1"),
            provider.restore(uid, naming.archive_key(uid, "op1")),
            store.list("archives/"),
            store.exists("archives/x"),
        ):
            with pytest.raises(CodehubError) as info:
                await call
            errors.append(info.value)
    finally:
        await provider.close()
    for err in errors:
        assert err.code is ErrorCode.S3_ACCESS_ERROR
        assert "access refused" in err.message
        text = _error_texts(err)
        assert wrong_secret not in text
        assert s3_config.secret_key not in text
    assert wrong_secret not in caplog.text
    assert s3_config.secret_key not in caplog.text
    assert wrong_secret not in repr(bad)
    await real.provider.delete_volume(uid)


async def test_manifest_helper_sees_what_it_should(real: RealHarness) -> None:
    """The round-trip tests rely on this helper; prove it distinguishes trees."""
    uid = new_uid()
    await real.provider.provision(uid)
    tree = sample_tree()
    await real.populate(uid, tree)
    assert visible(await real.manifest(uid)) == expected_manifest(tree)
    await asyncio.to_thread(real.sh, uid, "chmod 600 /data/bin/run")
    assert visible(await real.manifest(uid)) != expected_manifest(tree)
    await real.provider.delete_volume(uid)


class ProgressLog:
    """Records ``on_progress`` calls (they come from a worker thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        with self._lock:
            self.calls.append((done, total))

    def check(self) -> None:
        assert len(self.calls) >= 3, self.calls
        done = [d for d, _ in self.calls]
        assert done == sorted(done), self.calls
        assert all(t is None or d <= t for d, t in self.calls), self.calls
        assert self.calls[-1][0] == self.calls[-1][1], self.calls
        assert self.calls[-1][0] > 0


@pytest.mark.slow
async def test_progress_of_a_300mb_home(real: RealHarness) -> None:
    p = real.provider
    src = new_uid()
    await p.provision(src)
    await asyncio.to_thread(
        real.sh,
        src,
        "cd /data && dd if=/dev/urandom of=r bs=1M count=150 2>/dev/null && mkdir t && "
        "i=0; while [ $i -lt 150 ]; do seq 1 200000 | head -c 1048576 > t/f$i; i=$((i+1)); done",
    )
    before = await real.manifest(src)
    archived = ProgressLog()
    key = await p.archive(src, "progress", on_progress=archived)
    archived.check()
    final = archived.calls[-1][0]
    assert 300 << 20 <= final < 310 << 20  # uncompressed tar bytes
    # The pre-count arrived and was a fair estimate of the tar's size.
    estimates = {t for _, t in archived.calls[:-1] if t is not None}
    assert estimates
    assert all(abs(t - final) < final // 20 for t in estimates), (estimates, final)

    dst = new_uid()
    restored = ProgressLog()
    await p.restore(dst, key, on_progress=restored)
    restored.check()
    size = await asyncio.to_thread(real.access.head, key)
    assert size is not None
    assert restored.calls[0][1] == 2 * size  # compressed bytes, downloaded then extracted
    assert restored.calls[-1][0] <= 2 * size
    assert await real.manifest(dst) == before
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_archive_filters_members_restore_would_skip(real: RealHarness) -> None:
    """A FIFO and a stale staging directory send the archive down the filtering path."""
    p = real.provider
    uid = new_uid()
    await p.provision(uid)
    await asyncio.to_thread(
        real.sh,
        uid,
        "cd /data && echo keep > keep && mkfifo pipe && "
        "mkdir -p .codehub-restore.staging/d && echo junk > .codehub-restore.staging/d/j",
    )
    key = await p.archive(uid, "filtered")
    dst = new_uid()
    await p.restore(dst, key)
    after = await real.manifest(dst)
    assert set(after) == {"keep"}
    for u in (uid, dst):
        await p.delete_volume(u)


def _probe(real: RealHarness, uid: str, script: str) -> str:
    """Run ``script`` as uid 1000 with the volume at /probe *without* copy-up.

    The harness's ``sh`` mounts the job image's /data, whose first mount of an empty
    volume would hand the root to 1000:1000 itself; this mount copies nothing, so it
    shows what provisioning (or a restore) left.
    """
    out = real.client.containers.run(
        JOB_IMAGE,
        ["sh", "-c", script],
        user="1000:1000",
        mounts=[docker.types.Mount("/probe", naming.volume_name(uid), type="volume", no_copy=True)],
        labels=real.labels,
        network_mode="none",
        remove=True,
    )
    return bytes(out).decode()


async def test_provision_creates_the_volume_and_no_container(real: RealHarness) -> None:
    """Provisioning is one engine call: the first container that mounts the volume hands
    its root to 1000:1000 (adapters/home_ownership.py; tests below and in
    test_instance_home_ownership.py)."""
    p = real.provider
    uid = new_uid()
    before = p.engine_calls
    await p.provision(uid)
    assert p.engine_calls - before == 1
    volume = real.client.volumes.get(naming.volume_name(uid))
    assert volume.attrs["Labels"][naming.LABEL_WORKSPACE_ID] == uid
    assert (
        real.client.containers.list(
            all=True, filters={"label": f"{naming.LABEL_WORKSPACE_ID}={uid}"}
        )
        == []
    )
    await p.delete_volume(uid)


async def test_restore_into_fresh_volume_has_exact_modes_and_owner(real: RealHarness) -> None:
    """The restore job's first mount gives the fresh volume's root to 1000:1000."""
    p = real.provider
    src, dst = new_uid(), new_uid()
    await p.provision(src)
    await real.populate(src, sample_tree())
    key = await p.archive(src, "owner")
    await p.provision(dst)
    await p.restore(dst, key)
    assert visible(await real.manifest(dst)) == expected_manifest(sample_tree())
    owners = await asyncio.to_thread(
        _probe, real, dst, "find /probe -exec stat -c '%u:%g' {} + | sort -u; stat -c %a /probe"
    )
    assert owners.split() == ["1000:1000", "755"]
    for uid in (src, dst):
        await p.delete_volume(uid)
