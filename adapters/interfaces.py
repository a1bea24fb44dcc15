"""The two small interfaces the operator drives (docs/storage.md), plus object-store access for GC.

Everything here takes plain values (uids, op ids, image references, limits): adapters
know nothing of the Workspace resource, so M3 can swap Docker and S3 for Kubernetes
without touching the operator. Every method is idempotent. The ``list_*`` calls answer
for every workspace in a constant number of engine calls: the HealthMonitor's pass
depends on it (docs/observation.md).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

#: ``on_progress(bytes_done, bytes_expected_or_None)`` from a long storage operation,
#: called from a worker thread at most a few times per second; ``bytes_done`` never
#: decreases and the last call has ``bytes_done == bytes_expected``.
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Resources:
    """Optional container limits as Kubernetes quantities ("2", "500m", "4Gi")."""

    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class InstanceInfo:
    """What one batch listing says about one workspace's container."""

    uid: str
    running: bool
    upstream: str | None = None  # e.g. "http://127.0.0.1:49153" when running


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """Everything ``start`` needs; labels carry namespace and name (docs/naming.md)."""

    uid: str
    image_ref: str
    resources: Resources = field(default_factory=Resources)
    labels: Mapping[str, str] = field(default_factory=dict)


class InstanceController(ABC):
    """Runs one workspace container per uid."""

    @abstractmethod
    async def start(self, spec: InstanceSpec) -> None:
        """Return only when the workspace can take traffic; recreate a stopped container."""

    @abstractmethod
    async def delete(self, uid: str) -> None:
        """Kill immediately (data is safe on the volume) and remove; missing is fine."""

    @abstractmethod
    async def is_running(self, uid: str) -> bool: ...

    @abstractmethod
    async def upstream(self, uid: str) -> str | None:
        """The base URL the proxy should use (a port published on 127.0.0.1), or None."""

    @abstractmethod
    async def list_instances(self) -> dict[str, InstanceInfo]:
        """Every workspace container, keyed by uid, in a constant number of engine calls."""

    async def inspect(self, uid: str) -> InstanceInfo | None:
        """One workspace's container as a listing would show it (None: no container).

        The default filters the listing; adapters override it with a single inspect.
        """
        return (await self.list_instances()).get(uid)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; the default has nothing to release."""


class StorageProvider(ABC):
    """The home volume of each workspace and its archives (docs/storage.md, crash-only)."""

    @abstractmethod
    async def provision(self, uid: str, labels: Mapping[str, str] | None = None) -> None: ...

    @abstractmethod
    async def restore(
        self, uid: str, archive_key: str, *, on_progress: ProgressCallback | None = None
    ) -> None:
        """Make the volume's content exactly the archive's; raise DataLostError on loss.

        ``on_progress`` (see :data:`ProgressCallback`) is called from the data path;
        each implementation says which bytes it counts.
        """

    @abstractmethod
    async def archive(
        self, uid: str, op_id: str, *, on_progress: ProgressCallback | None = None
    ) -> str:
        """Upload the volume as ``archives/{uid}/{op_id}/home.tar.gz`` and return that key.

        ``on_progress`` as for :meth:`restore`; an archive already complete (both objects
        present) returns without calling it.
        """

    @abstractmethod
    async def delete_volume(self, uid: str) -> None: ...

    @abstractmethod
    async def volume_exists(self, uid: str) -> bool: ...

    @abstractmethod
    async def list_volumes(self) -> set[str]:
        """The uids of every workspace volume, in a constant number of engine calls."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; the default has nothing to release."""


class ForwardingStorage(StorageProvider):
    """A StorageProvider that hands every call to ``inner``: the base of wrappers that
    change one or two calls (a test pause, a reconcile slot handed back around a
    transfer) and must pass the rest through unchanged."""

    def __init__(self, inner: StorageProvider) -> None:
        self.inner = inner

    async def provision(self, uid: str, labels: Mapping[str, str] | None = None) -> None:
        await self.inner.provision(uid, labels)

    async def restore(
        self, uid: str, archive_key: str, *, on_progress: ProgressCallback | None = None
    ) -> None:
        await self.inner.restore(uid, archive_key, on_progress=on_progress)

    async def archive(
        self, uid: str, op_id: str, *, on_progress: ProgressCallback | None = None
    ) -> str:
        return await self.inner.archive(uid, op_id, on_progress=on_progress)

    async def delete_volume(self, uid: str) -> None:
        await self.inner.delete_volume(uid)

    async def volume_exists(self, uid: str) -> bool:
        return await self.inner.volume_exists(uid)

    async def list_volumes(self) -> set[str]:
        return await self.inner.list_volumes()

    async def close(self) -> None:
        await self.inner.close()


class ObjectStore(ABC):
    """Bucket access the Archive GC needs (docs/archive-gc.md)."""

    @abstractmethod
    async def list(self, prefix: str) -> list[ObjectInfo]: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    async def iter_objects(
        self, prefix: str, page_size: int = 1000
    ) -> AsyncIterator[builtins.list[ObjectInfo]]:
        """The objects under ``prefix`` in key order, a page at a time, so a pass over a
        large bucket holds one page in memory. The default pages a full ``list``;
        adapters override it with a streaming listing."""
        objects = await self.list(prefix)
        for start in range(0, len(objects), page_size):
            yield objects[start : start + page_size]

    async def delete_many(self, keys: Iterable[str]) -> builtins.list[str]:
        """Delete ``keys`` (a missing key counts as deleted); return those that failed.

        The default deletes one by one; the S3 adapter sends multi-object deletes.
        """
        failed: builtins.list[str] = []
        for key in keys:
            try:
                await self.delete(key)
            except Exception:
                failed.append(key)
        return failed
