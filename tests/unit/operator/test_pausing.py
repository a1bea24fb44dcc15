"""The test-only pausing adapters exist only when the setting names pauses."""

from __future__ import annotations

from support.workspaces import fake_adapters

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.operator.clock import FakeClock
from codehub.operator.pausing import PausingInstances, PausingStorage, parse_pauses, wrap


def test_without_pauses_the_real_adapters_are_used_unchanged() -> None:
    instances, storage = FakeInstanceController(), FakeStorageProvider()
    assert wrap("", instances, storage, FakeClock()) == (instances, storage)
    assert wrap(" , ", instances, storage, FakeClock()) == (instances, storage)


def test_parse_pauses_skips_junk() -> None:
    assert parse_pauses("archive=30, restore=5,bad=x,,") == {"archive": 30.0, "restore": 5.0}


async def test_archive_pauses_after_the_upload_and_stop_before_the_delete() -> None:
    clock = FakeClock()
    instances, storage = fake_adapters()
    paused_i, paused_s = wrap("archive=30,stop=7", instances, storage, clock)
    assert isinstance(paused_i, PausingInstances)
    assert isinstance(paused_s, PausingStorage)
    await paused_s.provision("u1")
    assert clock.monotonic() == 0  # no pause configured for provision
    key = await paused_s.archive("u1", "op")
    assert storage.objects.get(key) is not None  # uploaded before the pause ...
    assert clock.monotonic() == 30  # ... and then paused
    await paused_i.delete("u1")
    assert clock.monotonic() == 37
    assert await paused_i.inspect("u1") is None
    assert await paused_s.volume_exists("u1")
