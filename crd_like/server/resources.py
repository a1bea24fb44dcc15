"""CRUD, patch and list/watch for workspaces (codehub.io/v1alpha1) and core/v1 events.

Request bodies are validated against the pydantic models before anything is stored, and
every change goes through ``Store.update`` with a mutator, so precondition checks,
patching and validation happen on the row the store has locked: a refused request leaves
the stored object exactly as it was.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from codehub.crd_like.models import (
    SpecDefaults,
    apply_spec_defaults,
    validate_name,
    validate_workspace_body,
)
from codehub.crd_like.store.interface import Conflict, Obj, RawListResult, StoreError

from .context import (
    EVENTS,
    WORKSPACES,
    ResourceKind,
    authorize,
    ctx_of,
    json_response,
    mark,
    media_type,
    parse_document,
    query_bool,
    query_int,
    read_body,
    selectors_of,
)
from .patch import PatchError, PatchFormatError, json_patch, merge_patch
from .status import ApiError, bad_request, from_store_error, invalid
from .table import build_table, wants_table
from .watch import stream_watch

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
)
KNOWN_METADATA = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        *SERVER_METADATA,
    }
)
TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class _DryRun(Exception):
    """Aborts a store write after the result was computed (``dryRun=All``)."""

    def __init__(self, obj: Obj) -> None:
        super().__init__("dry run")
        self.obj = obj


def _store_error(exc: StoreError, rk: ResourceKind, name: str) -> ApiError:
    return from_store_error(exc, resource=rk.plural, group=rk.group, kind=rk.kind, name=name)


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise bad_request(f'unsupported dryRun value "{v}": only "All"', "dryRun")
    return bool(values)


def _name_of(body: Obj) -> str:
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _invalid(rk: ResourceKind, name: str, causes: list[tuple[str, str]]) -> ApiError:
    return invalid(rk.kind, name, rk.group, rk.plural, causes)


def _structure_errors(body: Any, *, top_level: bool) -> list[tuple[str, str]]:
    """Unknown top-level or metadata fields (the server validates Strict)."""
    if not isinstance(body, dict):
        return [("", "the body must be a JSON object")]
    errors = []
    if top_level:
        errors = [(k, f'unknown field "{k}"') for k in body if k not in TOP_LEVEL]
    meta = body.get("metadata")
    if isinstance(meta, dict):
        errors += [
            (f"metadata.{k}", f'unknown field "metadata.{k}"')
            for k in meta
            if k not in KNOWN_METADATA
        ]
    return errors


def _check_identity(rk: ResourceKind, body: Obj, namespace: str, name: str | None) -> None:
    """The body's kind, apiVersion, namespace and name must agree with the URL."""
    meta = body.get("metadata")
    if meta is None:
        meta = body["metadata"] = {}
    if not isinstance(meta, dict):
        raise _invalid(rk, name or "", [("metadata", "must be an object")])
    kind = body.get("kind")
    if kind not in (None, rk.kind):
        raise bad_request(f'kind "{kind}" does not match the URL\'s kind "{rk.kind}"', "kind")
    api_version = body.get("apiVersion")
    if api_version not in (None, rk.api_version):
        raise bad_request(
            f'apiVersion "{api_version}" does not match the URL\'s "{rk.api_version}"',
            "apiVersion",
        )
    body_ns = meta.get("namespace")
    if body_ns not in (None, "", namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the "
            f'request ("{body_ns}" != "{namespace}")',
            "metadata.namespace",
        )
    if name is not None:
        body_name = meta.get("name")
        if body_name not in (None, "", name):
            raise bad_request(
                f'the name of the object ("{body_name}") does not match the name on the URL '
                f'("{name}")',
                "metadata.name",
            )


def _spec_defaults(request: web.Request) -> SpecDefaults:
    cfg = ctx_of(request).config
    return SpecDefaults(
        image_ref=cfg.default_image,
        standby_ttl_seconds=cfg.default_standby_ttl,
        archive_ttl_seconds=cfg.default_archive_ttl,
    )


def _validate(rk: ResourceKind, obj: Obj, *, check_status: bool) -> None:
    name = _name_of(obj)
    causes = _structure_errors(obj, top_level=rk is WORKSPACES)
    if rk is WORKSPACES:
        causes += [
            (e.field_path, e.message)
            for e in validate_workspace_body(obj, check_status=check_status)
        ]
    else:
        causes += _event_errors(obj)
    if causes:
        raise _invalid(rk, name, causes)


def _event_errors(obj: Obj) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [("metadata", "Required value: metadata must be an object")]
    name = meta.get("name")
    if not isinstance(name, str) or not name or len(name) > 253:
        errors.append(("metadata.name", "Required value: a name of at most 253 characters"))
    involved = obj.get("involvedObject")
    if involved is not None and not isinstance(involved, dict):
        errors.append(("involvedObject", "must be an object"))
    for key in ("reason", "message", "type", "action"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            errors.append((key, "must be a string"))
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (
            not isinstance(value, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            errors.append((f"metadata.{key}", "must be an object of string keys and values"))
    return errors


def _check_patch_type(request: web.Request, rk: ResourceKind, name: str) -> None:
    """A 415 for patch types custom resources do not support, as a real cluster answers."""
    media = media_type(request)
    if media in (STRATEGIC_PATCH, APPLY_PATCH):
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {JSON_PATCH}, {MERGE_PATCH}",
            reason="UnsupportedMediaType",
            details={"name": name, "group": rk.group, "kind": rk.plural},
        )
    if media not in (MERGE_PATCH, JSON_PATCH):
        raise ApiError(
            415,
            f'unsupported patch type "{media}": use {MERGE_PATCH} or {JSON_PATCH}',
            reason="UnsupportedMediaType",
        )


# -- list / get -------------------------------------------------------------------------


def _namespace_param(request: web.Request) -> str | None:
    return request.match_info.get("namespace")


async def _list_all(
    request: web.Request, rk: ResourceKind, namespace: str | None
) -> tuple[list[Obj], int]:
    store = ctx_of(request).store
    result = await store.list(rk.plural, namespace=namespace, selectors=selectors_of(request, rk))
    return result.items, result.revision


def list_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace = _namespace_param(request)
        watch = query_bool(request, "watch")
        mark(request, "watch" if watch else "list", rk.plural)
        authorize(request, "watch" if watch else "list", rk, namespace)
        ctx = ctx_of(request)
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
                raise _store_error(exc, rk, "") from None
        limit = query_int(request, "limit")
        if limit == 0:
            limit = None
        if limit is not None:
            limit = min(limit, ctx.config.max_list_limit)
        continue_token = request.query.get("continue") or None
        try:
            if as_table:
                result = await ctx.store.list(
                    rk.plural,
                    namespace=namespace,
                    selectors=selectors,
                    limit=limit,
                    continue_token=continue_token,
                )
            else:
                raw = await ctx.store.list_raw(
                    rk.plural,
                    namespace=namespace,
                    selectors=selectors,
                    limit=limit,
                    continue_token=continue_token,
                )
        except StoreError as exc:
            raise _store_error(exc, rk, "") from None
        if as_table:
            return json_response(
                build_table(
                    result.items,
                    list(rk.columns),
                    include_object=include,
                    list_meta=_list_meta(result.revision, result.continue_token),
                )
            )
        return _raw_list_response(rk, raw)

    return handler


def _list_meta(revision: int, continue_token: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if continue_token:
        meta["continue"] = continue_token
    return meta


def _raw_list_response(rk: ResourceKind, raw: RawListResult) -> web.Response:
    """The List with its items spliced in as stored JSON: a 10,000-item list is mostly
    item bodies, and relaying them as text saves a decode and an encode of each."""
    head = json.dumps(
        {
            "apiVersion": rk.api_version,
            "kind": rk.list_kind,
            "metadata": _list_meta(raw.revision, raw.continue_token),
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
        try:
            obj = await ctx_of(request).store.get(rk.plural, namespace, name)
        except StoreError as exc:
            raise _store_error(exc, rk, name) from None
        if wants_table(request.headers.get("Accept")):
            include = request.query.get("includeObject", "Metadata")
            meta = {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")}
            return json_response(
                build_table([obj], list(rk.columns), include_object=include, list_meta=meta)
            )
        return json_response(obj)

    return handler


# -- create -----------------------------------------------------------------------------


def create_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        mark(request, "create", rk.plural)
        authorize(request, "create", rk, namespace)
        ctx = ctx_of(request)
        body = parse_document(await read_body(request), media_type(request))
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        _check_identity(rk, body, namespace, None)
        meta = body["metadata"]
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            prefix = meta["generateName"][: 63 - 5 if rk is WORKSPACES else 248]
            meta["name"] = prefix + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
        for key in SERVER_METADATA:
            meta.pop(key, None)
        meta["namespace"] = namespace
        body["apiVersion"], body["kind"] = rk.api_version, rk.kind
        if rk is WORKSPACES:
            body.pop("status", None)
            body["spec"] = apply_spec_defaults(body.get("spec"), _spec_defaults(request))
        _validate(rk, body, check_status=False)
        name = meta["name"]
        if _dry_run(request):
            return json_response(body, 201)
        try:
            created = await ctx.store.create(
                rk.plural, body, admit=ctx.admit if rk is WORKSPACES else None
            )
        except StoreError as exc:
            raise _store_error(exc, rk, name) from None
        return json_response(created, 201)

    return handler


# -- update / patch ---------------------------------------------------------------------


def _finish(
    rk: ResourceKind,
    current: Obj,
    new: Any,
    *,
    subresource: str,
    namespace: str,
    name: str,
    defaults: SpecDefaults | None,
) -> Obj:
    """Checks shared by PUT and PATCH on the computed new object; raises to abort."""
    if not isinstance(new, dict):
        raise _invalid(rk, name, [("", "the result must be a JSON object")])
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        raise _invalid(rk, name, [("metadata", "must be an object")])
    cur_meta = current.get("metadata", {})
    for key in ("uid", "name", "namespace"):
        if key in meta and meta[key] not in (None, "") and meta[key] != cur_meta.get(key):
            raise _invalid(
                rk, name, [(f"metadata.{key}", f"Invalid value: {meta[key]!r}: field is immutable")]
            )
    rv = meta.get("resourceVersion")
    if rv not in (None, "") and str(rv) != str(cur_meta.get("resourceVersion")):
        raise Conflict(f"resourceVersion {rv} is stale")
    meta["name"], meta["namespace"] = name, namespace
    if cur_meta.get("uid"):
        meta["uid"] = cur_meta["uid"]
    for key in (
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ):
        if key in cur_meta:
            meta[key] = cur_meta[key]
        else:
            meta.pop(key, None)
    meta.pop("managedFields", None)
    meta["resourceVersion"] = cur_meta.get("resourceVersion")
    new["apiVersion"], new["kind"] = rk.api_version, rk.kind
    if subresource == "status":
        merged = copy.deepcopy(current)
        if "status" in new:
            merged["status"] = new["status"]
        else:
            merged.pop("status", None)
        new = merged
    else:
        if "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        else:
            new.pop("status", None)
        if defaults is not None:
            new["spec"] = apply_spec_defaults(new.get("spec"), defaults)
    _validate(rk, new, check_status=subresource == "status")
    out: Obj = new
    return out


def _write_handler(rk: ResourceKind, subresource: str, method: str) -> Handler:
    verb = "update" if method == "PUT" else "patch"

    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        mark(request, verb, rk.plural)
        authorize(request, verb, rk, namespace, name=name, subresource=subresource)
        ctx = ctx_of(request)
        if method == "PATCH":
            _check_patch_type(request, rk, name)
        media = media_type(request)
        raw = await read_body(request)
        doc = parse_document(raw, "application/json" if method == "PATCH" else media)
        if method == "PUT":
            if not isinstance(doc, dict):
                raise bad_request("the request body must be a JSON object")
            _check_identity(rk, doc, namespace, name)
        elif media == MERGE_PATCH and not isinstance(doc, dict):
            raise bad_request("a JSON merge patch must be a JSON object")
        elif media == JSON_PATCH and not isinstance(doc, list):
            raise bad_request("a JSON Patch must be a JSON array of operations")
        dry_run = _dry_run(request)
        defaults = _spec_defaults(request) if rk is WORKSPACES else None

        def mutate(current: Obj) -> Obj:
            if method == "PUT":
                new: Any = copy.deepcopy(doc)
            elif media == MERGE_PATCH:
                new = merge_patch(current, doc)
            else:
                try:
                    new = json_patch(current, doc)
                except PatchFormatError as exc:
                    raise bad_request(str(exc)) from None
                except PatchError as exc:
                    raise _invalid(
                        rk, name, [(exc.path.lstrip("/").replace("/", "."), str(exc))]
                    ) from None
            result = _finish(
                rk,
                current,
                new,
                subresource=subresource,
                namespace=namespace,
                name=name,
                defaults=defaults,
            )
            if dry_run:
                raise _DryRun(result)
            return result

        try:
            obj = await ctx.store.update(
                rk.plural,
                namespace,
                name,
                mutate,
                subresource="status" if subresource == "status" else None,
                admit=ctx.admit if rk is WORKSPACES and subresource == "" else None,
            )
        except _DryRun as exc:
            return json_response(exc.obj)
        except StoreError as exc:
            raise _store_error(exc, rk, name) from None
        return json_response(obj)

    return handler


def put_handler(rk: ResourceKind, subresource: str = "") -> Handler:
    return _write_handler(rk, subresource, "PUT")


def patch_handler(rk: ResourceKind, subresource: str = "") -> Handler:
    return _write_handler(rk, subresource, "PATCH")


# -- delete -----------------------------------------------------------------------------


def delete_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        mark(request, "delete", rk.plural)
        authorize(request, "delete", rk, namespace, name=name)
        ctx = ctx_of(request)
        raw = await read_body(request)
        options: Any = {}
        if raw.strip():
            options = parse_document(raw, media_type(request))
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        pre = options.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise bad_request("preconditions must be an object", "preconditions")
        dry_run = _dry_run(request) or bool(options.get("dryRun"))
        try:
            if dry_run:
                return json_response(await ctx.store.get(rk.plural, namespace, name))
            obj, _removed = await ctx.store.delete(
                rk.plural,
                namespace,
                name,
                expected_resource_version=pre.get("resourceVersion"),
                expected_uid=pre.get("uid"),
            )
        except StoreError as exc:
            raise _store_error(exc, rk, name) from None
        return json_response(obj)

    return handler


def add_routes(app: web.Application) -> None:
    ws_base = f"/apis/{WORKSPACES.group}/{WORKSPACES.version}"
    ws_ns = ws_base + "/namespaces/{namespace}/" + WORKSPACES.plural
    ws_item = ws_ns + "/{name}"
    r = app.router
    r.add_get(f"{ws_base}/{WORKSPACES.plural}", list_handler(WORKSPACES))
    r.add_get(ws_ns, list_handler(WORKSPACES))
    r.add_post(ws_ns, create_handler(WORKSPACES))
    r.add_get(ws_item, get_handler(WORKSPACES))
    r.add_put(ws_item, put_handler(WORKSPACES))
    r.add_patch(ws_item, patch_handler(WORKSPACES))
    r.add_delete(ws_item, delete_handler(WORKSPACES))
    r.add_get(ws_item + "/status", get_handler(WORKSPACES, "status"))
    r.add_put(ws_item + "/status", put_handler(WORKSPACES, "status"))
    r.add_patch(ws_item + "/status", patch_handler(WORKSPACES, "status"))

    ev_ns = "/api/v1/namespaces/{namespace}/events"
    r.add_get("/api/v1/events", list_handler(EVENTS))
    r.add_get(ev_ns, list_handler(EVENTS))
    r.add_post(ev_ns, create_handler(EVENTS))
    r.add_get(ev_ns + "/{name}", get_handler(EVENTS))
    r.add_put(ev_ns + "/{name}", put_handler(EVENTS))
    r.add_patch(ev_ns + "/{name}", patch_handler(EVENTS))
    r.add_delete(ev_ns + "/{name}", delete_handler(EVENTS))


def validate_path_name(name: str) -> str | None:
    return validate_name(name)
