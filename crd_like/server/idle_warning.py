"""``idle_warning`` for the SSE stream (docs/events.md, docs/activity-and-ttl.md).

The TTL Manager writes what it will do next into ``status.idle_action`` and
``idle_action_at``. A stream tracks those of the workspaces it follows and sends
``idle_warning {workspace, namespace, seconds_left}`` once per announced standby time,
as soon as it is at most ``window`` seconds away: when the status changes into the
window, or when the time comes (the stream wakes up for it). Activity moves
``idle_action_at`` later, or clears it, and a later time warns again when it comes near.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from codehub.crd_like.store.interface import Obj
from codehub.vocabulary.timestamps import parse_rfc3339

EVENT = "idle_warning"


@dataclass
class IdleWarnings:
    window: float
    #: key -> (name, namespace, time the standby TTL acts)
    pending: dict[str, tuple[Any, Any, datetime]] = field(default_factory=dict)
    #: key -> the time already warned about
    sent: dict[str, datetime] = field(default_factory=dict)

    def track(self, key: str, obj: Obj | None) -> None:
        """Follow ``obj``'s announced standby (None: the workspace is gone)."""
        status = (obj or {}).get("status") or {}
        at = parse_rfc3339(status.get("idle_action_at"))
        if obj is None or status.get("idle_action") != "standby" or at is None:
            self.pending.pop(key, None)
            self.sent.pop(key, None)
            return
        meta = obj.get("metadata") or {}
        self.pending[key] = (meta.get("name"), meta.get("namespace"), at)

    def due(self, now: datetime) -> list[dict[str, Any]]:
        """The warnings to send now, each once."""
        out = []
        for key, (name, namespace, at) in self.pending.items():
            if self.sent.get(key) == at or at - timedelta(seconds=self.window) > now:
                continue
            self.sent[key] = at
            left = max(0, math.ceil((at - now).total_seconds()))
            out.append({"workspace": name, "namespace": namespace, "seconds_left": left})
        return out

    def seconds_to_next(self, now: datetime) -> float | None:
        """How long until the next warning falls due (None: none is pending)."""
        waits = [
            (at - timedelta(seconds=self.window) - now).total_seconds()
            for key, (_, _, at) in self.pending.items()
            if self.sent.get(key) != at
        ]
        return max(0.0, min(waits)) if waits else None
