"""The orphan sweeper's decision, pure: engine listing + live uids + first-seen times + now.

An engine object (workspace container, storage job container, home volume) is an orphan
when no workspace with its uid exists. It is removed only once it has stayed an orphan
for at least ``delay``; the first pass that sees it only records the time. An object
whose workspace exists again (or that left the listing) is forgotten, so its delay
starts over if it ever becomes an orphan again. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta

from codehub.adapters.engine_objects import KIND_VOLUME, LabelledObject

#: Containers and jobs first: a volume cannot go while a container still mounts it.
_ORDER = {"job": 0, "container": 1, KIND_VOLUME: 2}


def object_key(obj: LabelledObject) -> str:
    return f"{obj.kind}/{obj.ref}"


@dataclass(frozen=True)
class SweepDecision:
    #: Orphans past their delay, jobs and containers before volumes.
    to_remove: list[LabelledObject]
    #: The first-seen times to keep for the next pass (orphans only, removals included
    #: so a removal that fails is retried without a new delay).
    first_seen: dict[str, datetime]
    #: Orphans still inside their delay.
    waiting: list[LabelledObject]
    live: int


def decide(
    objects: Iterable[LabelledObject],
    live_uids: Set[str],
    first_seen: Mapping[str, datetime],
    now: datetime,
    delay: timedelta,
) -> SweepDecision:
    to_remove: list[LabelledObject] = []
    waiting: list[LabelledObject] = []
    seen: dict[str, datetime] = {}
    live = 0
    for obj in objects:
        if obj.uid in live_uids:
            live += 1
            continue
        key = object_key(obj)
        since = first_seen.get(key, now)
        seen[key] = since
        if now - since >= delay and key in first_seen:
            to_remove.append(obj)
        else:
            waiting.append(obj)
    to_remove.sort(key=lambda o: (_ORDER.get(o.kind, 9), o.uid, o.ref))
    return SweepDecision(to_remove=to_remove, first_seen=seen, waiting=waiting, live=live)
