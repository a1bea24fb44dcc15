"""Routes of workspaces (codehub.io/v1alpha1) and core/v1 events.

The handlers live in ``reads`` (list, get, watch), ``writes`` (create, replace,
patch, delete), ``apply`` (server-side apply) and ``collection`` (deletecollection);
request bodies are decoded in ``bodies`` and checked in ``validation``.
"""

from __future__ import annotations

from aiohttp import web

from .apply import patch_or_apply_handler
from .collection import delete_collection_handler
from .context import EVENTS, WORKSPACES
from .reads import get_handler, list_handler
from .writes import create_handler, delete_handler, patch_handler, put_handler


def add_routes(app: web.Application) -> None:
    ws_base = f"/apis/{WORKSPACES.group}/{WORKSPACES.version}"
    ws_ns = ws_base + "/namespaces/{namespace}/" + WORKSPACES.plural
    ws_item = ws_ns + "/{name}"
    r = app.router
    r.add_get(f"{ws_base}/{WORKSPACES.plural}", list_handler(WORKSPACES))
    r.add_get(ws_ns, list_handler(WORKSPACES))
    r.add_post(ws_ns, create_handler(WORKSPACES))
    r.add_delete(ws_ns, delete_collection_handler(WORKSPACES))
    r.add_get(ws_item, get_handler(WORKSPACES))
    r.add_put(ws_item, put_handler(WORKSPACES))
    r.add_patch(ws_item, patch_or_apply_handler(WORKSPACES))
    r.add_delete(ws_item, delete_handler(WORKSPACES))
    r.add_get(ws_item + "/status", get_handler(WORKSPACES, "status"))
    r.add_put(ws_item + "/status", put_handler(WORKSPACES, "status"))
    r.add_patch(ws_item + "/status", patch_handler(WORKSPACES, "status"))

    ev_ns = "/api/v1/namespaces/{namespace}/events"
    r.add_get("/api/v1/events", list_handler(EVENTS))
    r.add_get(ev_ns, list_handler(EVENTS))
    r.add_post(ev_ns, create_handler(EVENTS))
    r.add_delete(ev_ns, delete_collection_handler(EVENTS))
    r.add_get(ev_ns + "/{name}", get_handler(EVENTS))
    r.add_put(ev_ns + "/{name}", put_handler(EVENTS))
    r.add_patch(ev_ns + "/{name}", patch_handler(EVENTS))
    r.add_delete(ev_ns + "/{name}", delete_handler(EVENTS))
