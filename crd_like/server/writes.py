"""Create, replace, patch and delete handlers for workspaces and core/v1 events.

Every change goes through ``Store.update`` with a mutator, so precondition checks,
patching and validation happen on the row the store has locked: a refused request
leaves the stored object exactly as it was.
"""

from __future__ import annotations

import copy
import functools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from codehub.crd_like.models import SpecDefaults, apply_spec_defaults
from codehub.crd_like.store.interface import Obj, StoreError

from . import desired_source, recovery
from .bodies import media_type, parse_document, require_body_type
from .clock import now_rfc3339
from .context import (
    WORKSPACES,
    ResourceKind,
    authorize,
    ctx_of,
    json_response,
    mark,
    read_body,
    store_error,
)
from .managed_fields import MAX_MANAGER_LENGTH, manager_of, record_update
from .patch import PatchError, PatchFormatError, json_patch, merge_patch
from .status import ApiError, bad_request
from .validation import (
    OPERATOR_FINALIZER,
    SERVER_METADATA,
    check_identity,
    finish,
    invalid_for,
    require_type_meta,
    validate,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class DryRun(Exception):
    """Aborts a store write after the result was computed (``dryRun=All``)."""

    def __init__(self, obj: Obj) -> None:
        super().__init__("dry run")
        self.obj = obj


def dry_run_of(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise bad_request(f'unsupported dryRun value "{v[:64]}": only "All"', "dryRun")
    return bool(values)


def spec_defaults(request: web.Request) -> SpecDefaults:
    cfg = ctx_of(request).config
    return _spec_defaults(cfg.default_image, cfg.default_standby_ttl, cfg.default_archive_ttl)


@functools.lru_cache(maxsize=16)
def _spec_defaults(image_ref: str, standby_ttl: int, archive_ttl: int) -> SpecDefaults:
    """One (frozen) SpecDefaults per configuration instead of one per request."""
    return SpecDefaults(
        image_ref=image_ref, standby_ttl_seconds=standby_ttl, archive_ttl_seconds=archive_ttl
    )


def field_manager(request: web.Request) -> str:
    """The manager recorded in managedFields: ``?fieldManager`` or the User-Agent."""
    raw = request.query.get("fieldManager")
    if raw is not None and (
        len(raw) > MAX_MANAGER_LENGTH or not raw.isprintable() or not raw.strip()
    ):
        raise bad_request(
            f"fieldManager must be 1 to {MAX_MANAGER_LENGTH} printable characters",
            "fieldManager",
        )
    return manager_of(raw, request.headers.get("User-Agent"))


def stamp_managed_fields(
    rk: ResourceKind, manager: str, old: Obj | None, new: Obj, sent: Any, now: str | None = None
) -> Obj:
    """Record ``manager``'s Update in ``new``'s managedFields (workspaces only).

    ``sent`` is the managedFields the request's result carried: a list different from
    the stored one replaces it first (as kube-apiserver allows, and as kubectl does when
    it migrates client-side apply ownership); anything else keeps the stored entries.
    """
    if rk is not WORKSPACES:
        return new
    stored = ((old or {}).get("metadata") or {}).get("managedFields")
    base = sent if isinstance(sent, list) and sent != stored else stored
    managed = record_update(
        old, new, base, manager, api_version=rk.api_version, now=now or now_rfc3339()
    )
    meta = new["metadata"]
    if managed:
        meta["managedFields"] = managed
    else:
        meta.pop("managedFields", None)
    return new


def _check_patch_type(request: web.Request, rk: ResourceKind, name: str) -> None:
    """A 415 for patch types custom resources do not support, as a real cluster answers."""
    media = media_type(request)
    if media not in (MERGE_PATCH, JSON_PATCH):
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {JSON_PATCH}, {MERGE_PATCH}",
            reason="UnsupportedMediaType",
            details={"name": name, "group": rk.group, "kind": rk.plural},
        )


def add_operator_finalizer(meta: dict[str, Any]) -> None:
    """Put the operator's finalizer on a new workspace, as a mutating admission step would.

    The operator would add it anyway before acting (kopf PATCHes its finalizer on the
    first event and only handles the workspace on the next one); present from the start,
    kopf runs the create handler on the ADDED event, one write and one watch round trip
    sooner (docs/adr/0009-lifecycle-and-scale-performance.md). A list the client sent is
    kept, the finalizer appended; anything else there is left to validation to refuse.
    """
    finalizers = meta.get("finalizers")
    if finalizers is None:
        meta["finalizers"] = [OPERATOR_FINALIZER]
    elif isinstance(finalizers, list) and OPERATOR_FINALIZER not in finalizers:
        finalizers.append(OPERATOR_FINALIZER)


def create_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        mark(request, "create", rk.plural)
        authorize(request, "create", rk, namespace)
        ctx = ctx_of(request)
        body = parse_document(await read_body(request), require_body_type(request))
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        check_identity(rk, body, namespace, None)
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
            recovery.strip(body)
            body["spec"] = apply_spec_defaults(body.get("spec"), spec_defaults(request))
            if ctx.config.finalizer_on_create:
                add_operator_finalizer(meta)
        validate(rk, body, check_status=False)
        name = meta["name"]
        stamp_managed_fields(rk, field_manager(request), None, body, None)
        if dry_run_of(request):
            return json_response(body, 201)
        try:
            created = await ctx.store.create(
                rk.plural, body, admit=ctx.admit if rk is WORKSPACES else None
            )
        except StoreError as exc:
            raise store_error(exc, rk, name) from None
        return json_response(created, 201)

    return handler


async def _write_document(request: web.Request, rk: ResourceKind, method: str) -> Any:
    """The decoded PUT or PATCH body, its shape checked for the method and patch type."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    if method == "PATCH":
        _check_patch_type(request, rk, name)
        media = media_type(request)
    else:
        media = require_body_type(request)
    doc = parse_document(
        await read_body(request), "application/json" if method == "PATCH" else media
    )
    if method == "PUT":
        if not isinstance(doc, dict):
            raise bad_request("the request body must be a JSON object")
        require_type_meta(doc)
        check_identity(rk, doc, namespace, name)
    elif media == MERGE_PATCH and not isinstance(doc, dict):
        raise bad_request("a JSON merge patch must be a JSON object")
    elif media == JSON_PATCH and not isinstance(doc, list):
        raise bad_request("a JSON Patch must be a JSON array of operations")
    return doc


def _apply(rk: ResourceKind, name: str, method: str, media: str, current: Obj, doc: Any) -> Any:
    if method == "PUT":
        return copy.deepcopy(doc)
    if media == MERGE_PATCH:
        return merge_patch(current, doc)
    try:
        return json_patch(current, doc)
    except PatchFormatError as exc:
        raise bad_request(str(exc)[:200]) from None
    except PatchError as exc:
        raise invalid_for(
            rk, name, [(exc.path.lstrip("/").replace("/", ".")[:200], str(exc)[:300])]
        ) from None


def _sent_managed_fields(changed: Any) -> Any:
    meta = changed.get("metadata") if isinstance(changed, dict) else None
    return meta.get("managedFields") if isinstance(meta, dict) else None


def _write_handler(rk: ResourceKind, subresource: str, method: str) -> Handler:
    verb = "update" if method == "PUT" else "patch"

    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        mark(request, verb, rk.plural)
        identity = authorize(request, verb, rk, namespace, name=name, subresource=subresource)
        ctx = ctx_of(request)
        doc = await _write_document(request, rk, method)
        media = media_type(request)
        dry_run = dry_run_of(request)
        defaults = spec_defaults(request) if rk is WORKSPACES else None
        manager = field_manager(request)
        recovering = rk is WORKSPACES and subresource == "" and recovery.requested(doc)
        if recovering:  # docs/errors.md#recovery
            await recovery.begin(ctx.store, identity, rk, namespace, name, dry_run=dry_run)

        def mutate(current: Obj) -> Obj:
            changed = _apply(rk, name, method, media, current, doc)
            sent = _sent_managed_fields(changed)
            result = finish(
                rk,
                current,
                changed,
                subresource=subresource,
                namespace=namespace,
                name=name,
                defaults=defaults,
                identity=identity,
                replacing=method == "PUT",
            )
            now = now_rfc3339()
            if rk is WORKSPACES and subresource == "":
                recovery.finish(result, recovering, now)
            if subresource == "":
                if rk is WORKSPACES:
                    desired_source.stamp(current, result, doc if method == "PATCH" else None, now)
                stamp_managed_fields(rk, manager, current, result, sent, now)
            if dry_run:
                raise DryRun(recovery.with_recovered_status(result) if recovering else result)
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
        except DryRun as exc:
            return json_response(exc.obj)
        except StoreError as exc:
            raise store_error(exc, rk, name) from None
        return json_response(obj)

    return handler


def put_handler(rk: ResourceKind, subresource: str = "") -> Handler:
    return _write_handler(rk, subresource, "PUT")


def patch_handler(rk: ResourceKind, subresource: str = "") -> Handler:
    return _write_handler(rk, subresource, "PATCH")


def delete_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        mark(request, "delete", rk.plural)
        authorize(request, "delete", rk, namespace, name=name)
        ctx = ctx_of(request)
        raw = await read_body(request)
        options: Any = {}
        if raw.strip():
            options = parse_document(raw, require_body_type(request))
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        pre = options.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise bad_request("preconditions must be an object", "preconditions")
        dry_run = dry_run_of(request) or bool(options.get("dryRun"))
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
            raise store_error(exc, rk, name) from None
        return json_response(obj)

    return handler
