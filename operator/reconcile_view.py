"""The reconciler's view of one workspace: what it reads and derives, no decisions.

``View`` is the status fields the reconciler reasons about; ``gather_facts`` asks the
adapters what really exists (classified by ``observation.instance_state_of``, the same
function the HealthMonitor's batch pass uses); ``Outcome`` is what one reconcile
achieved. The timing helpers read retry and timeout state from the status, so backoff and
timeouts survive a coordinator restart (docs/errors.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from codehub.adapters import naming
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    OperationTimeoutError,
    UnreachableError,
)
from codehub.operator.context import Obj, OperatorContext
from codehub.operator.observation import instance_state_of
from codehub.operator.planning import (
    DesiredState,
    InstanceState,
    ObservedStatus,
    Operation,
    parse_enum,
    plan,
)
from codehub.vocabulary.timestamps import parse_rfc3339

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What one ``reconcile`` call achieved.

    ``result``: ``done`` (nothing more to do now), ``retry`` (call again after
    ``delay`` seconds), ``terminal`` (an error that waits for an administrator).
    ``detail`` refines ``done``: ``converged``, ``deleted``, ``gone``, ``lost`` (another
    reconciler owns the operation), ``busy`` (a reconcile of this workspace is already
    running in this process; the gate runs it again afterwards).
    """

    result: Literal["done", "retry", "terminal"]
    delay: float = 0.0
    operation: Operation = Operation.NONE
    reason: str | None = None
    detail: str = ""

    @property
    def deleted(self) -> bool:
        return self.result == "done" and self.detail in ("deleted", "gone")


#: "Look again now": a step changed the workspace and the loop plans afresh.
AGAIN = Outcome("done", detail="again")


@dataclass(frozen=True)
class Facts:
    instance: InstanceState
    volume: bool
    endpoint: str | None = None


@dataclass
class View:
    """The fields of one workspace the reconciler reasons about."""

    obj: Obj
    ns: str
    name: str
    uid: str
    rv: str
    status: dict[str, Any]
    deleting: bool
    desired: DesiredState
    observed: ObservedStatus | None
    operation: Operation
    op_id: str | None
    op_started_at: datetime | None
    archive_key: str | None
    error_count: int
    error_info: dict[str, Any] | None
    previous_status: ObservedStatus | None

    @property
    def terminal(self) -> bool:
        return bool(self.error_info and self.error_info.get("is_terminal"))

    @property
    def reason(self) -> str | None:
        return str(self.error_info.get("reason")) if self.error_info else None

    @classmethod
    def of(cls, obj: Obj) -> View:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = dict(obj.get("status") or {})
        err = status.get("error_info")
        return cls(
            obj=obj,
            ns=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            rv=str(meta.get("resourceVersion") or ""),
            status=status,
            deleting=bool(meta.get("deletionTimestamp")),
            desired=parse_enum(DesiredState, spec.get("desired_state"), DesiredState.RUNNING)
            or DesiredState.RUNNING,
            observed=parse_enum(ObservedStatus, status.get("observed_status")),
            operation=parse_enum(Operation, status.get("operation"), Operation.NONE)
            or Operation.NONE,
            op_id=status.get("op_id") or None,
            op_started_at=parse_rfc3339(status.get("op_started_at")),
            archive_key=status.get("archive_key") or None,
            error_count=int(status.get("error_count") or 0),
            error_info=err if isinstance(err, dict) else None,
            previous_status=parse_enum(ObservedStatus, status.get("previous_status")),
        )


def needs_reconcile(body: Mapping[str, Any]) -> bool:
    """Whether a workspace looks unsettled, from its body alone (no I/O).

    The safety net applies it to each freshly listed workspace, so a settled one costs
    nothing; drift shows up here once the HealthMonitor has observed it.
    """
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    if meta.get("deletionTimestamp"):
        return True
    err = status.get("error_info")
    if isinstance(err, dict) and err.get("is_terminal"):
        return False
    operation = parse_enum(Operation, status.get("operation"), Operation.NONE)
    if operation is not Operation.NONE or err:
        return True
    observed = parse_enum(ObservedStatus, status.get("observed_status"))
    if observed is None or observed is ObservedStatus.ERROR:
        return True
    desired = parse_enum(DesiredState, spec.get("desired_state"), DesiredState.RUNNING)
    assert desired is not None
    return plan(observed, desired, Operation.NONE, status.get("archive_key"), False) is not (
        Operation.NONE
    )


async def gather_facts(ctx: OperatorContext, uid: str) -> Facts:
    """What exists for ``uid`` now: its container (classified) and its volume."""
    info, volume = await asyncio.gather(
        call_adapter("inspect", ctx.instances.inspect(uid)),
        call_adapter("volume_exists", ctx.storage.volume_exists(uid)),
    )
    state = instance_state_of(info)
    endpoint = info.upstream if info is not None and state is InstanceState.RUNNING else None
    return Facts(state, volume, endpoint)


def engine_error(exc: CodehubError) -> CodehubError:
    """``exc`` from gathering facts, said plainly: the facts come from the container
    engine alone, so an unreachable one is named as such (reason and code kept)."""
    if not isinstance(exc, UnreachableError):
        return exc
    return UnreachableError(
        f"container engine unreachable: {exc.message}", code=exc.code, context=exc.context
    )


async def call_adapter(action: str, call: Awaitable[T]) -> T:
    """Adapters raise CodehubError; anything else is a bug there, reported as ActionFailed."""
    try:
        return await call
    except (CodehubError, asyncio.CancelledError):
        raise
    except TimeoutError as exc:
        raise UnreachableError(f"{action} timed out") from exc
    except Exception as exc:
        raise ActionFailedError(f"{action} failed: {type(exc).__name__}") from exc


def timeout_for(ctx: OperatorContext, op: Operation) -> float:
    s = ctx.settings
    return {
        Operation.PROVISIONING: s.timeout_provisioning,
        Operation.RESTORING: s.timeout_restoring,
        Operation.STARTING: s.timeout_starting,
        Operation.STOPPING: s.timeout_stopping,
        Operation.ARCHIVING: s.timeout_archiving,
        Operation.DELETING: s.timeout_deleting,
    }.get(op, s.timeout_starting)


def remaining(ctx: OperatorContext, w: View, op: Operation) -> float:
    """Seconds left before ``op`` times out, counted from its claim (across retries)."""
    limit = timeout_for(ctx, op)
    if w.op_started_at is None:
        return limit
    return limit - (ctx.clock.now() - w.op_started_at).total_seconds()


def timeout_error(ctx: OperatorContext, op: Operation) -> OperationTimeoutError:
    limit = timeout_for(ctx, op)
    return OperationTimeoutError(
        f"{op.value} did not complete within {limit:g} s", context={"timeout_seconds": limit}
    )


def backoff_remaining(ctx: OperatorContext, w: View) -> float:
    """Seconds until the next attempt of a failed operation may run (0: now)."""
    if not w.error_info or w.terminal:
        return 0.0
    occurred = parse_rfc3339(w.error_info.get("occurred_at"))
    if occurred is None:
        return 0.0
    wait = float((w.error_info.get("context") or {}).get("retry_after_seconds") or 0)
    return max((occurred - ctx.clock.now()).total_seconds() + wait, 0.0)


def own_archive(w: View) -> str | None:
    """The archive_key if it is this operation's; an older archive does not count."""
    if (
        w.archive_key
        and w.op_id
        and w.archive_key.startswith(naming.archive_prefix(w.uid, w.op_id))
    ):
        return w.archive_key
    return None


def api_retry_delay(ctx: OperatorContext) -> float:
    return min(ctx.settings.reconciler_retry_backoff, ctx.settings.reconciler_interval)
