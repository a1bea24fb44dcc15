"""List, get and watch handlers for workspaces and core/v1 events."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from codehub.crd_like.store import semantics
from codehub.crd_like.store.interface import Obj, RawListResult, StoreError

from .context import (
    ResourceKind,
    authorize,
    ctx_of,
    json_response,
    mark,
    query_bool,
    query_int,
    selectors_of,
    store_error,
)
from .status import ApiError, bad_request
from .table import build_table, wants_table
from .watch import stream_watch

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check_resource_version(request: web.Request) -> None:
    """A resourceVersion that is not a revision is a 400 on every verb, as for watch."""
    raw = request.query.get("resourceVersion", "")
    if raw and not raw.isdigit():
        raise bad_request(
            f"resourceVersion must be an integer, got {raw[:64]!r}", "resourceVersion"
        )


def invalid_continue() -> ApiError:
    return bad_request("continue key is not valid", "continue")


async def checked_continue(request: web.Request, rk: ResourceKind) -> str | None:
    """The ``continue`` token if it is one this server could have issued: well-formed,
    for the namespace of the URL, and not pointing past the store's current revision."""
    token = request.query.get("continue") or None
    if token is None:
        return None
    try:
        decoded = semantics.ContinueToken.decode(token)
    except StoreError:
        raise invalid_continue() from None
    namespace = request.match_info.get("namespace")
    if decoded.revision < 1 or (namespace is not None and decoded.namespace != namespace):
        raise invalid_continue()
    if decoded.revision > await ctx_of(request).store.current_revision():
        raise invalid_continue()
    return token


async def _list_all(
    request: web.Request, rk: ResourceKind, namespace: str | None
) -> tuple[list[Obj], int]:
    store = ctx_of(request).store
    result = await store.list(rk.plural, namespace=namespace, selectors=selectors_of(request, rk))
    return result.items, result.revision


def list_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info.get("namespace")
        watch = query_bool(request, "watch")
        mark(request, "watch" if watch else "list", rk.plural)
        authorize(request, "watch" if watch else "list", rk, namespace)
        selectors = selectors_of(request, rk)
        as_table = wants_table(request.headers.get("Accept"))
        include = request.query.get("includeObject", "Metadata")
        if watch:
            try:
                return await stream_watch(
                    request,
                    rk,
                    namespace=namespace,
                    selectors=selectors,
                    list_items=lambda: _list_all(request, rk, namespace),
                    as_table=as_table,
                    include_object=include,
                )
            except StoreError as exc:
                raise store_error(exc, rk, "") from None
        check_resource_version(request)
        return await _list_page(request, rk, namespace, as_table, include)

    return handler


async def _list_page(
    request: web.Request,
    rk: ResourceKind,
    namespace: str | None,
    as_table: bool,
    include: str,
) -> web.StreamResponse:
    ctx = ctx_of(request)
    selectors = selectors_of(request, rk)
    limit = query_int(request, "limit")
    if limit == 0:
        limit = None
    if limit is not None:
        limit = min(limit, ctx.config.max_list_limit)
    continue_token = await checked_continue(request, rk)
    args: dict[str, Any] = {
        "namespace": namespace,
        "selectors": selectors,
        "limit": limit,
        "continue_token": continue_token,
    }
    try:
        if as_table:
            result = await ctx.store.list(rk.plural, **args)
            return json_response(
                build_table(
                    result.items,
                    list(rk.columns),
                    include_object=include,
                    list_meta=list_meta(result.revision, result.continue_token),
                )
            )
        raw = await ctx.store.list_raw(rk.plural, **args)
    except StoreError as exc:
        raise store_error(exc, rk, "") from None
    return raw_list_response(rk, raw)


def list_meta(revision: int, continue_token: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if continue_token:
        meta["continue"] = continue_token
    return meta


def raw_list_response(rk: ResourceKind, raw: RawListResult) -> web.Response:
    """The List with its items spliced in as stored JSON: a 10,000-item list is mostly
    item bodies, and relaying them as text saves a decode and an encode of each."""
    head = json.dumps(
        {
            "apiVersion": rk.api_version,
            "kind": rk.list_kind,
            "metadata": list_meta(raw.revision, raw.continue_token),
        },
        separators=(",", ":"),
    )
    body = head[:-1] + ',"items":[' + ",".join(raw.items) + "]}"
    return web.Response(body=body.encode(), content_type="application/json")


def get_handler(rk: ResourceKind, subresource: str = "") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        mark(request, "get", rk.plural)
        authorize(request, "get", rk, namespace, name=name, subresource=subresource)
        check_resource_version(request)
        try:
            obj = await ctx_of(request).store.get(rk.plural, namespace, name)
        except StoreError as exc:
            raise store_error(exc, rk, name) from None
        if wants_table(request.headers.get("Accept")):
            include = request.query.get("includeObject", "Metadata")
            meta = {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")}
            return json_response(
                build_table([obj], list(rk.columns), include_object=include, list_meta=meta)
            )
        return json_response(obj)

    return handler
