"""Reading the API's SSE stream (docs/events.md) from an aiohttp response."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientResponse


async def next_sse_event(
    stream: ClientResponse, kind: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The next event (of ``kind``, others skipped) as (event, data); a line read waits
    10 s at most, so a stream that went silent fails the test instead of hanging it."""
    while True:
        event, data = "", ""
        while True:
            line = (await asyncio.wait_for(stream.content.readline(), 10)).decode()
            if line == "\n":
                break
            if line.startswith("event: "):
                event = line[7:].strip()
            if line.startswith("data: "):
                data = line[6:].strip()
        if kind is None or event == kind:
            out: dict[str, Any] = json.loads(data)
            return event, out
