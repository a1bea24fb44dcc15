"""Reading a store's watch in tests: the next events, bookmarks left out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from codehub.crd_like.store import WatchEvent


async def take_events(it: AsyncIterator[WatchEvent], n: int, patience: float) -> list[WatchEvent]:
    """The next ``n`` non-bookmark events of ``it``; fails after ``patience`` seconds."""
    out: list[WatchEvent] = []

    async def run() -> None:
        async for ev in it:
            if ev.type != "BOOKMARK":
                out.append(ev)
                if len(out) == n:
                    return

    await asyncio.wait_for(run(), patience)
    return out
