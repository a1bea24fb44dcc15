"""The StateReconciler: one level-triggered entry point, ``reconcile(ctx, obj)``.

Every call re-reads the workspace and the real resources and recomputes what to do
(SPEC §4); kopf events, the SafetyNet pass and hints only decide *when* it runs. One call may drive
several steps (PENDING -> STANDBY -> RUNNING): after each completed operation it re-reads
the resource and plans again, which is also how a desired change made during an operation
is applied after it.

Writes and their fences (the reconciler owns operation, op_id, op_started_at,
archive_key, error_count, error_info, previous_status):

* claiming an operation, and recording an error found by observation, is a JSON Patch
  that tests ``/metadata/resourceVersion`` and replaces ``/status`` with the status just
  read plus the change: the compare-and-set of SPEC §4;
* every later write of a claimed operation tests ``/status/op_id`` and
  ``/status/operation``, so a reconciler that lost its operation (a new leader took over,
  an administrator recovered it) can no longer change anything.

Errors leave in exactly three shapes (``Outcome.result``): ``done``, ``retry`` after a
delay, ``terminal``, decided in one place (``_fail``). Retry state lives in the status
(``error_count``, ``error_info.occurred_at`` and ``context.retry_after_seconds``), so
backoff survives a coordinator restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from codehub.adapters import naming
from codehub.adapters.errors import (
    RETRY_BUDGET,
    ActionFailedError,
    CodehubError,
    DataLostError,
    ErrorCode,
    MismatchError,
    OperationTimeoutError,
    Reason,
    UnreachableError,
)
from codehub.adapters.interfaces import InstanceSpec, Resources
from codehub.crd_like.client.api import ApiError
from codehub.operator import kube_events
from codehub.operator.context import Flight, Obj, OperatorContext
from codehub.operator.observation import ErrorRule, observe_detail
from codehub.operator.planning import (
    DesiredState,
    InstanceState,
    ObservedStatus,
    Operation,
    is_complete,
    parse_enum,
    plan,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Steps one call may take before yielding (a full PENDING -> RUNNING needs about 6).
MAX_STEPS = 24
#: Backoff grows as base * 2**(n-1), capped at base * this factor.
BACKOFF_CAP_FACTOR = 8
_MESSAGE_LIMIT = 2000


@dataclass(frozen=True)
class Outcome:
    """What one ``reconcile`` call achieved.

    ``result``: ``done`` (nothing more to do now), ``retry`` (call again after
    ``delay`` seconds), ``terminal`` (an error that waits for an administrator).
    ``detail`` refines ``done``: ``converged``, ``deleted``, ``gone``, ``lost`` (another
    reconciler owns the operation), ``busy`` (a reconcile of this workspace is already
    running in this process; it will pick the request up).
    """

    result: Literal["done", "retry", "terminal"]
    delay: float = 0.0
    operation: Operation = Operation.NONE
    reason: str | None = None
    detail: str = ""

    @property
    def deleted(self) -> bool:
        return self.result == "done" and self.detail in ("deleted", "gone")


_AGAIN = Outcome("done", detail="again")


class _LostOwnership(Exception):
    """A fenced status write failed: someone else changed the operation."""


@dataclass(frozen=True)
class Facts:
    instance: InstanceState
    volume: bool


@dataclass
class _View:
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

    @classmethod
    def of(cls, obj: Obj) -> _View:
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
            op_started_at=parse_time(status.get("op_started_at")),
            archive_key=status.get("archive_key") or None,
            error_count=int(status.get("error_count") or 0),
            error_info=err if isinstance(err, dict) else None,
            previous_status=parse_enum(ObservedStatus, status.get("previous_status")),
        )


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


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


def retry_budget(ctx: OperatorContext, reason: Reason) -> int:
    """SPEC §6 budget; RECONCILER_MAX_RETRIES sets it for the reasons that have one."""
    return ctx.settings.reconciler_max_retries if RETRY_BUDGET.get(reason, 0) > 0 else 0


def backoff_delay(ctx: OperatorContext, attempt: int) -> float:
    base = ctx.settings.reconciler_retry_backoff
    delay = min(base * float(2 ** max(attempt - 1, 0)), base * BACKOFF_CAP_FACTOR)
    return delay * random.uniform(0.9, 1.1)


# -- the entry point ---------------------------------------------------------------------


async def reconcile(ctx: OperatorContext, obj: Mapping[str, Any]) -> Outcome:
    """Converge one workspace as far as possible now; see the module docstring."""
    meta = obj.get("metadata") or {}
    ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
    deleting = bool(meta.get("deletionTimestamp"))
    flight = ctx.inflight.get(uid)
    if flight is not None:
        flight.dirty = True
        ctx.metrics.reconcile_total.labels(operation="NONE", result="busy").inc()
        if deleting:
            return Outcome("retry", delay=1.0, detail="busy")
        return Outcome("done", detail="busy")
    flight = Flight()
    ctx.inflight[uid] = flight
    try:
        for _ in range(MAX_STEPS):
            flight.dirty = False
            try:
                outcome = await _step(ctx, ns, name, uid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile of %s/%s failed unexpectedly", ns, name)
                outcome = Outcome("retry", delay=ctx.settings.reconciler_interval, detail="bug")
            if outcome is _AGAIN or (outcome.result == "done" and flight.dirty):
                continue
            ctx.metrics.reconcile_total.labels(
                operation=outcome.operation.value, result=outcome.detail or outcome.result
            ).inc()
            return outcome
        return Outcome("retry", delay=1.0, detail="more")
    finally:
        ctx.inflight.pop(uid, None)


async def record_observed_error(ctx: OperatorContext, ns: str, name: str) -> Outcome:
    """Record, as a terminal error, a problem observation found with no operation running
    (data vanished, a container without its volume), and nothing else.

    The HealthMonitor calls this before it writes such an ERROR, so ``previous_status``
    still holds what was observed before. Unlike ``reconcile`` it never claims or runs an
    operation, so an observation pass is never held up by actuators.
    """
    try:
        w = _View.of(await ctx.api.get(ns, name))
    except ApiError as exc:
        if exc.status == 404:
            return Outcome("done", detail="gone")
        return Outcome("retry", delay=_api_retry_delay(ctx), detail="api")
    if w.terminal or w.deleting or w.operation is not Operation.NONE or w.uid in ctx.inflight:
        return Outcome("done", detail="skipped")
    ctx.inflight[w.uid] = Flight()
    try:
        facts = await gather_facts(ctx, w.uid)
        obs = observe_detail(
            facts.instance,
            facts.volume,
            terminal_error=False,
            previous=w.observed,
            operation=w.operation,
            archive_key=w.archive_key,
            previous_status=w.previous_status,
        )
        if obs.status is not ObservedStatus.ERROR:
            return Outcome("done", detail="converged")
        failure = ObservationFailure(obs.error_rule, facts.instance)
        outcome = await _fail(
            ctx, w, Operation.NONE, _observed_error(obs.error_rule), observed=failure
        )
        return Outcome("done", detail="lost") if outcome is _AGAIN else outcome
    except CodehubError as exc:
        log.warning("cannot observe %s/%s: %s", ns, name, exc)
        return Outcome("retry", delay=_api_retry_delay(ctx), detail="observe")
    finally:
        ctx.inflight.pop(w.uid, None)


def needs_reconcile(body: Mapping[str, Any]) -> bool:
    """Whether a workspace looks unsettled, from its body alone (no I/O).

    The SafetyNet applies it to each freshly listed workspace, so a settled one costs
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


class SafetyNet:
    """The reconciler's periodic pass (SPEC §4): every ``RECONCILER_INTERVAL``, one API
    list, and a background ``reconcile`` (at most ``max_concurrent`` at a time) of every
    workspace that looks unsettled (``needs_reconcile``); a settled one costs nothing.

    It works from a fresh listing on purpose: kopf's per-object timers see the body kopf
    last processed, which was seen to lag behind the resource for minutes. ``nudge`` is
    also how the HealthMonitor hands over the drift it just observed. Everything it
    started is cancelled with ``run`` (or by ``stop``), so nothing outlives leadership.
    """

    def __init__(self, ctx: OperatorContext, *, max_concurrent: int = 8) -> None:
        self.ctx = ctx
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_concurrent)

    async def run(self) -> None:
        try:
            while True:
                await self.ctx.clock.sleep(self.ctx.settings.reconciler_interval)
                try:
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("reconciler pass failed: %s", exc)
        finally:
            await self.stop()

    async def pass_once(self) -> int:
        listing = await self.ctx.api.list(None)
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        return self.nudge(i for i in items if needs_reconcile(i))

    def nudge(self, objs: Iterable[Obj]) -> int:
        """Reconcile these workspaces in the background; returns how many were started."""
        started = 0
        for obj in objs:
            uid = str((obj.get("metadata") or {}).get("uid") or "")
            if not uid or uid in self._tasks or uid in self.ctx.inflight:
                continue
            task = asyncio.create_task(self._reconcile(obj), name=f"reconcile-{uid}")
            self._tasks[uid] = task
            task.add_done_callback(functools.partial(self._done, uid))
            started += 1
        return started

    @property
    def pending(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    async def stop(self) -> None:
        tasks = self.pending
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _done(self, uid: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(uid, None)

    async def _reconcile(self, obj: Obj) -> None:
        async with self._slots:
            try:
                await reconcile(self.ctx, obj)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background reconcile failed")


async def gather_facts(ctx: OperatorContext, uid: str) -> Facts:
    running, volume = await asyncio.gather(
        _adapter("is_running", ctx.instances.is_running(uid)),
        _adapter("volume_exists", ctx.storage.volume_exists(uid)),
    )
    return Facts(InstanceState.RUNNING if running else InstanceState.ABSENT, volume)


async def _step(ctx: OperatorContext, ns: str, name: str, uid: str) -> Outcome:
    try:
        obj = await ctx.api.get(ns, name)
    except ApiError as exc:
        if exc.status == 404:
            return Outcome("done", detail="gone")
        log.warning("cannot read %s/%s: %s", ns, name, exc)
        return Outcome("retry", delay=_api_retry_delay(ctx), detail="api")
    w = _View.of(obj)
    if w.uid != uid:
        return Outcome("done", detail="gone")  # the name now belongs to another workspace
    if w.terminal and (not w.deleting or w.operation is Operation.DELETING):
        return Outcome("terminal", operation=w.operation, reason=_reason(w), detail="held")
    resuming = w.operation is not Operation.NONE and not (
        w.deleting and w.operation is not Operation.DELETING
    )
    if resuming:
        wait = _backoff_remaining(ctx, w)
        if wait > 0:  # before any engine call: an early wake-up must not spend the budget
            return Outcome("retry", delay=wait, operation=w.operation, detail="backoff")

    try:
        facts = await gather_facts(ctx, uid)
    except CodehubError as exc:
        if w.operation is Operation.NONE:
            log.warning("cannot observe %s/%s: %s", ns, name, exc)
            return Outcome("retry", delay=_api_retry_delay(ctx), detail="observe")
        return await _fail(ctx, w, w.operation, exc)

    if not resuming:
        return await _plan_and_claim(ctx, w, facts)
    return await _continue(ctx, w, facts)


async def _plan_and_claim(ctx: OperatorContext, w: _View, facts: Facts) -> Outcome:
    if w.deleting and is_complete(Operation.DELETING, facts.instance, facts.volume, None):
        return Outcome("done", operation=Operation.DELETING, detail="deleted")
    obs = observe_detail(
        facts.instance,
        facts.volume,
        terminal_error=False,
        previous=w.observed,
        operation=w.operation,
        archive_key=w.archive_key,
        previous_status=w.previous_status,
    )
    if obs.status is ObservedStatus.ERROR and not w.deleting:
        failure = ObservationFailure(obs.error_rule, facts.instance)
        return await _fail(
            ctx, w, Operation.NONE, _observed_error(obs.error_rule), observed=failure
        )
    target = plan(obs.status, w.desired, Operation.NONE, w.archive_key, w.deleting)
    if target is Operation.NONE:
        return Outcome("done", detail="converged")
    op_id = w.op_id or str(uuid.uuid4())
    if w.operation is not Operation.NONE and w.operation is not target:
        op_id = str(uuid.uuid4())  # overriding another operation (deletion)
    now = ctx.clock.now()
    status = dict(w.status)
    status.update(
        operation=target.value,
        op_id=op_id,
        op_started_at=format_time(now),
        error_count=0,
        error_info=None,
    )
    try:
        obj = await _write_rv_fenced(ctx, w, status)
    except _LostOwnership:
        return await _after_lost_claim(ctx, w)
    claimed = _View.of(obj) if obj.get("metadata") else _replace_status(w, status)
    log.info("%s/%s: claimed %s op_id=%s", w.ns, w.name, target.value, op_id)
    await kube_events.post(
        ctx, claimed.obj, kube_events.OPERATION_STARTED, f"{target.value} started (op_id {op_id})"
    )
    return await _run(ctx, claimed, target, facts)


async def _after_lost_claim(ctx: OperatorContext, w: _View) -> Outcome:
    """A claim's compare-and-set failed: plan again unless another reconciler claimed."""
    try:
        fresh = _View.of(await ctx.api.get(w.ns, w.name))
    except ApiError:
        return Outcome("retry", delay=1.0, detail="lost")
    if fresh.operation is w.operation and fresh.op_id == w.op_id:
        return _AGAIN  # an unrelated write (observation, metadata) moved the version
    return Outcome("done", operation=fresh.operation, detail="lost")


async def _continue(ctx: OperatorContext, w: _View, facts: Facts) -> Outcome:
    """An operation is already claimed (its backoff is over): time it out or resume it."""
    op = w.operation
    if _remaining(ctx, w, op) <= 0:
        return await _fail(ctx, w, op, _timeout_error(ctx, op))
    if op is not Operation.RESTORING and is_complete(
        op, facts.instance, facts.volume, _own_archive(w)
    ):
        return await _complete(ctx, w, op)
    return await _run(ctx, w, op, facts)


def _backoff_remaining(ctx: OperatorContext, w: _View) -> float:
    """Seconds until the next attempt of a failed operation may run (0: now)."""
    if not w.error_info or w.terminal:
        return 0.0
    occurred = parse_time(w.error_info.get("occurred_at"))
    if occurred is None:
        return 0.0
    wait = float((w.error_info.get("context") or {}).get("retry_after_seconds") or 0)
    return max((occurred - ctx.clock.now()).total_seconds() + wait, 0.0)


def _remaining(ctx: OperatorContext, w: _View, op: Operation) -> float:
    limit = timeout_for(ctx, op)
    if w.op_started_at is None:
        return limit
    return limit - (ctx.clock.now() - w.op_started_at).total_seconds()


def _timeout_error(ctx: OperatorContext, op: Operation) -> OperationTimeoutError:
    limit = timeout_for(ctx, op)
    return OperationTimeoutError(
        f"{op.value} did not complete within {limit:g} s", context={"timeout_seconds": limit}
    )


def _own_archive(w: _View) -> str | None:
    """The archive_key if it is this operation's; an older archive does not count."""
    if (
        w.archive_key
        and w.op_id
        and w.archive_key.startswith(naming.archive_prefix(w.uid, w.op_id))
    ):
        return w.archive_key
    return None


# -- running an operation ----------------------------------------------------------------


async def _run(ctx: OperatorContext, w: _View, op: Operation, facts: Facts) -> Outcome:
    remaining = _remaining(ctx, w, op)
    if remaining <= 0:
        return await _fail(ctx, w, op, _timeout_error(ctx, op))
    try:
        async with asyncio.timeout(remaining):
            w, restore_returned = await _actuate(ctx, w, op)
    except TimeoutError:
        return await _fail(ctx, w, op, _timeout_error(ctx, op))
    except _LostOwnership:
        return Outcome("done", operation=op, detail="lost")
    except CodehubError as exc:
        return await _fail(ctx, w, op, exc)
    try:
        facts = await gather_facts(ctx, w.uid)
    except CodehubError as exc:
        return await _fail(ctx, w, op, exc)
    if is_complete(op, facts.instance, facts.volume, _own_archive(w), restore_returned):
        return await _complete(ctx, w, op)
    after = observe_detail(
        facts.instance,
        facts.volume,
        terminal_error=False,
        previous=w.observed,
        operation=op,
        archive_key=w.archive_key,
        previous_status=w.previous_status,
    )
    if after.error_rule is ErrorRule.DATA_LOST and op is not Operation.DELETING:
        return await _fail(ctx, w, op, _observed_error(after.error_rule))
    return await _fail(
        ctx,
        w,
        op,
        MismatchError(
            f"{op.value} actuators succeeded but observation disagrees "
            f"(container {facts.instance.value}, volume {'present' if facts.volume else 'absent'})",
            context={"instance": facts.instance.value, "volume": facts.volume},
        ),
    )


async def _actuate(ctx: OperatorContext, w: _View, op: Operation) -> tuple[_View, bool]:
    """Run the SPEC §3 actuators of ``op`` in order; returns (view, restore_returned)."""
    uid = w.uid
    labels = naming.workspace_labels(uid, w.ns, w.name)
    pauses = ctx.pauses
    restore_returned = False
    if op is Operation.PROVISIONING:
        await _pause(ctx, pauses, "provision")
        await _timed(ctx, "provision", ctx.storage.provision(uid, labels))
    elif op is Operation.RESTORING:
        if not w.archive_key:
            raise MismatchError("RESTORING without an archive_key")
        await _timed(ctx, "provision", ctx.storage.provision(uid, labels))
        await _pause(ctx, pauses, "restore")
        await _timed(ctx, "restore", ctx.storage.restore(uid, w.archive_key))
        restore_returned = True
    elif op is Operation.STARTING:
        if not await _adapter("volume_exists", ctx.storage.volume_exists(uid)):
            raise DataLostError(
                "home volume is missing; refusing to start without it",
                code=ErrorCode.VOLUME_NOT_FOUND,
            )
        await _pause(ctx, pauses, "start")
        await _timed(ctx, "start", ctx.instances.start(_instance_spec(ctx, w, labels)))
    elif op is Operation.STOPPING:
        await _pause(ctx, pauses, "stop")
        await _timed(ctx, "stop", ctx.instances.delete(uid))
    elif op is Operation.ARCHIVING:
        key = _own_archive(w)
        if key is None:
            assert w.op_id is not None
            key = await _timed(ctx, "archive", ctx.storage.archive(uid, w.op_id))
            await _pause(ctx, pauses, "archive")
            w = await _save_archive_key(ctx, w, key)
        await _timed(ctx, "stop", ctx.instances.delete(uid))
        await _pause(ctx, pauses, "delete_volume")
        await _timed(ctx, "delete_volume", ctx.storage.delete_volume(uid))
    elif op is Operation.DELETING:
        await _timed(ctx, "stop", ctx.instances.delete(uid))
        await _pause(ctx, pauses, "delete_volume")
        await _timed(ctx, "delete_volume", ctx.storage.delete_volume(uid))
    return w, restore_returned


def _instance_spec(ctx: OperatorContext, w: _View, labels: dict[str, str]) -> InstanceSpec:
    spec = w.obj.get("spec") or {}
    res = spec.get("resources") or {}
    return InstanceSpec(
        uid=w.uid,
        image_ref=str(spec.get("image_ref") or ctx.settings.default_image),
        resources=Resources(cpu=res.get("cpu"), memory=res.get("memory")),
        labels=labels,
    )


async def _save_archive_key(ctx: OperatorContext, w: _View, key: str) -> _View:
    """SPEC §4: the archive_key is durable before the volume may be deleted."""
    obj = await _write_op_fenced(ctx, w, {"archive_key": key})
    status = dict(w.status)
    status["archive_key"] = key
    return _View.of(obj) if obj.get("metadata") else _replace_status(w, status)


async def _pause(ctx: OperatorContext, pauses: dict[str, float], action: str) -> None:
    seconds = pauses.get(action)
    if seconds:
        log.warning("test hook: pausing %s for %g s", action, seconds)
        await ctx.clock.sleep(seconds)


async def _timed(ctx: OperatorContext, action: str, call: Awaitable[T]) -> T:
    start = ctx.clock.monotonic()
    try:
        return await _adapter(action, call)
    finally:
        ctx.metrics.actuator_duration.labels(action=action).observe(
            max(ctx.clock.monotonic() - start, 0.0)
        )


async def _adapter(action: str, call: Awaitable[T]) -> T:
    """Adapters raise CodehubError; anything else is a bug there, reported as ActionFailed."""
    try:
        return await call
    except (CodehubError, asyncio.CancelledError, _LostOwnership):
        raise
    except TimeoutError as exc:
        raise UnreachableError(f"{action} timed out") from exc
    except Exception as exc:
        raise ActionFailedError(f"{action} failed: {type(exc).__name__}") from exc


# -- completion and failure ----------------------------------------------------------------


async def _complete(ctx: OperatorContext, w: _View, op: Operation) -> Outcome:
    _observe_duration(ctx, w, op, "completed")
    if op is Operation.DELETING:
        await kube_events.post(ctx, w.obj, kube_events.OPERATION_COMPLETED, "DELETING completed")
        return Outcome("done", operation=op, detail="deleted")
    changes = {
        "operation": Operation.NONE.value,
        "op_id": None,
        "op_started_at": None,
        "error_count": 0,
        "error_info": None,
        "previous_status": None,
    }
    try:
        await _write_op_fenced(ctx, w, changes)
    except _LostOwnership:
        return Outcome("done", operation=op, detail="lost")
    except CodehubError as exc:
        return Outcome("retry", delay=_api_retry_delay(ctx), operation=op, reason=str(exc))
    log.info("%s/%s: %s completed", w.ns, w.name, op.value)
    await kube_events.post(ctx, w.obj, kube_events.OPERATION_COMPLETED, f"{op.value} completed")
    await ctx.hint(w.ns, w.name)
    return _AGAIN


def _observe_duration(ctx: OperatorContext, w: _View, op: Operation, result: str) -> None:
    if w.op_started_at is not None:
        seconds = max((ctx.clock.now() - w.op_started_at).total_seconds(), 0.0)
        ctx.metrics.operation_duration.labels(operation=op.value, result=result).observe(seconds)


async def _fail(
    ctx: OperatorContext,
    w: _View,
    op: Operation,
    exc: CodehubError,
    *,
    observed: ObservationFailure | None = None,
) -> Outcome:
    """The one place errors are turned into retry, terminal or done (SPEC §6).

    ``op`` is the claimed operation whose actuators or observation failed, or NONE with
    ``observed`` set for a problem found by observation alone (always terminal).
    """
    count = w.error_count + 1
    budget = 0 if observed is not None else retry_budget(ctx, exc.reason)
    terminal = count > budget
    reason = exc.reason
    message = str(exc)
    if terminal and budget > 0:
        reason = Reason.RETRY_EXCEEDED
        message = f"{op.value} failed {count} times; last error: {exc}"
    now = ctx.clock.now()
    context: dict[str, Any] = {"code": exc.code.value, "last_reason": exc.reason.value}
    context.update({k: v for k, v in exc.context.items() if _plain(v)})
    delay = 0.0 if terminal else backoff_delay(ctx, count)
    if not terminal:
        context["retry_after_seconds"] = round(delay, 3)
    error_info = {
        "reason": reason.value,
        "message": message[:_MESSAGE_LIMIT],
        "is_terminal": terminal,
        "operation": op.value,
        "error_count": count,
        "context": context,
        "occurred_at": format_time(now),
    }
    if observed is not None:
        context["instance"] = observed.instance.value
    changes: dict[str, Any] = {"error_count": count, "error_info": error_info}
    if terminal:
        changes["previous_status"] = _previous_status(w)
    try:
        if op is Operation.NONE:
            await _write_rv_fenced(ctx, w, {**w.status, **changes})
        else:
            await _write_op_fenced(ctx, w, changes)
    except _LostOwnership:
        if op is Operation.NONE:
            return _AGAIN  # something else changed: look again
        return Outcome("done", operation=op, detail="lost")
    except CodehubError as write_exc:
        log.warning("%s/%s: cannot record error: %s", w.ns, w.name, write_exc)
        return Outcome("retry", delay=_api_retry_delay(ctx), operation=op, reason=reason.value)
    ctx.metrics.workspace_errors.labels(reason=reason.value).inc()
    if terminal:
        log.error("%s/%s: %s failed terminally: %s", w.ns, w.name, op.value, message)
        _observe_duration(ctx, w, op, "failed")
        event = kube_events.OPERATION_FAILED if observed is None else kube_events.DATA_LOST
        await kube_events.post(ctx, w.obj, event, f"{reason.value}: {message}", "Warning")
        if op is Operation.RESTORING:
            await _discard_partial_restore(ctx, w)
        await ctx.hint(w.ns, w.name)
        return Outcome("terminal", operation=op, reason=reason.value)
    log.warning(
        "%s/%s: %s attempt %d failed (%s), retrying in %.1f s",
        w.ns,
        w.name,
        op.value,
        count,
        exc,
        delay,
    )
    await kube_events.post(
        ctx,
        w.obj,
        kube_events.OPERATION_RETRYING,
        f"{op.value} attempt {count} failed: {message}; retry in {delay:.0f} s",
        "Warning",
    )
    return Outcome("retry", delay=delay, operation=op, reason=reason.value)


async def _discard_partial_restore(ctx: OperatorContext, w: _View) -> None:
    """A failed restore must not leave a volume that looks like a restored STANDBY: the
    volume was created empty by this RESTORING, the archive is the only copy, so dropping
    the volume makes recovery restore again instead of starting an empty home."""
    try:
        await _adapter("delete_volume", ctx.storage.delete_volume(w.uid))
    except CodehubError as exc:
        log.warning("%s/%s: could not discard partial restore: %s", w.ns, w.name, exc)


@dataclass(frozen=True)
class ObservationFailure:
    """What observation alone found wrong (no operation involved)."""

    rule: ErrorRule | None
    instance: InstanceState


def _observed_error(rule: ErrorRule | None) -> CodehubError:
    if rule is ErrorRule.NO_VOLUME:
        return MismatchError(
            "a container exists without its home volume", code=ErrorCode.VOLUME_NOT_FOUND
        )
    return DataLostError(
        "the home volume vanished and there is no archive", code=ErrorCode.VOLUME_NOT_FOUND
    )


def _previous_status(w: _View) -> str | None:
    if w.observed is not None and w.observed is not ObservedStatus.ERROR:
        return w.observed.value
    return w.previous_status.value if w.previous_status else None


def _reason(w: _View) -> str | None:
    return str(w.error_info.get("reason")) if w.error_info else None


def _plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _api_retry_delay(ctx: OperatorContext) -> float:
    return min(ctx.settings.reconciler_retry_backoff, ctx.settings.reconciler_interval)


# -- fenced status writes ----------------------------------------------------------------


async def _write_rv_fenced(ctx: OperatorContext, w: _View, status: dict[str, Any]) -> Obj:
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": w.rv},
        {"op": "add", "path": "/status", "value": status},
    ]
    return await _patch(ctx, w, ops)


async def _write_op_fenced(ctx: OperatorContext, w: _View, changes: dict[str, Any]) -> Obj:
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/status/op_id", "value": w.op_id},
        {"op": "test", "path": "/status/operation", "value": w.operation.value},
    ]
    ops += [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in changes.items()]
    return await _patch(ctx, w, ops)


async def _patch(ctx: OperatorContext, w: _View, ops: list[dict[str, Any]]) -> Obj:
    try:
        return await ctx.api.patch_json(w.ns, w.name, ops, status=True)
    except ApiError as exc:
        if exc.status in (404, 409, 422):
            raise _LostOwnership(str(exc)) from exc
        raise UnreachableError(f"status write failed: HTTP {exc.status} {exc.reason}") from exc


def _replace_status(w: _View, status: dict[str, Any]) -> _View:
    obj = dict(w.obj)
    obj["status"] = status
    return _View.of(obj)
