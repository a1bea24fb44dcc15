"""The contract between the API server and its storage.

Objects are Kubernetes-shaped dicts (``apiVersion``, ``kind``, ``metadata``, ``spec``,
``status``). ``kind`` arguments are resource plurals: ``"workspaces"``, ``"events"``.
The revision is one global, gap-free counter: ``metadata.resourceVersion`` is its
decimal string. Every write appends to an event log in the same transaction, so a watch
replays the log after a revision and then follows new entries, never skipping one.
"""

from __future__ import annotations

import builtins
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Obj = dict[str, Any]


class StoreError(Exception):
    """Base of storage errors; the server maps each to a Kubernetes ``Status``."""


class NotFound(StoreError):
    """No such object (HTTP 404)."""


class AlreadyExists(StoreError):
    """An object with that namespace and name exists (HTTP 409, reason AlreadyExists)."""


class Conflict(StoreError):
    """A resourceVersion precondition no longer matches (HTTP 409, reason Conflict)."""


class Gone(StoreError):
    """The requested revision was compacted away (HTTP 410; watch sends ERROR 410)."""


class Invalid(StoreError):
    """The change is not allowed (HTTP 422); ``field`` names the offending field path."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class EventBody(Protocol):
    """Where a watch event's object comes from: one log entry, shared by every watcher
    that gets the entry. ``view`` is decoded once for all of them and must never be
    changed nor handed to anyone who might change it; ``fresh`` is a private copy."""

    def view(self) -> Obj: ...

    def fresh(self) -> Obj: ...


class WatchEvent:
    """One watch notification.

    ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK. A BOOKMARK has ``object`` None and
    ``revision`` = the highest revision the watch has examined (matching or not), so a
    client resuming from it misses nothing.

    A store builds each watcher its own event on a shared ``EventBody``: ``object`` is
    that watcher's own copy, made on first access, so a watcher that only relays the
    event (the server, which encodes it once for all watchers) pays no decode
    (docs/adr/0007-api-write-path-performance.md). ``shared`` is the read-only body
    for encoding and predicates.
    """

    __slots__ = ("_body", "_object", "revision", "type")

    def __init__(
        self,
        type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"],
        revision: int,
        object: Obj | None = None,
        *,
        body: EventBody | None = None,
    ) -> None:
        self.type = type
        self.revision = revision
        self._object = object
        self._body = body

    @property
    def object(self) -> Obj | None:
        """This event's own object: the caller may change it."""
        if self._object is None and self._body is not None:
            self._object = self._body.fresh()
        return self._object

    @property
    def shared(self) -> Obj | None:
        """The object without a copy: read it, never change it nor keep it."""
        if self._body is None:
            return self._object
        return self._body.view()

    def __eq__(self, other: builtins.object) -> bool:
        if not isinstance(other, WatchEvent):
            return NotImplemented
        return (self.type, self.revision, self.shared) == (
            other.type,
            other.revision,
            other.shared,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WatchEvent(type={self.type!r}, revision={self.revision}, object={self.shared!r})"


@dataclass(frozen=True)
class ListResult:
    items: list[Obj]
    revision: int  # the store's revision at which this list is consistent
    continue_token: str | None = None


@dataclass(frozen=True)
class RawListResult:
    """A list whose items are JSON texts, for a server that only relays them."""

    items: list[str]
    revision: int
    continue_token: str | None = None


@dataclass(frozen=True)
class RunningRef:
    namespace: str
    name: str


class AdmissionView(ABC):
    """Read access inside the writing transaction, under a global admission lock."""

    @abstractmethod
    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        """Workspaces asked to run, running, or starting (docs/limits.md), optionally per owner.

        That is: not being deleted, and ``spec.desired_state == RUNNING`` or
        ``status.observed_status == RUNNING`` or ``status.operation == STARTING``.
        """

    async def count_running(
        self, namespace: str | None = None, *, excluding: RunningRef | None = None
    ) -> int:
        """``len(running_workspaces(namespace))`` without ``excluding``; a store overrides
        it with a real count so an admitted write never lists every running workspace."""
        return sum(1 for r in await self.running_workspaces(namespace) if r != excluding)


#: Receives a deep copy of the current object, returns the object to store. It may raise
#: (Conflict for a stale resourceVersion, Invalid for bad content, anything else) to abort
#: the write with nothing changed. It must be pure: a store may call it more than once
#: for one update (PostgresStore tries a compare-and-swap on the body it wrote last and
#: redoes a failed or refused attempt under the row lock).
Mutator = Callable[[Obj], Obj]

#: Runs inside the transaction, after the change is computed, before it is committed:
#: ``(view, old_or_None, new)``. Raising aborts the write. The view takes a global
#: admission lock the first time it is queried, so writes whose check reads the view are
#: serialised with each other (limits hold under concurrency) while checks that decide
#: without counting (a finalizer patch, say) take no lock.
AdmissionCheck = Callable[[AdmissionView, Obj | None, Obj], Awaitable[None]]


@dataclass(frozen=True)
class Selectors:
    labels: Mapping[str, str] = field(default_factory=dict)  # equality only
    fields: Mapping[str, str] = field(default_factory=dict)  # e.g. {"metadata.name": "x"}
    #: ``key!=value``: the label is absent or has another value.
    not_labels: Mapping[str, str] = field(default_factory=dict)


class Store(ABC):
    @abstractmethod
    async def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        """Raise NotFound when absent."""

    @abstractmethod
    async def list(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        """Items in (namespace, name) order; a continued list is consistent with its first
        page's revision (or raises Gone once that revision is compacted)."""

    async def list_raw(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> RawListResult:
        """``list`` with each item as JSON text. Stores that keep JSON override it so a big
        list skips a decode and re-encode per object (most of its cost)."""
        result = await self.list(
            kind,
            namespace=namespace,
            selectors=selectors,
            limit=limit,
            continue_token=continue_token,
        )
        return RawListResult(
            [json.dumps(item, separators=(",", ":")) for item in result.items],
            result.revision,
            result.continue_token,
        )

    @abstractmethod
    async def create(self, kind: str, obj: Obj, *, admit: AdmissionCheck | None = None) -> Obj:
        """Set ``metadata.uid`` (uuid4), ``creationTimestamp``, ``resourceVersion`` and
        ``generation`` = 1, append ADDED. Raise AlreadyExists."""

    @abstractmethod
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
        """Read-modify-write, as if under a row lock (a compare-and-swap when the store
        knows the current body).

        With ``subresource="status"`` only ``status`` is taken from the mutator's result;
        otherwise ``status`` is kept from the current object. ``uid``, ``name``,
        ``namespace`` and ``creationTimestamp`` cannot change (Invalid). ``generation``
        goes up by one when ``spec`` changed. A write that changes nothing returns the
        current object and allocates no revision. When the result has a
        ``deletionTimestamp`` and no finalizers left, the object is removed and a DELETED
        event appended.
        """

    @abstractmethod
    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        expected_resource_version: str | None = None,
        expected_uid: str | None = None,
    ) -> tuple[Obj, bool]:
        """With finalizers: set ``deletionTimestamp`` (once) and return (object, False).
        Without: remove, append DELETED, return (last state, True)."""

    @abstractmethod
    def watch(
        self,
        kind: str,
        *,
        since: int,
        namespace: str | None = None,
        selectors: Selectors | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Every matching event with revision > ``since``, in revision order, each once.

        Raise Gone (from the first ``__anext__``) when ``since`` is older than the
        compacted history. Emit a BOOKMARK after ``bookmark_interval`` seconds without
        an event. Runs until the consumer stops iterating.
        """

    @abstractmethod
    async def current_revision(self) -> int: ...

    @abstractmethod
    async def compact(self, keep_revisions: int) -> int:
        """Drop event-log entries older than ``current - keep_revisions``; return the
        new oldest retained revision. Watches and continues from before it get Gone."""

    @abstractmethod
    async def close(self) -> None: ...
