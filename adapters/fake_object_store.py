"""An in-memory bucket that pages like S3, for the Archive GC's unit tests and benchmark.

Only sizes are kept (no bytes), so 100,000 objects cost a few megabytes, and listing
walks a sorted key list page by page, as S3's ListObjectsV2 does with a continuation
marker. ``calls`` counts what would be S3 requests: one per listing page and one per
multi-object delete of up to ``DELETE_BATCH`` keys.
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
    """Sizes by key; failures injected per method with ``fail_next``."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self._sorted: list[str] | None = []
        self.calls: Counter[str] = Counter()
        self._failures: dict[str, list[BaseException]] = {}
        self.modified = datetime(2026, 1, 1, tzinfo=UTC)

    def put(self, key: str, size: int = 1) -> None:
        if key not in self.sizes:
            self._sorted = None
        self.sizes[key] = size

    def fail_next(self, method: str, exc: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` ("list", "delete", ...) raise ``exc``."""
        self._failures.setdefault(method, []).extend([exc] * times)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.sizes)
        return self._sorted

    def _info(self, key: str) -> ObjectInfo:
        return ObjectInfo(key=key, size=self.sizes[key], last_modified=self.modified)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        pages = [page async for page in self.iter_objects(prefix)]
        return [info for page in pages for info in page]

    async def iter_objects(
        self, prefix: str, page_size: int = S3_PAGE
    ) -> AsyncIterator[builtins.list[ObjectInfo]]:
        after = ""
        while True:
            self._enter("list")
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
        self._enter("delete")
        self._remove(key)

    async def delete_many(self, keys: Iterable[str]) -> builtins.list[str]:
        todo = iter(keys)
        while batch := list(islice(todo, DELETE_BATCH)):
            self._enter("delete_many")
            for key in batch:
                self._remove(key)
        return []

    def _remove(self, key: str) -> None:
        self.sizes.pop(key, None)

    async def exists(self, key: str) -> bool:
        self._enter("exists")
        return key in self.sizes
