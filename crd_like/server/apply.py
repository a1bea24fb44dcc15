"""Server-side apply of Workspaces: PATCH with ``application/apply-patch+yaml``.

``kubectl apply --server-side``, Flux and Argo CD send the fields they manage and a
``fieldManager``; the server merges them, records ownership in
``metadata.managedFields`` (logic in ``managed_fields``) and answers 409 with the
conflicting fields and managers when another manager owns a field the configuration
changes, unless ``?force=true``. Applying to a workspace that does not exist creates
it. Other patch types go to the ordinary patch handler.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from codehub.crd_like.models import apply_spec_defaults
from codehub.crd_like.store.interface import Conflict, NotFound, Obj, StoreError
from codehub.vocabulary.timestamps import now_rfc3339

from . import desired_source
from .bodies import media_type, parse_document
from .context import (
    WORKSPACES,
    ResourceKind,
    authorize,
    ctx_of,
    json_response,
    mark,
    query_bool,
    read_body,
    store_error,
)
from .managed_fields import (
    ApplyConflicts,
    apply_config,
    apply_or_upgrade,
    conflict_message,
    dotted,
)
from .status import ApiError, bad_request
from .validation import check_identity, finish, invalid_for, structure_errors, validate
from .writes import (
    APPLY_PATCH,
    DryRun,
    Handler,
    dry_run_of,
    field_manager,
    patch_handler,
    spec_defaults,
)


def patch_or_apply_handler(rk: ResourceKind) -> Handler:
    """PATCH on a workspace: server-side apply for apply patches, else merge/JSON patch."""
    plain = patch_handler(rk)

    async def handler(request: web.Request) -> web.StreamResponse:
        if rk is WORKSPACES and media_type(request) == APPLY_PATCH:
            return await apply_handler(request)
        return await plain(request)

    return handler


def _conflict(rk: ResourceKind, name: str, exc: ApplyConflicts) -> ApiError:
    return ApiError(
        409,
        conflict_message(exc.conflicts, rk.api_version),
        reason="Conflict",
        details={"name": name, "group": rk.group, "kind": rk.plural},
        causes=[
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{c.manager}" using {rk.api_version}',
                "field": dotted(c.path),
            }
            for c in exc.conflicts
        ],
    )


async def _configuration(request: web.Request, rk: ResourceKind) -> Obj:
    """The apply configuration, checked before anything is read or written."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    if "fieldManager" not in request.query:
        raise bad_request(
            "PATCH requests with apply-patch+yaml need a fieldManager", "fieldManager"
        )
    doc = parse_document(await read_body(request), "application/yaml")
    if not isinstance(doc, dict):
        raise bad_request("an apply configuration must be a YAML or JSON object")
    for key in ("apiVersion", "kind"):
        if not doc.get(key):
            raise bad_request(f"Object '{key}' is missing in the apply configuration", key)
    check_identity(rk, doc, namespace, name)
    if doc["metadata"].get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil", "metadata.managedFields")
    causes = structure_errors(doc, top_level=True)
    if causes:
        raise invalid_for(rk, name, causes)
    doc.pop("status", None)
    return doc


async def apply_handler(request: web.Request) -> web.StreamResponse:
    rk = WORKSPACES
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    mark(request, "patch", rk.plural)
    identity = authorize(request, "patch", rk, namespace, name=name)
    config = await _configuration(request, rk)
    manager = field_manager(request)
    force = query_bool(request, "force")
    dry_run = dry_run_of(request)
    defaults = spec_defaults(request)
    ctx = ctx_of(request)

    def mutate(current: Obj) -> Obj:
        wanted = config["metadata"].get("resourceVersion")
        if wanted and str(wanted) != current["metadata"].get("resourceVersion"):
            raise Conflict("resourceVersion is stale")
        merged, managed = apply_or_upgrade(
            current, config, manager, force=force, api_version=rk.api_version, now=now_rfc3339()
        )
        result = finish(
            rk,
            current,
            merged,
            subresource="",
            namespace=namespace,
            name=name,
            defaults=defaults,
            identity=identity,
        )
        desired_source.stamp(current, result)
        _set_managed(result, managed)
        if dry_run:
            raise DryRun(result)
        return result

    try:
        obj = await ctx.store.update(rk.plural, namespace, name, mutate, admit=ctx.admit)
    except DryRun as exc:
        return json_response(exc.obj)
    except ApplyConflicts as exc:
        raise _conflict(rk, name, exc) from None
    except NotFound:
        return await _create(request, config, manager, dry_run)
    except StoreError as exc:
        raise store_error(exc, rk, name) from None
    return json_response(obj)


def _set_managed(obj: Obj, managed: list[Obj]) -> None:
    if managed:
        obj["metadata"]["managedFields"] = managed
    else:
        obj["metadata"].pop("managedFields", None)


async def _create(
    request: web.Request, config: Obj, manager: str, dry_run: bool
) -> web.StreamResponse:
    """Apply to a workspace that does not exist creates it, as on a real cluster."""
    rk = WORKSPACES
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    authorize(request, "create", rk, namespace, name=name)
    body, managed = apply_config(
        None, config, manager, force=False, api_version=rk.api_version, now=now_rfc3339()
    )
    body["apiVersion"], body["kind"] = rk.api_version, rk.kind
    body["metadata"] = {**body.get("metadata", {}), "name": name, "namespace": namespace}
    body["spec"] = apply_spec_defaults(body.get("spec"), spec_defaults(request))
    validate(rk, body, check_status=False)
    _set_managed(body, managed)
    if dry_run:
        return json_response(body, 201)
    ctx = ctx_of(request)
    try:
        created: Any = await ctx.store.create(rk.plural, body, admit=ctx.admit)
    except StoreError as exc:
        raise store_error(exc, rk, name) from None
    return json_response(created, 201)
