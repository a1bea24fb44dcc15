"""One StorageProvider + ObjectStore contract, run against the fakes and Docker + SeaweedFS.

Every method is called twice, and again after a simulated crash. The harness classes
(also used by test_storage_docker.py) hide only how a test writes into a volume and reads
its manifest: through a helper container for the real provider, directly for the fake.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shlex
import tarfile
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest

from codehub.adapters import naming
from codehub.adapters.archive_format import RESERVED_PREFIX, STAGING_DIR
from codehub.adapters.config import DockerConfig, S3Config
from codehub.adapters.errors import ActionFailedError, DataLostError, ErrorCode
from codehub.adapters.fake_object_store import MemoryObjectStore
from codehub.adapters.fake_storage import FakeEntry, FakeStorageProvider
from codehub.adapters.interfaces import ObjectStore, StorageProvider
from codehub.adapters.s3_object_store import S3Access, S3ObjectStore
from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider

JOB_IMAGE = "codehub/storage-job:local"
Manifest = dict[str, tuple[str, int, int, str, str]]


def new_uid() -> str:
    return "s" + uuid.uuid4().hex[:10]


# ---------------------------------------------------------------------- harnesses


class FakeHarness:
    kind = "fake"

    def __init__(self) -> None:
        self.objects = MemoryObjectStore()
        self.provider = FakeStorageProvider(self.objects)
        self.store: ObjectStore = self.objects

    @property
    def engine_calls(self) -> int:
        return self.provider.engine_calls

    async def populate(self, uid: str, entries: Mapping[str, FakeEntry]) -> None:
        self.provider.write_entries(uid, entries)

    async def manifest(self, uid: str) -> Manifest:
        return self.provider.manifest(uid)

    async def put_object(self, key: str, data: bytes) -> None:
        self.objects.put(key, data)

    async def get_object(self, key: str) -> bytes | None:
        return self.objects.get(key)

    async def make_stale_staging(self, uid: str) -> None:
        self.provider.write_entries(
            uid,
            {
                STAGING_DIR: FakeEntry("dir", 0o755),
                f"{STAGING_DIR}/junk": FakeEntry("file", 0o644, b"junk"),
            },
        )

    async def crash_archive_before_meta(self, uid: str, op_id: str) -> None:
        self.provider.crash_before_meta = 1
        with pytest.raises(ActionFailedError):
            await self.provider.archive(uid, op_id)

    async def use_volume(self, uid: str) -> None:
        self.provider.in_use.add(uid)

    async def release_volume(self, uid: str) -> None:
        self.provider.in_use.discard(uid)

    async def close(self) -> None:
        return None


class RealHarness:
    kind = "real"

    def __init__(
        self,
        docker_config: DockerConfig,
        s3_config: S3Config,
        client: docker.DockerClient,
        scope_labels: Mapping[str, str],
    ) -> None:
        self.provider = VolumeS3StorageProvider(docker_config, s3_config)
        self.access = S3Access(s3_config)
        self.store: ObjectStore = S3ObjectStore(s3_config, self.access)
        self.client = client
        self.labels = dict(scope_labels)
        self._users: dict[str, str] = {}

    @property
    def engine_calls(self) -> int:
        return self.provider.engine_calls

    def _populate_sync(self, uid: str, entries: Mapping[str, FakeEntry]) -> None:
        links: list[str] = []
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(entries):
                e = entries[path]
                info = tarfile.TarInfo(path)
                info.uid = info.gid = 1000
                info.mode = e.mode
                info.mtime = e.mtime or 1_700_000_000
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == "symlink":
                    # Docker's put_archive refuses links that leave the directory.
                    links.append(f"ln -s {shlex.quote(e.target)} {shlex.quote('/data/' + path)}")
                else:
                    info.size = len(e.data)
                    tar.addfile(info, io.BytesIO(e.data))
        api = self.client.api
        ct = api.create_container(
            JOB_IMAGE,
            ["true"],
            user="1000:1000",
            labels=self.labels,
            host_config=api.create_host_config(
                binds={naming.volume_name(uid): {"bind": "/data", "mode": "rw"}}
            ),
        )
        try:
            assert api.put_archive(ct["Id"], "/data", buf.getvalue())
        finally:
            api.remove_container(ct["Id"], force=True)
        if links:
            self.sh(uid, " && ".join(links))

    async def populate(self, uid: str, entries: Mapping[str, FakeEntry]) -> None:
        await asyncio.to_thread(self._populate_sync, uid, entries)

    def sh(self, uid: str, script: str, *, user: str = "1000:1000") -> str:
        """Run ``script`` in a helper container with the volume at /data; return stdout."""
        out = self.client.containers.run(
            JOB_IMAGE,
            ["sh", "-c", script],
            user=user,
            volumes={naming.volume_name(uid): {"bind": "/data", "mode": "rw"}},
            labels=self.labels,
            network_mode="none",
            remove=True,
        )
        return bytes(out).decode("utf-8", "surrogateescape")

    async def manifest(self, uid: str) -> Manifest:
        return await asyncio.to_thread(real_manifest, self, uid)

    async def put_object(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self.access.put_bytes, key, data)

    async def get_object(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self.access.get_bytes, key, 1 << 30)

    async def make_stale_staging(self, uid: str) -> None:
        await asyncio.to_thread(
            self.sh,
            uid,
            f"mkdir -p /data/{STAGING_DIR}/d && echo junk > /data/{STAGING_DIR}/d/junk "
            f"&& chmod 555 /data/{STAGING_DIR}/d",
        )

    async def crash_archive_before_meta(self, uid: str, op_id: str) -> None:
        # What a crash between the two uploads leaves: an archive object, no .meta.
        await self.put_object(naming.archive_key(uid, op_id), b"not a finished archive")

    async def use_volume(self, uid: str) -> None:
        def run() -> str:
            ct = self.client.containers.run(
                JOB_IMAGE,
                ["sleep", "300"],
                user="1000:1000",
                volumes={naming.volume_name(uid): {"bind": "/data", "mode": "rw"}},
                labels=self.labels,
                network_mode="none",
                detach=True,
            )
            return str(ct.id)

        self._users[uid] = await asyncio.to_thread(run)

    async def release_volume(self, uid: str) -> None:
        cid = self._users.pop(uid, None)
        if cid:
            await asyncio.to_thread(self.client.api.remove_container, cid, force=True)

    async def close(self) -> None:
        for uid in list(self._users):
            await self.release_volume(uid)
        await self.provider.close()


def real_manifest(h: RealHarness, uid: str) -> Manifest:
    script = (
        "cd /data || exit 1; "
        "echo '#STAT'; find . -mindepth 1 -exec stat -c '%n|%F|%a|%s' {} +; "
        "echo '#SHA'; find . -mindepth 1 -type f -exec sha256sum {} +; "
        "echo '#LINK'; find . -mindepth 1 -type l | while IFS= read -r f; do "
        'printf "%s|%s\\n" "$f" "$(readlink "$f")"; done'
    )
    out = h.sh(uid, script)
    stat: dict[str, tuple[str, int, int]] = {}
    shas: dict[str, str] = {}
    links: dict[str, str] = {}
    section = ""
    for line in out.splitlines():
        if line.startswith("#"):
            section = line
            continue
        if not line:
            continue
        if section == "#STAT":
            name, ftype, mode_text, size_text = line.rsplit("|", 3)
            kind = {
                "regular file": "file",
                "regular empty file": "file",
                "directory": "dir",
                "symbolic link": "symlink",
            }.get(ftype, ftype)
            stat[name[2:]] = (kind, int(mode_text, 8), int(size_text))
        elif section == "#SHA":
            digest, name = line.split("  ", 1)
            shas[name[2:]] = digest
        elif section == "#LINK":
            name, target = line.split("|", 1)
            links[name[2:]] = target
    manifest: Manifest = {}
    for name, (kind, mode, size) in stat.items():
        if kind == "dir":
            size = 0
        if kind == "symlink":
            mode, size = 0o777, 0
        manifest[name] = (kind, mode, size, shas.get(name, ""), links.get(name, ""))
    return manifest


def visible(manifest: Manifest) -> Manifest:
    """The manifest without the restore machinery's reserved names."""
    return {k: v for k, v in manifest.items() if not k.startswith(RESERVED_PREFIX)}


def sample_tree() -> dict[str, FakeEntry]:
    return {
        ".hidden": FakeEntry("file", 0o600, b"secret-ish\n"),
        ".config": FakeEntry("dir", 0o700),
        ".config/app.toml": FakeEntry("file", 0o644, b"a = 1\n"),
        "empty-dir": FakeEntry("dir", 0o755),
        "zero": FakeEntry("file", 0o644, b""),
        "bin": FakeEntry("dir", 0o755),
        "bin/run": FakeEntry("file", 0o755, b"#!/bin/sh\necho hi\n"),
        "link-rel": FakeEntry("symlink", 0o777, target="bin/run"),
        "link-abs": FakeEntry("symlink", 0o777, target="/home/coder/bin/run"),
        # Links are user data wherever they point (docs/storage.md).
        "bin/python": FakeEntry("symlink", 0o777, target="/usr/bin/python3"),
        "up": FakeEntry("symlink", 0o777, target="../../etc"),
        "readonly": FakeEntry("dir", 0o555),
        "readonly/f": FakeEntry("file", 0o444, b"ro\n"),
        "data.bin": FakeEntry("file", 0o640, bytes(range(256)) * 64),
    }


def expected_manifest(entries: Mapping[str, FakeEntry]) -> Manifest:
    out: Manifest = {}
    for path, e in entries.items():
        if e.kind == "file":
            out[path] = ("file", e.mode, len(e.data), hashlib.sha256(e.data).hexdigest(), "")
        elif e.kind == "dir":
            out[path] = ("dir", e.mode, 0, "", "")
        else:
            out[path] = ("symlink", 0o777, 0, "", e.target)
    return out


def crafted_archive(kind: str) -> bytes:
    def info(name: str, **attrs: Any) -> tarfile.TarInfo:
        i = tarfile.TarInfo(name)
        for k, v in attrs.items():
            setattr(i, k, v)
        return i

    ok = (info("ok.txt", mode=0o644), b"fine\n")
    # The job sees the volume at /data and the staging directory at /data/<staging>: every
    # link below aims at the live volume root, so a member written through one would show
    # up in the volume's manifest, which the test compares with the untouched original.
    table: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
        "dotdot": [(info("../x", mode=0o644), b"escape\n")],
        "absolute": [(info("/etc/x", mode=0o644), b"escape\n")],
        "symlink-out": [
            (info("evil", type=tarfile.SYMTYPE, linkname="../../../etc"), None),
            (info("evil/x", mode=0o644), b"escape\n"),
        ],
        "link-to-root-then-file": [
            (info("evil", type=tarfile.SYMTYPE, linkname="/"), None),
            (info("evil/etc/passwd", mode=0o644), b"root::0:0::/:/bin/sh\n"),
            (info("evil/data/pwned", mode=0o644), b"escape\n"),
        ],
        "relative-link-then-file": [
            (info("up", type=tarfile.SYMTYPE, linkname=".."), None),
            (info("up/pwned", mode=0o644), b"escape\n"),
        ],
        "link-replaced-by-dir": [
            (info("d", type=tarfile.SYMTYPE, linkname="/data"), None),
            (info("d/", type=tarfile.DIRTYPE, mode=0o755), None),
            (info("d/pwned", mode=0o644), b"escape\n"),
        ],
        "hardlink-out": [
            (info("h", type=tarfile.LNKTYPE, linkname="/etc/passwd"), None),
        ],
        "hardlink-through-link": [
            (info("evil", type=tarfile.SYMTYPE, linkname="/data"), None),
            (info("h", type=tarfile.LNKTYPE, linkname="evil/keep"), None),
        ],
        "device": [(info("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3), None)],
    }
    bad = table[kind]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for member, data in [ok, *bad]:
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buf.getvalue()


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def s3_config(settings: Any, s3_bucket: str) -> S3Config:
    base: S3Config = settings.s3_config()
    return S3Config(
        endpoint=base.endpoint,
        bucket=s3_bucket,
        access_key=base.access_key,
        secret_key=base.secret_key,
        region=base.region,
    )


@pytest.fixture(params=["fake", "real"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "fake":
        h: Any = FakeHarness()
    else:
        request.getfixturevalue("test_images")
        h = RealHarness(
            request.getfixturevalue("docker_config"),
            request.getfixturevalue("s3_config"),
            request.getfixturevalue("docker_client"),
            request.getfixturevalue("scope_labels"),
        )
    try:
        yield h
    finally:
        await h.close()


# ---------------------------------------------------------------------- contract


async def test_provision_twice_and_list_in_one_engine_call(harness: Any) -> None:
    p: StorageProvider = harness.provider
    uid = new_uid()
    assert not await p.volume_exists(uid)
    await p.provision(uid, {naming.LABEL_NAMESPACE: "alice"})
    await p.provision(uid, {naming.LABEL_NAMESPACE: "alice"})
    assert await p.volume_exists(uid)
    before = harness.engine_calls
    listed = await p.list_volumes()
    assert harness.engine_calls - before == 1
    assert uid in listed
    if harness.kind == "real":
        # The workspace user can write the volume root (copy-up gave it to 1000:1000).
        out = await asyncio.to_thread(
            harness.sh, uid, "stat -c %u:%g /data; touch /data/w && echo ok"
        )
        assert out.split() == ["1000:1000", "ok"]
    await p.delete_volume(uid)


async def test_archive_restore_round_trip_twice(harness: Any) -> None:
    p: StorageProvider = harness.provider
    src, dst = new_uid(), new_uid()
    tree = sample_tree()
    await p.provision(src)
    await harness.populate(src, tree)
    assert visible(await harness.manifest(src)) == expected_manifest(tree)

    key = await p.archive(src, "op1")
    assert key == f"archives/{src}/op1/home.tar.gz"
    assert await p.archive(src, "op1") == key
    assert await harness.store.exists(key)
    meta = await harness.get_object(naming.meta_key(key))
    archive = await harness.get_object(key)
    assert meta is not None
    assert archive is not None
    assert meta.decode() == f"sha256:{hashlib.sha256(archive).hexdigest()}"

    # dst does not exist yet: restore provisions it.
    await p.restore(dst, key)
    await p.restore(dst, key)
    assert await harness.manifest(dst) == expected_manifest(tree)
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_restore_removes_files_not_in_archive(harness: Any) -> None:
    p: StorageProvider = harness.provider
    src, dst = new_uid(), new_uid()
    tree = sample_tree()
    await p.provision(src)
    await harness.populate(src, tree)
    key = await p.archive(src, "op1")
    await p.provision(dst)
    await harness.populate(
        dst,
        {
            "extra": FakeEntry("file", 0o644, b"x"),
            "bin": FakeEntry("dir", 0o755),
            "bin/old": FakeEntry("file", 0o644, b"old"),
            "locked": FakeEntry("dir", 0o500),
            ".hidden": FakeEntry("file", 0o644, b"different"),
        },
    )
    await p.restore(dst, key)
    assert await harness.manifest(dst) == expected_manifest(tree)
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_archive_rerun_after_crash_before_meta(harness: Any) -> None:
    p: StorageProvider = harness.provider
    src, dst = new_uid(), new_uid()
    tree = sample_tree()
    await p.provision(src)
    await harness.populate(src, tree)
    await harness.crash_archive_before_meta(src, "op-crash")
    key = naming.archive_key(src, "op-crash")
    assert await harness.store.exists(key)
    assert not await harness.store.exists(naming.meta_key(key))
    with pytest.raises(DataLostError) as info:
        await p.restore(dst, key)
    assert info.value.code is ErrorCode.META_NOT_FOUND

    assert await p.archive(src, "op-crash") == key
    await p.restore(dst, key)
    assert await harness.manifest(dst) == expected_manifest(tree)
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_restore_with_stale_staging_is_exact(harness: Any) -> None:
    p: StorageProvider = harness.provider
    src, dst = new_uid(), new_uid()
    tree = sample_tree()
    await p.provision(src)
    await harness.populate(src, tree)
    key = await p.archive(src, "op1")
    await p.provision(dst)
    await harness.populate(dst, {"old": FakeEntry("file", 0o644, b"old")})
    await harness.make_stale_staging(dst)
    await p.restore(dst, key)
    assert await harness.manifest(dst) == expected_manifest(tree)
    # An archive taken now does not carry the machinery's names either.
    key2 = await p.archive(dst, "op2")
    third = new_uid()
    await p.restore(third, key2)
    assert await harness.manifest(third) == expected_manifest(tree)
    for uid in (src, dst, third):
        await p.delete_volume(uid)


async def test_delete_volume_twice_and_in_use(harness: Any) -> None:
    p: StorageProvider = harness.provider
    uid = new_uid()
    await p.delete_volume(uid)  # missing is fine
    await p.provision(uid)
    await harness.use_volume(uid)
    with pytest.raises(ActionFailedError):
        await p.delete_volume(uid)
    assert await p.volume_exists(uid)
    await harness.release_volume(uid)
    await p.delete_volume(uid)
    await p.delete_volume(uid)
    assert not await p.volume_exists(uid)
    assert uid not in await p.list_volumes()


async def test_archive_of_missing_volume_is_data_lost(harness: Any) -> None:
    with pytest.raises(DataLostError) as info:
        await harness.provider.archive(new_uid(), "op1")
    assert info.value.code is ErrorCode.VOLUME_NOT_FOUND


async def test_restore_data_lost_codes_leave_volume_untouched(harness: Any) -> None:
    p: StorageProvider = harness.provider
    src, dst = new_uid(), new_uid()
    tree = sample_tree()
    await p.provision(src)
    await harness.populate(src, tree)
    key = await p.archive(src, "op1")
    await p.provision(dst)
    original = {"keep": FakeEntry("file", 0o644, b"keep me")}
    await harness.populate(dst, original)

    with pytest.raises(DataLostError) as info:
        await p.restore(dst, f"archives/{src}/nope/home.tar.gz")
    assert info.value.code is ErrorCode.ARCHIVE_NOT_FOUND

    orphan = f"archives/{src}/nometa/home.tar.gz"
    await harness.put_object(orphan, (await harness.get_object(key)) or b"")
    with pytest.raises(DataLostError) as info:
        await p.restore(dst, orphan)
    assert info.value.code is ErrorCode.META_NOT_FOUND

    corrupt = f"archives/{src}/corrupt/home.tar.gz"
    data = bytearray((await harness.get_object(key)) or b"")
    data[len(data) // 2] ^= 0xFF
    await harness.put_object(corrupt, bytes(data))
    await harness.put_object(
        naming.meta_key(corrupt), (await harness.get_object(naming.meta_key(key))) or b""
    )
    with pytest.raises(DataLostError) as info:
        await p.restore(dst, corrupt)
    assert info.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert not info.value.retryable

    assert await harness.manifest(dst) == expected_manifest(original)
    for uid in (src, dst):
        await p.delete_volume(uid)


HOSTILE = [
    "dotdot",
    "absolute",
    "symlink-out",
    "link-to-root-then-file",
    "relative-link-then-file",
    "link-replaced-by-dir",
    "hardlink-out",
    "hardlink-through-link",
    "device",
]


@pytest.mark.parametrize("kind", HOSTILE)
async def test_refused_members_write_nothing(harness: Any, kind: str) -> None:
    p: StorageProvider = harness.provider
    dst = new_uid()
    await p.provision(dst)
    original = {"keep": FakeEntry("file", 0o644, b"keep me")}
    await harness.populate(dst, original)
    data = crafted_archive(kind)
    key = f"archives/{dst}/crafted-{kind}/home.tar.gz"
    await harness.put_object(key, data)
    await harness.put_object(
        naming.meta_key(key), f"sha256:{hashlib.sha256(data).hexdigest()}".encode()
    )
    with pytest.raises(DataLostError) as info:
        await p.restore(dst, key)
    assert info.value.code is ErrorCode.TAR_EXTRACT_FAILED
    assert "refused" in str(info.value)
    # Nothing landed anywhere in the volume (not even beside the staging dir, where the
    # links aim) and no half-restore is left behind.
    assert await harness.manifest(dst) == expected_manifest(original)
    await p.delete_volume(dst)


async def test_links_pointing_outside_survive_a_round_trip_exactly(harness: Any) -> None:
    p: StorageProvider = harness.provider
    src, dst = new_uid(), new_uid()
    tree = {
        "bin": FakeEntry("dir", 0o755),
        "bin/python": FakeEntry("symlink", 0o777, target="/usr/bin/python3"),
        # Resolves to the job image's /etc while archiving: tar must store the link, not
        # follow it into a directory.
        "a": FakeEntry("symlink", 0o777, target="../../etc"),
        "root": FakeEntry("symlink", 0o777, target="/"),
        "dangling": FakeEntry("symlink", 0o777, target="no/such/file"),
        "f": FakeEntry("file", 0o644, b"after the links\n"),
    }
    await p.provision(src)
    await harness.populate(src, tree)
    key = await p.archive(src, "op-links")
    await p.restore(dst, key)
    got = await harness.manifest(dst)
    assert got["bin/python"] == ("symlink", 0o777, 0, "", "/usr/bin/python3")
    assert got["a"] == ("symlink", 0o777, 0, "", "../../etc")
    assert got == expected_manifest(tree)
    for uid in (src, dst):
        await p.delete_volume(uid)


async def test_object_store_list_all_pages_exists_delete_twice(harness: Any) -> None:
    store: ObjectStore = harness.store
    prefix = f"archives/{new_uid()}/"
    keys = [f"{prefix}op{i:04d}/home.tar.gz" for i in range(1005)]
    if harness.kind == "real":
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: harness.access.put_bytes(k, b"x"), keys))
    else:
        for k in keys:
            harness.objects.put(k, b"x")
    listed = await store.list(prefix)
    assert sorted(o.key for o in listed) == keys  # more than one page of 1000
    assert all(o.size == 1 for o in listed)
    assert await store.exists(keys[0])
    await store.delete(keys[0])
    await store.delete(keys[0])
    assert not await store.exists(keys[0])
    assert len(await store.list(prefix)) == 1004
    assert await store.list(f"{prefix}nothing/") == []
