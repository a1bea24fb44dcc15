"""The TTL Manager's decision (docs/activity-and-ttl.md): pure, no I/O, no clock.

``decide(view, now)`` answers, for one workspace, whether an idle TTL acts now, why it
does not although it is due (``busy``, ``user_changed``), and what the next idle action
is and when (``status.idle_action`` / ``idle_action_at``), so the resource itself says
why a workspace is still up.

The idle period starts at the latest of:

- the last access (``status.last_access_at``, written by the proxy);
- a change of ``spec.desired_state`` by anyone but the TTL itself (the API server stamps
  ``codehub.io/desired-state-changed-at`` and ``codehub.io/desired-state-source`` on each
  change): a user's decision made after the idle period began resets it, so it wins;
- the time the workspace became settled at this level (for the archive step only if it
  was never accessed). No field records that transition (``observed_at`` is refreshed
  by every confirming observation), so the announcement stands for it: the first pass
  that finds the step applying announces it from ``now``, and later passes never bring
  an announced time forward (``idle_action_at - ttl`` is a lower bound of the start).
  The step therefore acts at most one pass later than the exact transition would give,
  never earlier, and a workspace whose start took longer than its TTL is not sent back
  the moment it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from codehub.crd_like.identity import DESIRED_CHANGED_AT_ANNOTATION, DESIRED_SOURCE_ANNOTATION
from codehub.crd_like.models import IdleAction
from codehub.vocabulary.timestamps import parse_rfc3339

SOURCE_ANNOTATION = DESIRED_SOURCE_ANNOTATION
CHANGED_AT_ANNOTATION = DESIRED_CHANGED_AT_ANNOTATION
TTL_SOURCE = "ttl"


class SkipReason(StrEnum):
    """Why a due action was not taken (``codehub_ttl_skipped_total{reason}``)."""

    BUSY = "busy"  # an operation in progress, an error recorded, or being deleted
    USER_CHANGED = "user_changed"  # due by activity, but a user's later change wins
    CONFLICT = "conflict"  # the compare-and-set lost to a concurrent write


@dataclass(frozen=True)
class TtlView:
    """What the decision reads from one workspace."""

    desired: str | None
    observed: str | None
    operation: str | None
    has_error: bool
    deleting: bool
    open_connections: int
    last_access_at: datetime | None
    desired_changed_at: datetime | None
    desired_source: str | None
    standby_ttl: int
    archive_ttl: int
    #: The announcement stored by an earlier pass.
    idle_action: str | None = None
    idle_action_at: datetime | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> TtlView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        notes = meta.get("annotations") or {}
        return cls(
            desired=spec.get("desired_state"),
            observed=status.get("observed_status"),
            operation=status.get("operation"),
            has_error=bool(status.get("error_info")),
            deleting=bool(meta.get("deletionTimestamp")),
            open_connections=_int(status.get("open_connections")),
            last_access_at=parse_rfc3339(status.get("last_access_at")),
            desired_changed_at=parse_rfc3339(notes.get(CHANGED_AT_ANNOTATION)),
            desired_source=notes.get(SOURCE_ANNOTATION),
            standby_ttl=_int(spec.get("standby_ttl_seconds")),
            archive_ttl=_int(spec.get("archive_ttl_seconds")),
            idle_action=status.get("idle_action"),
            idle_action_at=parse_rfc3339(status.get("idle_action_at")),
        )

    @property
    def busy(self) -> bool:
        return self.deleting or self.has_error or self.operation not in (None, "", "NONE")

    @property
    def user_changed_at(self) -> datetime | None:
        """The last desired_state change by a writer other than the TTL (absent = api)."""
        if self.desired_source == TTL_SOURCE:
            return None
        return self.desired_changed_at


@dataclass(frozen=True)
class Decision:
    #: The action to take now (a compare-and-set of spec.desired_state), or None.
    act: IdleAction | None = None
    #: Why a due action is not taken now, or None.
    skipped: SkipReason | None = None
    #: What ``status.idle_action`` / ``idle_action_at`` should say.
    next_action: IdleAction | None = None
    next_at: datetime | None = None


NOTHING = Decision()

#: The desired level each action sets.
TARGET = {IdleAction.STANDBY: "STANDBY", IdleAction.ARCHIVE: "PENDING"}


def step_of(view: TtlView) -> tuple[IdleAction, int] | None:
    """The idle step that applies to a settled workspace, with its TTL; None if none."""
    if view.deleting or view.observed != view.desired:
        return None
    if view.observed == "RUNNING":
        return IdleAction.STANDBY, view.standby_ttl
    if view.observed == "STANDBY":
        return IdleAction.ARCHIVE, view.archive_ttl
    return None


def settled_since(view: TtlView, action: IdleAction, ttl: int, now: datetime) -> datetime:
    """A lower bound of the time the step began to apply: the start behind the stored
    announcement of this step, else ``now`` (first seen settled)."""
    if view.idle_action == action.value and view.idle_action_at is not None:
        return view.idle_action_at - timedelta(seconds=ttl)
    return now


def idle_start(
    view: TtlView, action: IdleAction, ttl: int, now: datetime, *, with_user: bool = True
) -> datetime:
    """When the idle period began (see the module docstring)."""
    marks = [view.last_access_at]
    if action is IdleAction.STANDBY or view.last_access_at is None:
        marks.append(settled_since(view, action, ttl, now))
    if with_user:
        marks.append(view.user_changed_at)
    return max(m for m in marks if m is not None)


def decide(view: TtlView, now: datetime) -> Decision:
    """The TTL's answer for one workspace at ``now``."""
    step = step_of(view)
    if step is None:
        return NOTHING
    action, ttl = step
    if ttl <= 0:
        return NOTHING  # 0 disables the step
    if action is IdleAction.STANDBY and view.open_connections > 0:
        return NOTHING  # kept alive by an open connection
    at = idle_start(view, action, ttl, now) + timedelta(seconds=ttl)
    if now < at:
        earlier = idle_start(view, action, ttl, now, with_user=False)
        if now >= earlier + timedelta(seconds=ttl):
            return Decision(skipped=SkipReason.USER_CHANGED, next_action=action, next_at=at)
        return Decision(next_action=action, next_at=at)
    if view.busy:
        return Decision(skipped=SkipReason.BUSY, next_action=action, next_at=at)
    return Decision(act=action, next_action=action, next_at=at)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
