"""The Archive GC's decisions, pure (docs/archive-gc.md): what to keep, mark, forget, delete.

The pass feeds ``decide`` one listing page at a time together with the first-seen times
stored for the key range that page covers, so memory is one page plus the protected set,
whatever the size of the bucket. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from codehub.adapters import naming
from codehub.adapters.interfaces import ObjectInfo

ARCHIVES_PREFIX = "archives/"


@dataclass
class Protection:
    """What live workspaces still use: archive keys (with their ``.meta``) and the
    ``archives/{uid}/{op_id}/`` folder of each current op_id."""

    keys: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    workspaces: int = 0

    def add_workspace(self, obj: Mapping[str, Any]) -> None:
        """Any workspace that exists is live, ERROR and DELETING included."""
        self.workspaces += 1
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        archive_key = status.get("archive_key")
        if isinstance(archive_key, str) and archive_key:
            self.keys.add(archive_key)
            self.keys.add(naming.meta_key(archive_key))
        uid, op_id = meta.get("uid"), status.get("op_id")
        if isinstance(uid, str) and uid and isinstance(op_id, str) and op_id:
            self.folders.add(naming.archive_prefix(uid, op_id))

    def covers(self, key: str) -> bool:
        if key in self.keys:
            return True
        folder, sep, _ = key.rpartition("/")
        return bool(sep) and f"{folder}/" in self.folders


@dataclass(frozen=True)
class Waiting:
    """An orphan inside its delay: deleted from ``due`` on, if still an orphan then."""

    obj: ObjectInfo
    first_seen: datetime
    due: datetime


@dataclass(frozen=True)
class PageDecision:
    to_delete: list[ObjectInfo]
    #: Orphans seen for the first time: their first-seen time becomes ``now``.
    to_mark: list[str]
    #: First-seen times to drop: protected again, or no longer in the bucket.
    to_forget: list[str]
    waiting: list[Waiting]
    protected: int
    ignored: int

    @property
    def orphans(self) -> int:
        return len(self.to_delete) + len(self.to_mark) + len(self.waiting)


def decide(
    protection: Protection,
    page: Sequence[ObjectInfo],
    first_seen: Mapping[str, datetime],
    now: datetime,
    delay: timedelta,
) -> PageDecision:
    """One listing page against the protected set.

    ``first_seen`` holds the stored times of every key in the range the page covers
    (from after the previous page's last key up to this page's last key), so a stored
    key the page does not contain has left the bucket and is forgotten. Keys outside
    ``archives/`` are never decided on, whatever the listing returned.
    """
    to_delete: list[ObjectInfo] = []
    to_mark: list[str] = []
    to_forget: list[str] = []
    waiting: list[Waiting] = []
    protected = ignored = 0
    listed: set[str] = set()
    for obj in page:
        key = obj.key
        listed.add(key)
        if not key.startswith(ARCHIVES_PREFIX):
            ignored += 1
            continue
        seen = first_seen.get(key)
        if protection.covers(key):
            protected += 1
            if seen is not None:
                to_forget.append(key)
        elif seen is None:
            to_mark.append(key)
        elif now - seen >= delay:
            to_delete.append(obj)
        else:
            waiting.append(Waiting(obj, seen, seen + delay))
    to_forget.extend(k for k in first_seen if k not in listed)
    return PageDecision(to_delete, to_mark, to_forget, waiting, protected, ignored)
