"""Test helpers for the informer (crd_like/client/informer.py): a client wrapper that can
hold watch streams back or drop events, and a poll that waits for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.client.informer import WatchStream

Obj = dict[str, Any]


class HeldWatch:
    """One watch whose stream waits for the client's ``open`` event before its first
    event, and leaves out the event types in ``drop``."""

    def __init__(self, inner: WatchStream, owner: SteeredClient) -> None:
        self.inner = inner
        self.owner = owner

    @property
    def resource_version(self) -> str | None:
        return self.inner.resource_version

    def __aiter__(self) -> AsyncIterator[tuple[str, Obj]]:
        return self._events()

    async def _events(self) -> AsyncIterator[tuple[str, Obj]]:
        self.owner.held += 1
        try:
            await self.owner.open.wait()
        finally:
            self.owner.held -= 1
        async for etype, obj in self.inner:
            if etype not in self.owner.drop:
                yield etype, obj

    async def aclose(self) -> None:
        await self.inner.aclose()


class SteeredClient:
    """An ``ApiClient`` whose watches a test can hold back (``open``) or make lossy
    (``drop``), and whose Lists can fail (``list_failures``)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.open = asyncio.Event()
        self.open.set()
        self.held = 0
        self.drop: set[str] = set()
        self.list_failures: list[BaseException] = []
        self.watch_versions: list[str | None] = []

    async def list(
        self,
        ns: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> Obj:
        if self.list_failures:
            raise self.list_failures.pop(0)
        return await self.client.list(ns, label_selector, field_selector, limit)

    def watch(
        self,
        ns: str | None = None,
        resource_version: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: float | None = None,
        label_selector: str | None = None,
        bookmarks: bool = False,
    ) -> HeldWatch:
        self.watch_versions.append(resource_version)
        inner = self.client.watch(
            ns, resource_version, field_selector, timeout_seconds, label_selector, bookmarks
        )
        return HeldWatch(inner, self)


async def until(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``limit`` seconds (a hang guard, not
    a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)
