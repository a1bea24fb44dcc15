"""The in-memory storage fakes: contract details the unit tests and benchmarks rely on."""

from __future__ import annotations

import hashlib
import time

import pytest

from codehub.adapters import naming
from codehub.adapters.errors import (
    ActionFailedError,
    DataLostError,
    ErrorCode,
    UnreachableError,
)
from codehub.adapters.fake_object_store import MemoryObjectStore
from codehub.adapters.fake_storage import FakeEntry, FakeStorageProvider


async def test_archive_restore_and_meta_format() -> None:
    p = FakeStorageProvider()
    await p.provision("u1")
    p.write_entries("u1", {"a": FakeEntry("file", 0o600, b"hello"), "d": FakeEntry("dir", 0o555)})
    key = await p.archive("u1", "op")
    assert key == naming.archive_key("u1", "op")
    data = p.objects.get(key)
    assert data is not None
    assert (
        p.objects.get(naming.meta_key(key)) == f"sha256:{hashlib.sha256(data).hexdigest()}".encode()
    )
    await p.restore("u2", key)
    assert p.manifest("u2") == p.manifest("u1")


async def test_archive_is_skipped_when_both_objects_exist() -> None:
    p = FakeStorageProvider()
    await p.provision("u1")
    await p.archive("u1", "op")
    p.write_entries("u1", {"new": FakeEntry("file", 0o644, b"x")})
    calls = p.engine_calls
    await p.archive("u1", "op")
    assert p.engine_calls == calls  # crash-only step 1: nothing redone


async def test_injected_failures_and_latency() -> None:
    objects = MemoryObjectStore(latency=0.05)
    p = FakeStorageProvider(objects)
    p.inject.fail_next("provision", UnreachableError("engine down"), times=2)
    for _ in range(2):
        with pytest.raises(UnreachableError):
            await p.provision("u1")
    await p.provision("u1")
    assert p.inject.calls["provision"] == 3
    started = time.monotonic()
    assert await objects.list("archives/") == []
    assert time.monotonic() - started >= 0.05


async def test_crash_before_meta_then_rerun() -> None:
    p = FakeStorageProvider()
    await p.provision("u1")
    p.crash_before_meta = 1
    with pytest.raises(ActionFailedError):
        await p.archive("u1", "op")
    key = naming.archive_key("u1", "op")
    assert await p.objects.exists(key)
    assert not await p.objects.exists(naming.meta_key(key))
    await p.archive("u1", "op")
    assert await p.objects.exists(naming.meta_key(key))


async def test_checksum_mismatch_leaves_volume() -> None:
    p = FakeStorageProvider()
    await p.provision("u1")
    key = await p.archive("u1", "op")
    p.objects.put(key, b"garbage")
    await p.provision("u2")
    p.write_entries("u2", {"keep": FakeEntry("file", 0o644, b"k")})
    with pytest.raises(DataLostError) as info:
        await p.restore("u2", key)
    assert info.value.code is ErrorCode.CHECKSUM_MISMATCH
    assert set(p.manifest("u2")) == {"keep"}


async def test_list_volumes_counts_one_engine_call() -> None:
    p = FakeStorageProvider()
    for i in range(100):
        await p.provision(f"u{i}")
    before = p.engine_calls
    assert len(await p.list_volumes()) == 100
    assert p.engine_calls - before == 1


async def test_fail_next_and_hooks_are_explicit() -> None:
    import pytest

    from codehub.adapters.errors import UnreachableError
    from codehub.adapters.fake_storage import FakeStorageProvider as Fake

    fake = Fake()
    fake.fail_next("provision", UnreachableError("down"))
    with pytest.raises(UnreachableError):
        await fake.provision("u1")
    assert "u1" not in fake.volumes
    with pytest.raises(ValueError, match="not a StorageProvider method"):
        fake.fail_next("nope", UnreachableError("x"))
    gone: list[str] = []

    async def after(uid: str, *_: object) -> None:
        gone.append(uid)

    fake.hook("provision", after=after)
    await fake.provision("u1")
    assert gone == ["u1"]
    assert "u1" in fake.volumes


async def test_progress_calls_of_the_fake_look_like_the_real_ones() -> None:
    p = FakeStorageProvider()
    await p.provision("u1")
    p.write_entries("u1", {"a": FakeEntry("file", 0o644, b"x" * 5000)})
    archived: list[tuple[int, int | None]] = []
    key = await p.archive("u1", "op", on_progress=lambda d, t: archived.append((d, t)))
    restored: list[tuple[int, int | None]] = []
    await p.restore("u2", key, on_progress=lambda d, t: restored.append((d, t)))
    for calls in (archived, restored):
        done = [d for d, _ in calls]
        assert done == sorted(done)
        last_done, last_total = calls[-1]
        assert last_total is not None
        assert last_done == last_total > 0
    assert archived[-1][0] >= 5000
    data = p.objects.get(key)
    assert data is not None
    assert restored[-1][0] == 2 * len(data)
    archived.clear()
    await p.archive("u1", "op", on_progress=lambda d, t: archived.append((d, t)))
    assert archived == []  # already complete: no work, no progress
