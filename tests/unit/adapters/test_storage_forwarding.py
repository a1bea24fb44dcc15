"""ForwardingStorage passes every StorageProvider call through unchanged, so a wrapper
(a test pause, a reconcile slot handed back) only states what it changes."""

from __future__ import annotations

import inspect

from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.adapters.interfaces import ForwardingStorage, StorageProvider


def test_every_call_of_the_interface_is_forwarded() -> None:
    calls = {
        name
        for name, member in inspect.getmembers(StorageProvider, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    own = {name for name in calls if name in vars(ForwardingStorage)}
    assert own == calls


async def test_a_round_through_the_wrapper_reaches_the_inner_provider() -> None:
    inner = FakeStorageProvider()
    storage = ForwardingStorage(inner)
    await storage.provision("u1", {"codehub.io/workspace-id": "u1"})
    assert await storage.volume_exists("u1")
    assert await storage.list_volumes() == {"u1"}
    key = await storage.archive("u1", "op1")
    await storage.delete_volume("u1")
    assert not await inner.volume_exists("u1")
    await storage.restore("u1", key)
    assert await inner.volume_exists("u1")
    await storage.close()
