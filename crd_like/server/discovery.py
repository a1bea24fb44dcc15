"""Discovery, version, OpenAPI and the synthesized namespaces.

Namespaces are not stored: one exists per user in the token file (administrators and
the operator excepted) plus every namespace that holds a workspace, and any valid name
can be read (a workspace can be created in any namespace its owner may use). kopf waits
forever unless ``namespaces`` is discoverable and listable, and kubectl reads a
namespace on apply.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from codehub.crd_like.identity import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from codehub.crd_like.models import validate_name

from . import access_review, openapi_core
from .context import (
    NAMESPACES,
    WORKSPACES,
    authorize,
    ctx_of,
    identity_of,
    json_response,
    mark,
    query_bool,
    query_int,
    tracked_stream,
)
from .openapi import GV_PATH, TESTED_KUBECTL, group_version_bytes, index_document
from .status import ApiError
from .table import build_table, wants_table

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-codehub"}
GV = f"{GROUP}/{VERSION}"
_WRITE_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_NS_UUID = uuid.UUID("6f1c1d8e-5d0b-4a57-9a39-3c0de0c0de01")


async def version(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "version")
    return json_response(
        {
            **KUBE_VERSION,
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-11-26T00:00:00Z",
            "goVersion": "python",
            "compiler": "codehub",
            "platform": "linux/amd64",
        }
    )


def _server_address(request: web.Request) -> str:
    return request.host or "127.0.0.1"


async def api_versions(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response(
        {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": _server_address(request)}
            ],
        }
    )


async def core_v1(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response(
        {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {
                    "name": "events",
                    "singularName": "event",
                    "namespaced": True,
                    "kind": "Event",
                    "verbs": _WRITE_VERBS,
                    "shortNames": ["ev"],
                },
                {
                    "name": "namespaces",
                    "singularName": "namespace",
                    "namespaced": False,
                    "kind": "Namespace",
                    "verbs": ["get", "list", "watch"],
                    "shortNames": ["ns"],
                },
            ],
        }
    )


def _group() -> dict[str, Any]:
    version = {"groupVersion": GV, "version": VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": version}


async def api_groups(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response(
        {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group(), access_review.group()],
        }
    )


async def api_group(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response({"kind": "APIGroup", "apiVersion": "v1", **_group()})


async def group_resources(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": GV,
            "resources": [
                {
                    "name": PLURAL,
                    "singularName": SINGULAR,
                    "namespaced": True,
                    "kind": KIND,
                    "verbs": _WRITE_VERBS,
                    "shortNames": list(SHORT_NAMES),
                    "categories": ["codehub"],
                },
                {
                    "name": f"{PLURAL}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": KIND,
                    "verbs": ["get", "patch", "update"],
                },
            ],
        }
    )


async def openapi_index(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "openapi")
    doc = index_document()
    doc["paths"].update(openapi_core.index_entries())
    return json_response(doc)


async def openapi_v2(request: web.Request) -> web.StreamResponse:
    """kubectl 1.27 and 1.28 need OpenAPI v2 (as protobuf) for create, apply and explain;
    it is not served, and the answer says which kubectl to use instead."""
    mark(request, "get", "openapi")
    raise ApiError(
        404,
        "OpenAPI v2 is not served by the codehub API: use a kubectl that reads /openapi/v3 "
        f"(tested with {TESTED_KUBECTL}; kubectl 1.27 and 1.28 do not work)",
    )


async def openapi_group_version(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "openapi")
    return web.Response(
        body=group_version_bytes(),
        content_type="application/json",
        headers={"Cache-Control": "no-cache, private"},
    )


def _openapi_core(path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        mark(request, "get", "openapi")
        return web.Response(
            body=openapi_core.document_bytes(path),
            content_type="application/json",
            headers={"Cache-Control": "no-cache, private"},
        )

    return handler


# -- namespaces -------------------------------------------------------------------------


def namespace_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(_NS_UUID, name)),
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


async def _visible_namespaces(request: web.Request) -> tuple[list[str], int]:
    ctx = ctx_of(request)
    ident = identity_of(request)
    if not ident.privileged:
        return [ident.user], await ctx.store.current_revision()
    names = {u.user for u in ctx.auth.users() if not u.privileged and not validate_name(u.user)}
    result = await ctx.store.list(WORKSPACES.plural)
    for item in result.items:
        ns = item.get("metadata", {}).get("namespace")
        if ns:
            names.add(ns)
    return sorted(names), result.revision


async def list_namespaces(request: web.Request) -> web.StreamResponse:
    watch = query_bool(request, "watch")
    mark(request, "watch" if watch else "list", "namespaces")
    names, revision = await _visible_namespaces(request)
    selector = request.query.get("fieldSelector", "")
    if selector.startswith("metadata.name="):
        wanted = selector.split("=", 1)[1]
        names = [n for n in names if n == wanted]
    items = [namespace_object(n) for n in names]
    as_table = wants_table(request.headers.get("Accept"))
    if not watch:
        meta = {"resourceVersion": str(revision)}
        if as_table:
            return json_response(build_table(items, list(NAMESPACES.columns), list_meta=meta))
        return json_response(
            {"apiVersion": "v1", "kind": "NamespaceList", "metadata": meta, "items": items}
        )
    return await _watch_namespaces(request, items, revision, as_table)


async def _watch_namespaces(
    request: web.Request, items: list[dict[str, Any]], revision: int, as_table: bool
) -> web.StreamResponse:
    """Namespaces never change here: ADDED for each when asked, then bookmarks."""
    ctx = ctx_of(request)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    timeout = query_int(request, "timeoutSeconds") or ctx.config.default_watch_timeout
    bookmarks = query_bool(request, "allowWatchBookmarks")
    raw_rv = request.query.get("resourceVersion", "")

    async def send(type_: str, obj: dict[str, Any]) -> None:
        if as_table and type_ != "BOOKMARK":
            obj = build_table([obj], list(NAMESPACES.columns))
        await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

    gauge = ctx.metrics.open_watches.labels("namespaces")
    gauge.inc()
    try:
        with tracked_stream(request):
            await _namespace_events(request, items, send, timeout, bookmarks, raw_rv)
    except ConnectionResetError:
        pass
    finally:
        gauge.dec()
    return response


async def _namespace_events(
    request: web.Request,
    items: list[dict[str, Any]],
    send: Callable[[str, dict[str, Any]], Awaitable[None]],
    duration: float,
    bookmarks: bool,
    raw_rv: str,
) -> None:
    ctx = ctx_of(request)
    if raw_rv in ("", "0") or query_bool(request, "sendInitialEvents"):
        for item in items:
            await send("ADDED", item)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(duration)
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(remaining, ctx.config.bookmark_interval))
        if bookmarks and deadline - loop.time() > 0:
            rv = str(await ctx.store.current_revision())
            await send(
                "BOOKMARK",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"resourceVersion": rv}},
            )


async def get_namespace(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    mark(request, "get", "namespaces")
    authorize(request, "get", NAMESPACES, name, name=name)
    if validate_name(name):
        raise ApiError(
            404,
            f'namespaces "{name}" not found',
            details={"name": name, "kind": "namespaces"},
        )
    obj = namespace_object(name)
    if wants_table(request.headers.get("Accept")):
        return json_response(build_table([obj], list(NAMESPACES.columns)))
    return json_response(obj)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/version", version)
    r.add_get("/api", api_versions)
    r.add_get("/api/v1", core_v1)
    r.add_get("/apis", api_groups)
    r.add_get(f"/apis/{GROUP}", api_group)
    r.add_get(f"/apis/{GROUP}/{VERSION}", group_resources)
    r.add_get("/openapi/v2", openapi_v2)
    r.add_get("/openapi/v3", openapi_index)
    r.add_get(f"/openapi/v3/{GV_PATH}", openapi_group_version)
    for path in (openapi_core.CORE_PATH, openapi_core.AUTHZ_PATH):
        r.add_get(f"/openapi/v3/{path}", _openapi_core(path))
    r.add_get("/api/v1/namespaces", list_namespaces)
    r.add_get("/api/v1/namespaces/{name}", get_namespace)
    access_review.add_routes(app)
