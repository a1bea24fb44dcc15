"""One HTTP request of the client: session, TLS, the safe retries, errors mapped.

Two kinds of retry, both bounded (docs/operations.md, "Outages"):

* a pooled keep-alive connection the server had closed fails before the request reaches
  the server: one retry on a fresh connection, for every verb but a create;
* an answer that asks to be retried (503 or 429 carrying ``Retry-After``; the server
  sends it when the database is unavailable and nothing was written) is sent again after
  the delay it names, capped, at most ``MAX_RETRIES`` times and never past the request's
  own timeout counted from the first attempt, as client-go does. The last answer is the
  error the caller sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from codehub.crd_like.client.errors import ApiError, connection_error

if TYPE_CHECKING:
    from codehub.crd_like.client.api import ApiClient

DEFAULT_TIMEOUT = 30.0
#: Answers with ``Retry-After`` sent again at most this many times per request.
MAX_RETRIES = 3
#: A ``Retry-After`` longer than this is waited only this long.
MAX_RETRY_WAIT = 5.0

log = logging.getLogger(__name__)


def retry_wait(
    status: int, retry_after: str | None, retries_done: int, max_retries: int = MAX_RETRIES
) -> float | None:
    """Seconds to wait before sending the request again, or None to give up.

    Only 503 and 429 with a ``Retry-After`` in delta-seconds are retried: the header is
    the server's statement that the request may simply be repeated. A 429 without it is
    a refusal (the workspace limit) and is never retried; an HTTP-date is not expected
    from this server and is treated as absent.
    """
    if status not in (429, 503) or retry_after is None or retries_done >= max_retries:
        return None
    text = retry_after.strip()
    if not text.isdigit():
        return None
    return min(float(text), MAX_RETRY_WAIT)


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
        retries = 0
        started = time.monotonic()
        while True:
            resp = await self._send()
            if resp.status < 400:
                self._resp = resp
                return resp
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            resp.release()
            wait = retry_wait(
                resp.status, resp.headers.get("Retry-After"), retries, self._client.max_retries
            )
            budget = self._timeout.total
            if wait is None or (budget is not None and time.monotonic() - started + wait > budget):
                raise ApiError.from_body(resp.status, body, resp.reason or "")
            retries += 1
            log.info(
                "%s %s answered %d; retry %d of %d in %gs",
                self._method,
                self._url.split("?", 1)[0],
                resp.status,
                retries,
                self._client.max_retries,
                wait,
            )
            await asyncio.sleep(wait)

    async def _send(self) -> aiohttp.ClientResponse:
        session = self._client._get_session()
        ssl_arg = self._client._ssl_context()
        attempts = 1 if self._method == "POST" else 2
        for attempt in range(attempts):
            try:
                return await session.request(
                    self._method,
                    self._url,
                    params=self._params,
                    data=self._data,
                    headers=self._headers,
                    timeout=self._timeout,
                    ssl=ssl_arg if ssl_arg is not None else True,
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the server closed (a restart, say) fails
                # on first use; the request never reached the server, so one retry on a
                # fresh connection is safe for every verb but a create.
                if attempt + 1 < attempts:
                    continue
                raise connection_error(self._client.server, exc) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise connection_error(self._client.server, exc) from None
        raise AssertionError("unreachable: the last attempt returns or raises")

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
