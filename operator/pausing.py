"""Test-only adapters that pause inside an actuator, so e2e tests can kill a coordinator in
the middle of an operation (``CODEHUB_TEST_PAUSE_ACTUATORS="archive=30,restore=30"``).

They wrap the real adapters and are built only at the composition root
(``coordinator.build_context``) when the setting is present: the production actuator
path has no pause code. Pause points: ``provision``, ``restore``, ``start``, ``stop``
(``instances.delete``) and ``delete_volume`` before the call; ``archive`` after the
upload returned and before the reconciler saves ``archive_key`` (the most demanding crash
point).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from codehub.adapters.interfaces import (
    ForwardingStorage,
    InstanceController,
    InstanceInfo,
    InstanceSpec,
    ProgressCallback,
    StorageProvider,
)
from codehub.operator.clock import Clock

log = logging.getLogger(__name__)


def parse_pauses(text: str) -> dict[str, float]:
    """``"archive=30, restore=5"`` -> {"archive": 30.0, "restore": 5.0}; junk is skipped."""
    pauses: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        action, _, seconds = part.partition("=")
        try:
            pauses[action.strip()] = float(seconds)
        except ValueError:
            log.warning("ignoring malformed test pause %r", part)
    return pauses


class _Pauses:
    def __init__(self, pauses: Mapping[str, float], clock: Clock) -> None:
        self.pauses = dict(pauses)
        self.clock = clock

    async def pause(self, action: str) -> None:
        seconds = self.pauses.get(action)
        if seconds:
            log.warning("test hook: pausing %s for %g s", action, seconds)
            await self.clock.sleep(seconds)


class PausingStorage(ForwardingStorage):
    def __init__(self, inner: StorageProvider, pauses: Mapping[str, float], clock: Clock) -> None:
        super().__init__(inner)
        self._p = _Pauses(pauses, clock)

    async def provision(self, uid: str, labels: Mapping[str, str] | None = None) -> None:
        await self._p.pause("provision")
        await self.inner.provision(uid, labels)

    async def restore(
        self, uid: str, archive_key: str, *, on_progress: ProgressCallback | None = None
    ) -> None:
        await self._p.pause("restore")
        await self.inner.restore(uid, archive_key, on_progress=on_progress)

    async def archive(
        self, uid: str, op_id: str, *, on_progress: ProgressCallback | None = None
    ) -> str:
        key = await self.inner.archive(uid, op_id, on_progress=on_progress)
        await self._p.pause("archive")
        return key

    async def delete_volume(self, uid: str) -> None:
        await self._p.pause("delete_volume")
        await self.inner.delete_volume(uid)


class PausingInstances(InstanceController):
    def __init__(
        self, inner: InstanceController, pauses: Mapping[str, float], clock: Clock
    ) -> None:
        self.inner = inner
        self._p = _Pauses(pauses, clock)

    async def start(self, spec: InstanceSpec) -> None:
        await self._p.pause("start")
        await self.inner.start(spec)

    async def delete(self, uid: str) -> None:
        await self._p.pause("stop")
        await self.inner.delete(uid)

    async def is_running(self, uid: str) -> bool:
        return await self.inner.is_running(uid)

    async def upstream(self, uid: str) -> str | None:
        return await self.inner.upstream(uid)

    async def list_instances(self) -> dict[str, InstanceInfo]:
        return await self.inner.list_instances()

    async def inspect(self, uid: str) -> InstanceInfo | None:
        return await self.inner.inspect(uid)

    async def close(self) -> None:
        await self.inner.close()


def wrap(
    text: str, instances: InstanceController, storage: StorageProvider, clock: Clock
) -> tuple[InstanceController, StorageProvider]:
    """The adapters to use: wrapped in pausing ones only when ``text`` names pauses."""
    pauses = parse_pauses(text)
    if not pauses:
        return instances, storage
    return PausingInstances(instances, pauses, clock), PausingStorage(storage, pauses, clock)
