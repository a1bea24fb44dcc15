"""Concurrent write schedules and the watch invariants, shared by the MemoryStore
(tests/unit) and PostgresStore (tests/integration) property tests.

A schedule is a few writers, each a list of (create | update | delete, name) steps on a
small set of names, run concurrently. Two watchers follow from the revision before the
first write: one straight through, one that stops after ``resume_after`` events and
resumes from the revision it last saw, as a client resuming by resourceVersion does.
Invariants: each watcher sees strictly increasing revisions; every successful write
appears exactly once (creates and updates by their returned resourceVersion, deletes by
count per name); the resumed watcher sees exactly the straight watcher's events.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from codehub.crd_like.store import AlreadyExists, Conflict, NotFound, Store, WatchEvent

KIND = "workspaces"
NAMES = ["a", "b", "c", "d"]
#: Liveness bound only (a hang must fail, not block CI).
PATIENCE = 60.0

STEP = st.tuples(st.sampled_from(["create", "update", "delete"]), st.sampled_from(NAMES))
SCHEDULES = st.fixed_dictionaries(
    {
        "writers": st.lists(st.lists(STEP, min_size=1, max_size=8), min_size=1, max_size=4),
        "resume_after": st.integers(0, 10),
    }
)


@dataclass
class Written:
    revisions: list[int] = field(default_factory=list)  # creates and updates
    deletes: Counter[str] = field(default_factory=Counter)


def manifest(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"desired_state": "RUNNING", "image_ref": "img"},
    }


async def _writer(
    store: Store, ns: str, steps: list[tuple[str, str]], tag: str, out: Written
) -> None:
    for i, (kind, name) in enumerate(steps):
        try:
            if kind == "create":
                obj = await store.create(KIND, manifest(name, ns))
                out.revisions.append(int(obj["metadata"]["resourceVersion"]))
            elif kind == "update":

                def mutate(o: dict[str, Any], memo: str = f"{tag}-{i}") -> dict[str, Any]:
                    o["spec"]["memo"] = memo
                    return o

                obj = await store.update(KIND, ns, name, mutate)
                out.revisions.append(int(obj["metadata"]["resourceVersion"]))
            else:
                _, removed = await store.delete(KIND, ns, name)
                if removed:
                    out.deletes[name] += 1
        except (AlreadyExists, NotFound, Conflict):
            pass
        await asyncio.sleep(0)


async def _follow(
    store: Store, ns: str, since: int, until: int, stop_after: int | None
) -> list[WatchEvent]:
    out: list[WatchEvent] = []

    async def run() -> None:
        async for ev in store.watch(KIND, since=since, namespace=ns):
            if ev.type == "BOOKMARK":
                if ev.revision >= until:
                    return
                continue
            out.append(ev)
            if ev.revision >= until or (stop_after is not None and len(out) >= stop_after):
                return

    await asyncio.wait_for(run(), PATIENCE)
    return out


async def check_schedule(store: Store, ns: str, schedule: dict[str, Any]) -> dict[str, int]:
    """Run ``schedule`` in namespace ``ns`` of ``store`` and assert the invariants."""
    start = await store.current_revision()
    written = Written()
    await asyncio.gather(
        *(
            _writer(store, ns, steps, f"w{n}", written)
            for n, steps in enumerate(schedule["writers"])
        )
    )
    until = await store.current_revision()
    if until == start:
        return {"events": 0}
    straight = await _follow(store, ns, start, until, None)
    first = await _follow(store, ns, start, until, schedule["resume_after"] or None)
    resumed = list(first)
    if not first or first[-1].revision < until:
        since = first[-1].revision if first else start
        resumed += await _follow(store, ns, since, until, None)

    revisions = [ev.revision for ev in straight]
    assert revisions == sorted(set(revisions)), "revisions not strictly increasing"
    assert [(e.type, e.revision) for e in resumed] == [(e.type, e.revision) for e in straight]
    seen = Counter(e.revision for e in straight if e.type in ("ADDED", "MODIFIED"))
    assert seen == Counter(written.revisions), "a create or update missing or repeated"
    for ev in straight:
        assert ev.object is not None
        if ev.type != "DELETED":
            assert int(ev.object["metadata"]["resourceVersion"]) == ev.revision
    deleted = Counter(
        e.object["metadata"]["name"] for e in straight if e.type == "DELETED" and e.object
    )
    assert deleted == written.deletes, "a delete missing or repeated"
    return {"events": len(straight)}
