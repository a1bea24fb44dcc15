"""The in-memory bucket of the fakes: the fake StorageProvider's archives, the Archive
GC's unit tests and the scale benchmarks.

It pages like S3: listing walks a sorted key list page by page, as ListObjectsV2 does
with a continuation marker, and ``calls`` counts what would be S3 requests (one per
listing page, one per multi-object delete of up to ``DELETE_BATCH`` keys). An object
holds its bytes when it was put with bytes (archives the fake provider reads back) or
only a size (a benchmark's 100,000 objects then cost a few megabytes). Failures are
injected per method with ``fail_next``; ``latency`` delays every call.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from itertools import islice

from codehub.adapters.interfaces import ObjectInfo, ObjectStore

DELETE_BATCH = 1000
S3_PAGE = 1000


class MemoryObjectStore(ObjectStore):
    """Objects by key (bytes or a size); see the module docstring."""

    def __init__(self, latency: float = 0.0) -> None:
        self.sizes: dict[str, int] = {}
        self.data: dict[str, bytes] = {}
        self.modified: dict[str, datetime] = {}
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self._sorted: list[str] | None = []
        self._failures: dict[str, list[BaseException]] = {}

    def put(self, key: str, content: bytes | int = 1) -> None:
        """Store ``content``: bytes, or just a size for an object nobody reads."""
        if key not in self.sizes:
            self._sorted = None
        if isinstance(content, int):
            self.data.pop(key, None)
            self.sizes[key] = content
        else:
            self.data[key] = bytes(content)
            self.sizes[key] = len(content)
        self.modified[key] = datetime.now(UTC)

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key`` (None if absent or stored as a size only)."""
        return self.data.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self.sizes

    def fail_next(self, method: str, exc: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` ("list", "delete", ...) raise ``exc``."""
        self._failures.setdefault(method, []).extend([exc] * times)

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.sizes)
        return self._sorted

    def _info(self, key: str) -> ObjectInfo:
        return ObjectInfo(key=key, size=self.sizes[key], last_modified=self.modified.get(key))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        pages = [page async for page in self.iter_objects(prefix)]
        return [info for page in pages for info in page]

    async def iter_objects(
        self, prefix: str, page_size: int = S3_PAGE
    ) -> AsyncIterator[builtins.list[ObjectInfo]]:
        after = ""
        while True:
            await self._enter("list")
            keys = self._keys()
            start = bisect.bisect_right(keys, after) if after else bisect.bisect_left(keys, prefix)
            page: builtins.list[ObjectInfo] = []
            limit = min(page_size, S3_PAGE)
            for key in islice(keys, start, None):
                if not key.startswith(prefix) or len(page) == limit:
                    break
                after = key
                if key in self.sizes:  # deleted keys stay in the sorted list until a put
                    page.append(self._info(key))
            if not page:
                return
            yield page
            await asyncio.sleep(0)

    async def delete(self, key: str) -> None:
        await self._enter("delete")
        self._remove(key)

    async def delete_many(self, keys: Iterable[str]) -> builtins.list[str]:
        todo = iter(keys)
        while batch := list(islice(todo, DELETE_BATCH)):
            await self._enter("delete_many")
            for key in batch:
                self._remove(key)
        return []

    def _remove(self, key: str) -> None:
        self.sizes.pop(key, None)
        self.data.pop(key, None)
        self.modified.pop(key, None)

    async def exists(self, key: str) -> bool:
        await self._enter("exists")
        return key in self.sizes
