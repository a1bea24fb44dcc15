"""An in-memory Store with the PostgreSQL store's semantics, for unit tests and benchmarks.

It keeps the same model: one global revision, an event log with each entry's previous
state (so paginated lists are consistent with their first page, as on PostgreSQL), and
compaction. All decisions come from ``semantics``; this file only holds the data.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import (
    AdmissionCheck,
    AdmissionView,
    AlreadyExists,
    ListResult,
    Mutator,
    NotFound,
    Obj,
    RunningRef,
    Selectors,
    Store,
    WatchEvent,
)
from codehub.vocabulary.timestamps import now_rfc3339, rfc3339_before

Key = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


@dataclass(frozen=True)
class _Entry:
    revision: int
    kind: str
    namespace: str
    name: str
    type: str
    body: Obj
    prev: Obj | None

    def view(self) -> Obj:
        """Never changed once logged (writes replace the object, they do not edit it)."""
        return self.body

    def fresh(self) -> Obj:
        return sem.clone(self.body)


def is_running_candidate(obj: Obj) -> bool:
    """docs/limits.md: asked to run, running or starting, and not being deleted."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return False
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return (
        spec.get("desired_state") == "RUNNING"
        or status.get("observed_status") == "RUNNING"
        or status.get("operation") == "STARTING"
    )


class _MemoryAdmissionView(AdmissionView):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        out = []
        for (kind, ns, name), obj in sorted(self._store._objects.items()):
            if kind != "workspaces" or (namespace is not None and ns != namespace):
                continue
            if is_running_candidate(obj):
                out.append(RunningRef(ns, name))
        return out

    async def count_running(
        self, namespace: str | None = None, *, excluding: RunningRef | None = None
    ) -> int:
        """Counted in place: no sorted list of every running workspace per admission."""
        skip = (excluding.namespace, excluding.name) if excluding is not None else None
        return sum(
            1
            for (kind, ns, name), obj in self._store._objects.items()
            if kind == "workspaces"
            and (namespace is None or ns == namespace)
            and (ns, name) != skip
            and is_running_candidate(obj)
        )


class MemoryStore(Store):
    def __init__(self) -> None:
        self._objects: dict[Key, Obj] = {}
        self._log: list[_Entry] = []
        self._revs: list[int] = []
        self._rev = 0
        self._floor = 0
        self._lock = asyncio.Lock()
        self._admission_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.writes = 0

    # -- reads -----------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get((kind, sem.ns_key(namespace), name))
        if obj is None:
            raise NotFound(f'{kind} "{name}" not found')
        return sem.clone(obj)

    def _state_at(self, kind: str, revision: int) -> dict[Key, Obj]:
        state = {k: v for k, v in self._objects.items() if k[0] == kind}
        start = bisect.bisect_right(self._revs, revision)
        seen: set[Key] = set()
        for entry in self._log[start:]:
            key = (entry.kind, entry.namespace, entry.name)
            if entry.kind != kind or key in seen:
                continue
            seen.add(key)
            if entry.prev is None:
                state.pop(key, None)
            else:
                state[key] = entry.prev
        return state

    async def list(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        if limit is not None and limit <= 0:
            limit = None
        after: tuple[str, str] | None = None
        if continue_token:
            token = sem.ContinueToken.decode(continue_token)
            if token.revision < self._floor:
                raise sem.gone(token.revision, self._floor)
            revision = token.revision
            state = self._state_at(kind, revision)
            after = (token.namespace, token.name)
        else:
            revision = self._rev
            state = {k: v for k, v in self._objects.items() if k[0] == kind}
        items: list[Obj] = []
        last: tuple[str, str] | None = None
        more = False
        for key in sorted(state):
            _, ns, name = key
            if namespace is not None and ns != namespace:
                continue
            if after is not None and (ns, name) <= after:
                continue
            if not sem.matches(state[key], selectors):
                continue
            if limit is not None and len(items) >= limit:
                more = True
                break
            items.append(sem.clone(state[key]))
            last = (ns, name)
        token_out = None
        if more and last is not None:
            token_out = sem.ContinueToken(revision, last[0], last[1]).encode()
        return ListResult(items, revision, token_out)

    async def list_by(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        desired_state: str | None = None,
        observed_status: str | None = None,
        operation: str | None = None,
        deleting: bool | None = None,
    ) -> builtins.list[Obj]:
        """Same contract as ``PostgresStore.list_by`` (typed-column queries)."""
        out = []
        for (k, ns, _), obj in sorted(self._objects.items()):
            spec = obj.get("spec") or {}
            status = obj.get("status") or {}
            if k != kind or (namespace is not None and ns != namespace):
                continue
            if desired_state is not None and spec.get("desired_state") != desired_state:
                continue
            if observed_status is not None and status.get("observed_status") != observed_status:
                continue
            if operation is not None and status.get("operation") != operation:
                continue
            if deleting is not None and bool(obj["metadata"].get("deletionTimestamp")) != deleting:
                continue
            out.append(sem.clone(obj))
        return out

    # -- writes ----------------------------------------------------------------------

    def _append(self, kind: str, key: Key, type_: str, body: Obj, prev: Obj | None) -> Obj:
        self._rev += 1
        self.writes += 1
        sem.with_revision(body, self._rev)
        if type_ == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = body
        self._log.append(_Entry(self._rev, kind, key[1], key[2], type_, body, prev))
        self._revs.append(self._rev)
        self._wake.set()
        self._wake = asyncio.Event()
        return sem.clone(body)

    async def create(self, kind: str, obj: Obj, *, admit: AdmissionCheck | None = None) -> Obj:
        namespace = (obj.get("metadata") or {}).get("namespace")
        new = sem.prepare_create(obj, namespace, now_rfc3339())
        key = (kind, sem.ns_key(namespace), sem.meta(new)["name"])
        async with self._admission_lock if admit else contextlib.nullcontext(), self._lock:
            if key in self._objects:
                raise AlreadyExists(f'{kind} "{key[2]}" already exists')
            if admit is not None:
                await admit(_MemoryAdmissionView(self), None, sem.clone(new))
            return self._append(kind, key, "ADDED", new, None)

    async def update(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        mutate: Mutator,
        *,
        subresource: Literal["status"] | None = None,
        admit: AdmissionCheck | None = None,
    ) -> Obj:
        key = (kind, sem.ns_key(namespace), name)
        async with self._admission_lock if admit else contextlib.nullcontext(), self._lock:
            current = self._objects.get(key)
            if current is None:
                raise NotFound(f'{kind} "{name}" not found')
            plan = sem.apply_update(current, mutate(sem.clone(current)), subresource)
            if plan is None:
                return sem.clone(current)
            if admit is not None:
                await admit(_MemoryAdmissionView(self), sem.clone(current), plan.obj)
            return self._append(
                kind, key, "DELETED" if plan.remove else "MODIFIED", plan.obj, current
            )

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        expected_resource_version: str | None = None,
        expected_uid: str | None = None,
    ) -> tuple[Obj, bool]:
        key = (kind, sem.ns_key(namespace), name)
        async with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise NotFound(f'{kind} "{name}" not found')
            sem.check_delete_preconditions(current, expected_resource_version, expected_uid)
            m = sem.meta(current)
            if m.get("finalizers"):
                if m.get("deletionTimestamp"):
                    return sem.clone(current), False
                new = sem.mark_deleting(current, now_rfc3339())
                return self._append(kind, key, "MODIFIED", new, current), False
            return self._append(kind, key, "DELETED", sem.clone(current), current), True

    # -- watch -----------------------------------------------------------------------

    async def watch(
        self,
        kind: str,
        *,
        since: int,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        if since < self._floor:
            raise sem.gone(since, self._floor)
        examined = since
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while True:
            if examined < self._floor:
                raise sem.gone(examined, self._floor)
            wake = self._wake
            start = bisect.bisect_right(self._revs, examined)
            batch = self._log[start:]
            for entry in batch:
                examined = entry.revision
                if entry.kind != kind or (namespace is not None and entry.namespace != namespace):
                    continue
                prev = entry.prev if entry.type != "ADDED" else None
                type_ = sem.watch_type(entry.type, prev, entry.body, selectors)
                if type_ is not None:
                    yield WatchEvent(type_, entry.revision, body=entry)
                    last_sent = loop.time()
            examined = max(examined, self._rev)
            if batch:
                continue
            timeout = None
            if bookmark_interval is not None:
                timeout = max(0.0, last_sent + bookmark_interval - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                yield WatchEvent("BOOKMARK", examined)
                last_sent = loop.time()

    async def current_revision(self) -> int:
        return self._rev

    async def expire(self, kind: str, older_than_seconds: float) -> int:
        """Same contract as ``PostgresStore.expire``."""
        cutoff = rfc3339_before(older_than_seconds)
        removed = 0
        for k, ns, name in sorted(self._objects):
            obj = self._objects.get((k, ns, name))
            if k != kind or obj is None:
                continue
            meta = obj["metadata"]
            if meta.get("deletionTimestamp") or meta.get("creationTimestamp", "") >= cutoff:
                continue
            _, gone = await self.delete(kind, ns or None, name)
            removed += int(gone)
        return removed

    async def compact(self, keep_revisions: int) -> int:
        async with self._lock:
            cutoff = max(self._floor, self._rev - max(0, keep_revisions))
            start = bisect.bisect_right(self._revs, cutoff)
            del self._log[:start]
            del self._revs[:start]
            self._floor = cutoff
            return cutoff + 1

    async def close(self) -> None:
        return None
