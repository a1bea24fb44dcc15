"""Observation rules (docs/observation.md), pure.

The HealthMonitor and the reconciler both classify a container with ``instance_state_of``
and both call ``observe_detail``, so they can never disagree about what a set of facts
means. Tested exhaustively in test_planning.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from codehub.adapters.interfaces import InstanceInfo
from codehub.operator.planning import InstanceState, ObservedStatus, Operation


class ErrorRule(StrEnum):
    """Why ``observe`` answered ERROR; the reconciler turns it into ``error_info.reason``."""

    TERMINAL = "terminal"  # rule 1: error_info.is_terminal
    NO_VOLUME = "no_volume"  # rule 2: a container without a volume
    DATA_LOST = "data_lost"  # rule 6: the data vanished


def instance_state(running: bool | None) -> InstanceState:
    """Map the brief's tri-state (True running, None exists-but-stopped, False absent)."""
    if running is None:
        return InstanceState.STOPPED
    return InstanceState.RUNNING if running else InstanceState.ABSENT


def instance_state_of(info: InstanceInfo | None) -> InstanceState:
    """What a container listing or inspect means: none, stopped (crashed, half-created,
    paused) or running. A stopped container still *is* a container (rule 2)."""
    if info is None:
        return InstanceState.ABSENT
    return InstanceState.RUNNING if info.running else InstanceState.STOPPED


@dataclass(frozen=True)
class Observation:
    status: ObservedStatus
    error_rule: ErrorRule | None = None


def observe_detail(
    instance: InstanceState,
    volume: bool,
    *,
    terminal_error: bool,
    previous: ObservedStatus | None,
    operation: Operation,
    archive_key: str | None,
    previous_status: ObservedStatus | None = None,
) -> Observation:
    """Rules 1-6 of docs/observation.md, plus DELETED once a DELETING operation left nothing behind.

    Rule 6 ("did this workspace ever hold data?") uses the previous observation; when
    that is itself ERROR, the reconciler's ``previous_status`` (what was observed before
    the error) decides, so a workspace whose first provisioning failed is PENDING after
    recovery, while an unexplained earlier ERROR keeps counting as data held.
    """
    if terminal_error:
        return Observation(ObservedStatus.ERROR, ErrorRule.TERMINAL)
    if instance is not InstanceState.ABSENT and not volume:
        return Observation(ObservedStatus.ERROR, ErrorRule.NO_VOLUME)
    if instance is InstanceState.RUNNING:
        return Observation(ObservedStatus.RUNNING)
    if volume:
        return Observation(ObservedStatus.STANDBY)
    if operation is Operation.DELETING:
        return Observation(ObservedStatus.DELETED)
    if archive_key:
        return Observation(ObservedStatus.PENDING)
    if _held_data(previous, operation, previous_status):
        return Observation(ObservedStatus.ERROR, ErrorRule.DATA_LOST)
    return Observation(ObservedStatus.PENDING)


def _held_data(
    previous: ObservedStatus | None,
    operation: Operation,
    previous_status: ObservedStatus | None,
) -> bool:
    if operation not in (Operation.NONE, Operation.PROVISIONING):
        return True
    if previous in (ObservedStatus.STANDBY, ObservedStatus.RUNNING):
        return True
    if previous is ObservedStatus.ERROR:
        return previous_status not in (ObservedStatus.PENDING, ObservedStatus.DELETED)
    return False


def observe(
    instance_running: bool | None,
    volume: bool,
    *,
    terminal_error: bool,
    previous: ObservedStatus | None,
    operation: Operation,
    archive_key: str | None,
    previous_status: ObservedStatus | None = None,
) -> ObservedStatus:
    """``observe_detail`` with the brief's tri-state container flag, status only."""
    return observe_detail(
        instance_state(instance_running),
        volume,
        terminal_error=terminal_error,
        previous=previous,
        operation=operation,
        archive_key=archive_key,
        previous_status=previous_status,
    ).status
