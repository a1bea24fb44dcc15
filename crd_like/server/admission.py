"""docs/limits.md running limits, enforced inside the store's writing transaction.

The store serialises every write that carries an admission check, so counting and
writing happen atomically: twenty concurrent "run" requests against a limit of two admit
exactly two. The count is of workspaces asked to run, running or starting; the object
being written is excluded from it and then counted once, so re-saving a workspace that is
already counted never refuses it.
"""

from __future__ import annotations

from typing import Any

from codehub.crd_like.store.interface import AdmissionView, Obj, RunningRef

from .status import ApiError


class LimitExceeded(ApiError):
    """429 whose Status also carries the docs/limits.md body (``error`` and ``details``)."""

    def __init__(
        self, limit_type: str, current: int, maximum: int, running: list[RunningRef]
    ) -> None:
        scope = "per-user" if limit_type == "per_user" else "global"
        message = (
            f"workspace limit exceeded: {current} of {maximum} {scope} running workspaces "
            "are in use; stop one first"
        )
        limit = {
            "limit_type": limit_type,
            "current": current,
            "max": maximum,
            "running_workspaces": [{"namespace": r.namespace, "name": r.name} for r in running],
        }
        super().__init__(
            429,
            message,
            reason="TooManyRequests",
            details={"group": "codehub.io", "kind": "workspaces", **limit},
            extra={"error": "workspace_limit_exceeded"},
        )
        self.limit_type = limit_type


def _desired(obj: Obj | None) -> Any:
    if not obj:
        return None
    spec = obj.get("spec")
    return spec.get("desired_state") if isinstance(spec, dict) else None


def asks_to_run(old: Obj | None, new: Obj) -> bool:
    """Creating with RUNNING, or changing desired_state to RUNNING from something else."""
    return bool(_desired(new) == "RUNNING" and _desired(old) != "RUNNING")


class RunningLimitCheck:
    """The check, and what it would decide (``running_limits``), so a store can decide
    it in the write statement and call the check only for a write it refused; the
    PostgreSQL store does (crd_like/store/pg/admission.py)."""

    def __init__(self, max_per_user: int, max_global: int) -> None:
        self.max_per_user = max_per_user
        self.max_global = max_global

    def running_limits(self, old: Obj | None, new: Obj) -> tuple[int, int] | None:
        """None: admitted without counting; else the limits (per user, global) that the
        owner's count and the total, each without ``new`` and then with it, must fit in."""
        if not asks_to_run(old, new):
            return None
        return self.max_per_user, self.max_global

    async def __call__(self, view: AdmissionView, old: Obj | None, new: Obj) -> None:
        if self.running_limits(old, new) is None:
            return
        meta = new.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        me = RunningRef(namespace, name)
        # Count first; list the names (the 429 body) only for a refused write.
        if await view.count_running(namespace, excluding=me) + 1 > self.max_per_user:
            mine = [r for r in await view.running_workspaces(namespace) if r != me]
            raise LimitExceeded("per_user", len(mine), self.max_per_user, mine)
        if await view.count_running(excluding=me) + 1 > self.max_global:
            everyone = [r for r in await view.running_workspaces() if r != me]
            raise LimitExceeded("global", len(everyone), self.max_global, everyone)


def running_limit_check(max_per_user: int, max_global: int) -> RunningLimitCheck:
    return RunningLimitCheck(max_per_user, max_global)
