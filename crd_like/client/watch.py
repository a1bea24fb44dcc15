"""A watch stream as an async iterator of ``(type, object)`` (docs/api.md, "Watch")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp

from codehub.crd_like.client.errors import _REASONS, ApiError
from codehub.crd_like.client.transport import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from codehub.crd_like.client.api import ApiClient

Obj = dict[str, Any]


class Watch:
    """One watch stream: an async iterator of ``(type, object)``.

    BOOKMARK events are consumed here (they only advance ``resource_version``), so a
    caller can resume from ``resource_version`` after the stream ends without missing
    anything. A 410 (history compacted) is raised as ``ApiError`` with status 410; the
    caller re-lists.
    """

    def __init__(
        self,
        client: ApiClient,
        path: str,
        params: dict[str, str],
        resource_version: str | None,
        timeout_seconds: float | None,
        bookmarks: bool,
    ) -> None:
        self._client = client
        self._path = path
        self._params = params
        self.resource_version = resource_version
        self._timeout_seconds = timeout_seconds
        self._yield_bookmarks = bookmarks
        self._iter: AsyncIterator[tuple[str, Obj]] | None = None

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> tuple[str, Obj]:
        if self._iter is None:
            self._iter = self._stream()
        return await self._iter.__anext__()

    async def aclose(self) -> None:
        if self._iter is not None:
            await self._iter.aclose()  # type: ignore[attr-defined]

    async def _stream(self) -> AsyncIterator[tuple[str, Obj]]:
        params = dict(self._params)
        params["watch"] = "true"
        params["allowWatchBookmarks"] = "true"
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        if self._timeout_seconds is not None:
            params["timeoutSeconds"] = str(max(1, int(self._timeout_seconds)))
        client_timeout = aiohttp.ClientTimeout(
            total=None if self._timeout_seconds is None else self._timeout_seconds + 30,
            sock_connect=DEFAULT_TIMEOUT,
        )
        async with self._client._open("GET", self._path, params, client_timeout) as resp:
            buffer = b""
            try:
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    if b"\n" not in chunk:
                        continue
                    # One split per chunk: a burst delivers hundreds of events in one
                    # chunk, and splitting off one line at a time copied the rest each time.
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        event = self._parse(line)
                        if event is not None:
                            yield event
                if buffer.strip():
                    event = self._parse(buffer)
                    if event is not None:
                        yield event
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                return  # the stream ended early; the caller resumes from resource_version

    def _parse(self, line: bytes) -> tuple[str, Obj] | None:
        if not line.strip():
            return None
        try:
            event = json.loads(line)
        except ValueError:
            raise ApiError(500, "InternalError", "malformed watch event from server") from None
        etype = str(event.get("type", ""))
        obj = event.get("object") or {}
        if etype == "ERROR":
            code = int(obj.get("code") or 500)
            raise ApiError(
                code,
                str(obj.get("reason") or _REASONS.get(code, "Error")),
                str(obj.get("message") or f"watch error {code}"),
                obj.get("details") if isinstance(obj.get("details"), dict) else None,
            )
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = str(rv)
        if etype == "BOOKMARK" and not self._yield_bookmarks:
            return None
        return etype, obj
