"""The pure core of the operator: planning, observation and completion (docs/state-machine.md).

Nothing here does I/O, so every rule is tested exhaustively over all combinations of its
inputs. The reconciler and the HealthMonitor both call ``observation.observe_detail`` so
they can never disagree about what a set of facts means.

Observation (docs/observation.md) lives in ``observation``; this module holds the plan and the
completion rule. The vocabulary (status, desired state, operation, display) is the
resource's own, from ``crd_like.models``, re-exported here for the operator.

The ``plan`` contract (kept deliberately small so it can be tabulated):

* ``deleting`` wins over everything, ERROR and a running operation included: DELETING.
* An operation already claimed (``operation`` not NONE) is never replaced by another one
  (one at a time): ``plan`` answers that same operation. Whether it is finished is a
  separate question answered by ``is_complete`` from observation; when it is, the
  reconciler records NONE and calls ``plan`` again with ``operation=NONE`` to get the next
  step. A desired change made meanwhile is therefore applied after completion.
* With ``operation`` NONE: one step toward the desired level (table in
  docs/state-machine.md); ERROR and DELETED answer NONE (ERROR waits for recovery;
  DELETED is transient).

``when_unobserved`` decides what a reconcile does when the engine cannot be asked what
exists (docs/errors.md): only pending work counts against the retry budget.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TypeVar

from codehub.crd_like.models import DesiredState, Display, ObservedStatus, Operation

E = TypeVar("E", bound=StrEnum)

__all__ = [
    "DesiredState",
    "Display",
    "InstanceState",
    "ObservedStatus",
    "Operation",
    "Unobserved",
    "is_complete",
    "parse_enum",
    "plan",
    "when_unobserved",
]


class InstanceState(Enum):
    """What the engine says about a workspace's container."""

    ABSENT = "absent"
    STOPPED = "stopped"  # exists but not running (crashed, half-created)
    RUNNING = "running"


def plan(
    observed: ObservedStatus | None,
    desired: DesiredState,
    operation: Operation,
    archive_key: str | None,
    deleting: bool,
) -> Operation:
    """The operation that should be in ``status.operation`` now (contract in module doc)."""
    if deleting:
        return Operation.DELETING
    if operation is not Operation.NONE:
        return operation
    if observed is None:
        observed = ObservedStatus.PENDING
    if observed is ObservedStatus.PENDING:
        if desired is DesiredState.PENDING:
            return Operation.NONE
        return Operation.RESTORING if archive_key else Operation.PROVISIONING
    if observed is ObservedStatus.STANDBY:
        if desired is DesiredState.RUNNING:
            return Operation.STARTING
        if desired is DesiredState.PENDING:
            return Operation.ARCHIVING
        return Operation.NONE
    if observed is ObservedStatus.RUNNING:
        return Operation.NONE if desired is DesiredState.RUNNING else Operation.STOPPING
    return Operation.NONE  # ERROR waits for recovery; DELETED is transient


class Unobserved(StrEnum):
    """What to do when the facts cannot be gathered (the engine is unreachable)."""

    WAIT = "wait"  # retry observing later; record nothing
    FAIL = "fail"  # pending work cannot start: one attempt of the retry budget
    CLEAR = "clear"  # an earlier unstarted-work error no longer applies: drop it


def when_unobserved(pending: Operation, *, terminal: bool, unstarted_error: bool) -> Unobserved:
    """The decision without facts, from the last observation alone.

    ``pending``: what ``plan`` answers with ``operation`` NONE (NONE: converged, nothing
    to do); ``terminal``: a terminal error is recorded (it waits for an administrator, a
    second one would only bury the first); ``unstarted_error``: a non-terminal error
    recorded with no operation claimed, i.e. by an earlier ``FAIL``. An idle, converged
    workspace never accrues failures because the engine is down; work the user asked
    for does, so it ends in a clear ERROR instead of waiting silently forever.
    """
    if terminal:
        return Unobserved.WAIT
    if pending is not Operation.NONE:
        return Unobserved.FAIL
    return Unobserved.CLEAR if unstarted_error else Unobserved.WAIT


def is_complete(
    operation: Operation,
    instance: InstanceState,
    volume: bool,
    archive_key: str | None,
    restore_returned: bool = False,
) -> bool:
    """ "Done when observed" (docs/state-machine.md). RESTORING also needs this process to have seen
    ``restore`` return: a volume alone may be a fresh, still empty one."""
    if operation is Operation.NONE:
        return True
    if operation is Operation.PROVISIONING:
        return volume
    if operation is Operation.RESTORING:
        return volume and restore_returned
    if operation is Operation.STARTING:
        return instance is InstanceState.RUNNING and volume
    if operation is Operation.STOPPING:
        return instance is InstanceState.ABSENT and volume
    if operation is Operation.ARCHIVING:
        return bool(archive_key) and not volume
    return instance is InstanceState.ABSENT and not volume  # DELETING


def parse_enum(cls: type[E], value: object, default: E | None = None) -> E | None:
    """Read an enum from a resource field; unknown or missing values give ``default``."""
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            return default
    return default
