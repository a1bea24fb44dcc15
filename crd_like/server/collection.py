"""DELETE on a collection URL (``deletecollection``), with label and field selectors.

Each matching object is deleted as a single DELETE would: one with finalizers stays,
with ``deletionTimestamp`` set, until its last finalizer is removed. The answer is the
List of the objects as each delete returned them, which is what kube-apiserver sends
for custom resources; a selector matching nothing deletes nothing and answers an empty
List. An object that disappears between the list and its delete (another client won
the race) is skipped.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from codehub.crd_like.store.interface import NotFound, Obj, StoreError

from .bodies import parse_document, require_body_type
from .context import (
    ResourceKind,
    authorize,
    ctx_of,
    json_response,
    mark,
    read_body,
    selectors_of,
    store_error,
)
from .reads import list_meta
from .status import bad_request
from .writes import Handler, dry_run_of


async def _options(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    options = parse_document(raw, require_body_type(request))
    if not isinstance(options, dict):
        raise bad_request("DeleteOptions must be a JSON object")
    if options.get("preconditions"):
        raise bad_request(
            "preconditions are not supported when deleting a collection", "preconditions"
        )
    dry = options.get("dryRun")
    if dry not in (None, [], ["All"]):
        raise bad_request('unsupported dryRun value: only ["All"]', "dryRun")
    return options


def delete_collection_handler(rk: ResourceKind) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        mark(request, "deletecollection", rk.plural)
        authorize(request, "deletecollection", rk, namespace)
        selectors = selectors_of(request, rk)
        options = await _options(request)
        dry_run = dry_run_of(request) or bool(options.get("dryRun"))
        store = ctx_of(request).store
        try:
            listed = await store.list(rk.plural, namespace=namespace, selectors=selectors)
        except StoreError as exc:
            raise store_error(exc, rk, "") from None
        items: list[Obj] = []
        for obj in listed.items:
            name = obj["metadata"]["name"]
            if dry_run:
                items.append(obj)
                continue
            try:
                deleted, _removed = await store.delete(rk.plural, namespace, name)
            except NotFound:
                continue
            except StoreError as exc:
                raise store_error(exc, rk, name) from None
            items.append(deleted)
        revision = listed.revision if dry_run else await store.current_revision()
        return json_response(
            {
                "apiVersion": rk.api_version,
                "kind": rk.list_kind,
                "metadata": list_meta(revision, None),
                "items": items,
            }
        )

    return handler
