"""The fakes' workspace containers and volumes as labelled engine objects, so an orphan
sweeper can run over the fake adapters (unit tests, scale benchmarks) as it runs over
Docker (``engine_objects.DockerLabelledObjects``).

``calls`` counts what would be engine round trips: one per listing (the real one lists
containers and volumes in a constant number of calls) and one per removal.
"""

from __future__ import annotations

from collections import Counter

from codehub.adapters import naming
from codehub.adapters.engine_objects import (
    KIND_CONTAINER,
    KIND_VOLUME,
    LabelledObject,
    LabelledObjects,
)
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider


class FakeLabelledObjects(LabelledObjects):
    """Reads the fakes' own tables; removal goes through their actuators."""

    def __init__(self, instances: FakeInstanceController, storage: FakeStorageProvider) -> None:
        self.instances = instances
        self.storage = storage
        self.calls: Counter[str] = Counter()

    async def list_labelled(self) -> list[LabelledObject]:
        self.calls["list"] += 1
        containers = [
            LabelledObject(KIND_CONTAINER, uid, c.container_id, naming.container_name(uid))
            for uid, c in list(self.instances.containers.items())
        ]
        volumes = [
            LabelledObject(KIND_VOLUME, uid, naming.volume_name(uid), naming.volume_name(uid))
            for uid in list(self.storage.volumes)
        ]
        return containers + volumes

    async def remove_labelled(self, obj: LabelledObject) -> bool:
        self.calls["remove"] += 1
        if obj.kind == KIND_CONTAINER:
            await self.instances.delete(obj.uid)
        elif obj.kind == KIND_VOLUME:
            await self.storage.delete_volume(obj.uid)
        return True
