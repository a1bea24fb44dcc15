"""Async client for the codehub API (the Kubernetes-compatible shim).

The operator, the CLI and the tests all talk to the server through this one class, so
error handling is uniform: every non-2xx answer becomes an ``ApiError`` parsed from the
Kubernetes ``Status`` body, and every transport failure becomes an ``ApiConnectionError``
with one clean line. The bearer token lives only in the request header: it is kept out
of ``repr``, messages and exceptions.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from codehub.crd_like.identity import GROUP, PLURAL, VERSION
from codehub.crd_like.status_reasons import STATUS_REASONS

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

Obj = dict[str, Any]
ObjList = list[Obj]
JsonPatch = list[dict[str, Any]]

_DEFAULT_TIMEOUT = 30.0
_MAX_TEXT = 300


class ApiError(Exception):
    """A request the server refused (or could not be made).

    ``status`` is the HTTP code (0 for transport failures), ``reason`` the Kubernetes
    reason (``NotFound``, ``Conflict``, ``Invalid``...), ``causes`` the field-level causes
    of a 422 as ``[{"field", "reason", "message"}]``.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        causes: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        if causes is None:
            raw = self.details.get("causes")
            causes = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
        self.causes: list[dict[str, Any]] = causes

    @property
    def not_found(self) -> bool:
        """404: the object (or its namespace) does not exist, or is not visible to us."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a resourceVersion precondition failed, or the name is taken."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        """410: the requested resourceVersion is older than the kept history."""
        return self.status == 410

    @property
    def invalid(self) -> bool:
        """422: the body failed validation, or a JSON Patch ``test`` failed."""
        return self.status == 422

    @property
    def too_many_requests(self) -> bool:
        """429: a running limit refused the change."""
        return self.status == 429

    @property
    def forbidden(self) -> bool:
        """403: authenticated, but not allowed."""
        return self.status == 403

    @property
    def unauthorized(self) -> bool:
        """401: no or a wrong token."""
        return self.status == 401

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, reason={self.reason!r}, message={self.message!r})"

    @classmethod
    def from_body(cls, status: int, body: bytes, http_reason: str = "") -> ApiError:
        """Build from a response body: a Kubernetes Status, the SPEC §10 limit body, or text."""
        text = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        default_reason = _REASONS.get(status, http_reason or "Error")
        if isinstance(data, dict):
            if data.get("kind") == "Status" or "reason" in data or "code" in data:
                details = data.get("details") if isinstance(data.get("details"), dict) else {}
                return cls(
                    status,
                    str(data.get("reason") or default_reason),
                    str(data.get("message") or http_reason or f"HTTP {status}"),
                    details,
                )
            if "error" in data:
                details = data.get("details") if isinstance(data.get("details"), dict) else {}
                return cls(
                    status,
                    str(data.get("error")),
                    str(data.get("message") or data.get("error")),
                    details,
                )
        snippet = " ".join(text.split())[:_MAX_TEXT]
        message = f"HTTP {status} {http_reason}".strip()
        if snippet:
            message = f"{message}: {snippet}"
        return cls(status, default_reason, message)


class ApiConnectionError(ApiError, ConnectionError):
    """The server could not be reached (refused, TLS failure, timeout, disconnect)."""

    def __init__(self, message: str) -> None:
        ApiError.__init__(self, 0, "ConnectionError", message)

    def __str__(self) -> str:
        return self.message


_REASONS = STATUS_REASONS


def workspaces_path(ns: str | None = None, name: str | None = None, status: bool = False) -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    if ns is None:
        return f"{base}/{PLURAL}"
    path = f"{base}/namespaces/{quote(ns, safe='')}/{PLURAL}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
        if status:
            path += "/status"
    return path


def events_path(ns: str | None) -> str:
    if ns is None:
        return "/api/v1/events"
    return f"/api/v1/namespaces/{quote(ns, safe='')}/events"


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
            sock_connect=_DEFAULT_TIMEOUT,
        )
        async with self._client._open("GET", self._path, params, client_timeout) as resp:
            buffer = b""
            try:
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
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


class ApiClient:
    """Async client for one server and one identity; use as ``async with ApiClient(...)``."""

    def __init__(
        self,
        server: str,
        token: str,
        ca_file: str | None = None,
        insecure: bool = False,
        timeout: float = _DEFAULT_TIMEOUT,
        ca_data: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self.ca_file = ca_file
        self.ca_data = ca_data
        self.insecure = insecure
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None

    def __repr__(self) -> str:
        return f"ApiClient(server={self.server!r}, ca_file={self.ca_file!r})"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext | bool | None:
        if self._ssl is None:
            if not self.server.startswith("https://"):
                self._ssl = None
            elif self.insecure:
                self._ssl = False
            else:
                try:
                    self._ssl = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
                except (OSError, ssl.SSLError) as exc:
                    where = f"CA file {self.ca_file}" if self.ca_file else "CA data"
                    detail = exc.strerror or type(exc).__name__
                    raise ApiConnectionError(f"cannot read {where}: {detail}") from None
        return self._ssl

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "codehub-client"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    def _open(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        data: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Response:
        return _Response(self, method, path, params, timeout, data, content_type, headers)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body (or text, or None when empty)."""
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = content_type or "application/json"
        str_params = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._open(
            method, path, str_params, timeout, data, content_type, headers
        ) as resp:
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _connection_error(self.server, exc) from None
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", errors="replace")

    # -- workspaces ---------------------------------------------------------------------

    async def get(self, ns: str, name: str) -> Obj:
        return await self._obj("GET", workspaces_path(ns, name))

    async def list(
        self,
        ns: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> Obj:
        """The whole List; with ``limit`` it is fetched in pages of that size (one
        consistent snapshot: every page is served at the first page's revision)."""
        params: dict[str, Any] = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
        }
        result = await self._obj("GET", workspaces_path(ns), params=params)
        items = list(result.get("items") or [])
        meta = result.get("metadata") or {}
        while limit and meta.get("continue"):
            params["continue"] = meta["continue"]
            page = await self._obj("GET", workspaces_path(ns), params=params)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
        result["items"] = items
        result.setdefault("metadata", {}).pop("continue", None)
        return result

    async def create(self, ns: str, obj: Obj) -> Obj:
        return await self._obj("POST", workspaces_path(ns), json_body=obj)

    async def replace(self, ns: str, name: str, obj: Obj, status: bool = False) -> Obj:
        return await self._obj("PUT", workspaces_path(ns, name, status), json_body=obj)

    async def patch_merge(
        self, ns: str, name: str, patch: Mapping[str, Any], status: bool = False
    ) -> Obj:
        return await self._obj(
            "PATCH", workspaces_path(ns, name, status), json_body=patch, content_type=MERGE_PATCH
        )

    async def patch_status_merge(self, ns: str, name: str, patch: Mapping[str, Any]) -> Obj:
        return await self.patch_merge(ns, name, patch, status=True)

    async def patch_json(self, ns: str, name: str, ops: JsonPatch, status: bool = False) -> Obj:
        return await self._obj(
            "PATCH", workspaces_path(ns, name, status), json_body=ops, content_type=JSON_PATCH
        )

    async def delete(self, ns: str, name: str, resource_version: str | None = None) -> Obj:
        body = None
        if resource_version is not None:
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"resourceVersion": resource_version},
            }
        return await self._obj("DELETE", workspaces_path(ns, name), json_body=body)

    def watch(
        self,
        ns: str | None = None,
        resource_version: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: float | None = None,
        label_selector: str | None = None,
        bookmarks: bool = False,
    ) -> Watch:
        """Open a watch (lazily, on first iteration); see ``Watch``."""
        params: dict[str, str] = {}
        if field_selector:
            params["fieldSelector"] = field_selector
        if label_selector:
            params["labelSelector"] = label_selector
        return Watch(
            self, workspaces_path(ns), params, resource_version, timeout_seconds, bookmarks
        )

    # -- core/v1 events -----------------------------------------------------------------

    async def list_events(self, ns: str, involved_name: str | None = None) -> ObjList:
        params: dict[str, str] = {}
        if involved_name:
            params["fieldSelector"] = f"involvedObject.name={involved_name}"
        data = await self._obj("GET", events_path(ns), params=params)
        items = data.get("items") or []
        return [i for i in items if isinstance(i, dict)]

    async def post_event(self, ns: str, event: Obj) -> Obj:
        return await self._obj("POST", events_path(ns), json_body=event)

    async def _obj(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content_type: str | None = None,
    ) -> Obj:
        data = await self.request(
            method, path, params=params, json_body=json_body, content_type=content_type
        )
        if not isinstance(data, dict):
            raise ApiError(500, "InternalError", f"unexpected response from server for {path}")
        return data


class _Response:
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
                raise _connection_error(self._client.server, exc) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise _connection_error(self._client.server, exc) from None
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


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _connection_error(server: str, exc: BaseException) -> ApiConnectionError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ApiConnectionError(
            f"TLS certificate of {server} is not trusted (pass --ca-file / CODEHUB_CA_FILE)"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return ApiConnectionError(f"TLS handshake with {server} failed")
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or type(exc.os_error).__name__
        return ApiConnectionError(f"cannot connect to {server}: {detail}")
    if isinstance(exc, asyncio.TimeoutError):
        return ApiConnectionError(f"request to {server} timed out")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ApiConnectionError(f"{server} closed the connection")
    text = str(exc).split("\n", 1)[0][:_MAX_TEXT]
    return ApiConnectionError(f"cannot talk to {server}: {text or type(exc).__name__}")
