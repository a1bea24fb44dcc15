"""The reconciler's fenced status writes (docs/state-machine.md).

* ``write_rv_fenced``: claiming an operation, or recording an error found by observation,
  tests ``/metadata/resourceVersion`` and replaces ``/status``: a compare-and-set;
* ``write_op_fenced``: every later write of a claimed operation tests ``/status/op_id``
  and ``/status/operation``, so a reconciler that lost its operation cannot change anything.
"""

from __future__ import annotations

from typing import Any

from codehub.adapters.errors import UnreachableError
from codehub.crd_like.client.api import ApiError
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.reconcile_view import View


class LostOwnership(Exception):
    """A fenced status write failed: someone else changed the operation."""


async def write_rv_fenced(ctx: OperatorContext, w: View, status: dict[str, Any]) -> Obj:
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": w.rv},
        {"op": "add", "path": "/status", "value": status},
    ]
    return await _patch(ctx, w, ops)


async def write_op_fenced(ctx: OperatorContext, w: View, changes: dict[str, Any]) -> Obj:
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/status/op_id", "value": w.op_id},
        {"op": "test", "path": "/status/operation", "value": w.operation.value},
    ]
    ops += [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in changes.items()]
    return await _patch(ctx, w, ops)


async def _patch(ctx: OperatorContext, w: View, ops: list[dict[str, Any]]) -> Obj:
    try:
        return await ctx.api.patch_json(w.ns, w.name, ops, status=True)
    except ApiError as exc:
        if exc.not_found or exc.conflict or exc.invalid:
            raise LostOwnership(str(exc)) from exc
        raise UnreachableError(f"status write failed: HTTP {exc.status} {exc.reason}") from exc


def replace_status(w: View, status: dict[str, Any]) -> View:
    obj = dict(w.obj)
    obj["status"] = status
    return View.of(obj)


def written_view(w: View, obj: Obj, status: dict[str, Any]) -> View:
    """The view after a write: the server's answer, else ours with ``status``."""
    return View.of(obj) if obj.get("metadata") else replace_status(w, status)
