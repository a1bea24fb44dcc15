"""Async client for the codehub API (the Kubernetes-compatible shim).

The operator, the CLI and the tests all talk to the server through this one class, so
error handling is uniform: every non-2xx answer becomes an ``ApiError`` parsed from the
Kubernetes ``Status`` body, and every transport failure becomes an ``ApiConnectionError``
with one clean line. The bearer token lives only in the request header: it is kept out
of ``repr``, messages and exceptions.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from codehub.crd_like.client.errors import ApiConnectionError, ApiError, connection_error
from codehub.crd_like.client.transport import DEFAULT_TIMEOUT, MAX_RETRIES, Response, param
from codehub.crd_like.client.watch import Watch
from codehub.crd_like.identity import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "ApiClient",
    "ApiConnectionError",
    "ApiError",
    "Watch",
    "events_path",
    "workspaces_path",
]

Obj = dict[str, Any]
ObjList = list[Obj]
JsonPatch = list[dict[str, Any]]


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


class ApiClient:
    """Async client for one server and one identity; use as ``async with ApiClient(...)``."""

    def __init__(
        self,
        server: str,
        token: str,
        ca_file: str | None = None,
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        ca_data: str | None = None,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.server = server.rstrip("/")
        #: How often an answer carrying ``Retry-After`` is sent again (0: never).
        self.max_retries = max_retries
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
    ) -> Response:
        return Response(self, method, path, params, timeout, data, content_type, headers)

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
        str_params = {k: param(v) for k, v in (params or {}).items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._open(
            method, path, str_params, timeout, data, content_type, headers
        ) as resp:
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise connection_error(self.server, exc) from None
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
