"""One HTTP request of the client: session, TLS, one safe retry, errors mapped."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from codehub.crd_like.client.errors import ApiError, connection_error

if TYPE_CHECKING:
    from codehub.crd_like.client.api import ApiClient

DEFAULT_TIMEOUT = 30.0


class Response:
    """Async context manager around one aiohttp request that maps failures to ApiError."""

    def __init__(
        self,
        client: ApiClient,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        data: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self._client = client
        self._method = method
        self._url = client.server + path
        self._params = dict(params or {})
        self._timeout = timeout
        self._data = data
        self._headers = dict(headers or {})
        if content_type:
            self._headers["Content-Type"] = content_type
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        session = self._client._get_session()
        ssl_arg = self._client._ssl_context()
        attempts = 1 if self._method == "POST" else 2
        for attempt in range(attempts):
            try:
                resp = await session.request(
                    self._method,
                    self._url,
                    params=self._params,
                    data=self._data,
                    headers=self._headers,
                    timeout=self._timeout,
                    ssl=ssl_arg if ssl_arg is not None else True,
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the server closed (a restart, say) fails
                # on first use; the request never reached the server, so one retry on a
                # fresh connection is safe for every verb but a create.
                if attempt + 1 < attempts:
                    continue
                raise connection_error(self._client.server, exc) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise connection_error(self._client.server, exc) from None
        if resp.status >= 400:
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            resp.release()
            raise ApiError.from_body(resp.status, body, resp.reason or "")
        self._resp = resp
        return resp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._resp is not None:
            self._resp.release()


def param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
