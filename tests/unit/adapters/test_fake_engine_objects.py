"""The fakes' containers and volumes seen and removed as labelled engine objects."""

from __future__ import annotations

from codehub.adapters import naming
from codehub.adapters.engine_objects import KIND_CONTAINER, KIND_VOLUME
from codehub.adapters.fake_engine_objects import FakeLabelledObjects
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.adapters.interfaces import InstanceSpec


async def test_lists_what_the_fakes_hold_and_removes_through_them() -> None:
    storage = FakeStorageProvider()
    instances = FakeInstanceController(volume_exists=storage.volume_exists)
    await storage.provision("u1")
    await instances.start(InstanceSpec(uid="u1", image_ref="img:1"))
    await storage.provision("u2")
    engine = FakeLabelledObjects(instances, storage)

    listed = await engine.list_labelled()
    assert sorted((o.kind, o.uid, o.name) for o in listed) == [
        (KIND_CONTAINER, "u1", naming.container_name("u1")),
        (KIND_VOLUME, "u1", naming.volume_name("u1")),
        (KIND_VOLUME, "u2", naming.volume_name("u2")),
    ]
    container = next(o for o in listed if o.kind == KIND_CONTAINER)
    assert container.ref == instances.containers["u1"].container_id

    for obj in listed:
        if obj.uid == "u1":
            assert await engine.remove_labelled(obj)
    assert "u1" not in instances.containers
    assert not await storage.volume_exists("u1")
    assert await storage.volume_exists("u2")
    assert [o.uid for o in await engine.list_labelled()] == ["u2"]
    assert engine.calls == {"list": 2, "remove": 2}
