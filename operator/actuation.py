"""Running one operation's actuators, in order (docs/state-machine.md).

Only adapter calls and the one status write that must happen between two of them
(``archive_key`` before the volume is deleted). Whether the operation is complete is
decided afterwards from observation, never here; errors are raised for ``failures``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from codehub.adapters import naming
from codehub.adapters.errors import DataLostError, ErrorCode, MismatchError
from codehub.adapters.interfaces import InstanceSpec, Resources
from codehub.operator.context import OperatorContext
from codehub.operator.planning import Operation
from codehub.operator.progress import reporting
from codehub.operator.reconcile_view import View, call_adapter, own_archive
from codehub.operator.status_writes import write_op_fenced, written_view

T = TypeVar("T")


async def actuate(ctx: OperatorContext, w: View, op: Operation) -> tuple[View, bool]:
    """Run the actuators of ``op`` in order; returns (view, restore_returned)."""
    uid = w.uid
    labels = naming.workspace_labels(uid, w.ns, w.name)
    if op is Operation.PROVISIONING:
        await timed(ctx, "provision", ctx.storage.provision(uid, labels))
    elif op is Operation.RESTORING:
        if not w.archive_key:
            raise MismatchError("RESTORING without an archive_key")
        await timed(ctx, "provision", ctx.storage.provision(uid, labels))
        async with reporting(ctx, w, op) as on_progress:
            restore = ctx.storage.restore(uid, w.archive_key, on_progress=on_progress)
            await timed(ctx, "restore", restore)
        return w, True
    elif op is Operation.STARTING:
        if not await call_adapter("volume_exists", ctx.storage.volume_exists(uid)):
            raise DataLostError(
                "home volume is missing; refusing to start without it",
                code=ErrorCode.VOLUME_NOT_FOUND,
            )
        await timed(ctx, "start", ctx.instances.start(instance_spec(ctx, w, labels)))
    elif op is Operation.STOPPING:
        await timed(ctx, "stop", ctx.instances.delete(uid))
    elif op is Operation.ARCHIVING:
        key = own_archive(w)
        if key is None:
            assert w.op_id is not None
            async with reporting(ctx, w, op) as on_progress:
                archive = ctx.storage.archive(uid, w.op_id, on_progress=on_progress)
                key = await timed(ctx, "archive", archive)
            w = await save_archive_key(ctx, w, key)
        await timed(ctx, "stop", ctx.instances.delete(uid))
        await timed(ctx, "delete_volume", ctx.storage.delete_volume(uid))
    elif op is Operation.DELETING:
        await timed(ctx, "stop", ctx.instances.delete(uid))
        await timed(ctx, "delete_volume", ctx.storage.delete_volume(uid))
    return w, False


def instance_spec(ctx: OperatorContext, w: View, labels: dict[str, str]) -> InstanceSpec:
    spec = w.obj.get("spec") or {}
    res = spec.get("resources") or {}
    return InstanceSpec(
        uid=w.uid,
        image_ref=str(spec.get("image_ref") or ctx.settings.default_image),
        resources=Resources(cpu=res.get("cpu"), memory=res.get("memory")),
        labels=labels,
    )


async def save_archive_key(ctx: OperatorContext, w: View, key: str) -> View:
    """The archive_key is durable before the volume may be deleted."""
    obj = await write_op_fenced(ctx, w, {"archive_key": key})
    return written_view(w, obj, {**w.status, "archive_key": key})


async def timed(ctx: OperatorContext, action: str, call: Awaitable[T]) -> T:
    start = ctx.clock.monotonic()
    try:
        return await call_adapter(action, call)
    finally:
        ctx.metrics.actuator_duration.labels(action=action).observe(
            max(ctx.clock.monotonic() - start, 0.0)
        )
