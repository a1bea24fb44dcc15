"""Everything the operator's components share, passed explicitly (no globals).

The coordinator builds one ``OperatorContext`` per leadership term and hands it to
``handlers.register`` and ``HealthMonitor``; tests build it over fakes. ``api`` is typed
as a protocol so unit tests may use the real ``ApiClient`` or any object with the same
methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from codehub.adapters.interfaces import InstanceController, StorageProvider
from codehub.operator.clock import Clock, SystemClock
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]
JsonOps = list[dict[str, Any]]
ObserveHint = Callable[[str, str], Awaitable[object]]


class WorkspaceApi(Protocol):
    """The subset of ``codehub.crd_like.client.api.ApiClient`` the operator uses."""

    async def get(self, ns: str, name: str) -> Obj: ...

    async def list(
        self,
        ns: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj: ...

    async def patch_merge(
        self, ns: str, name: str, patch: Mapping[str, Any], status: bool = False
    ) -> Obj: ...

    async def patch_json(self, ns: str, name: str, ops: JsonOps, status: bool = False) -> Obj: ...

    async def post_event(self, ns: str, event: Obj) -> Obj: ...


@dataclass
class Flight:
    """One in-process reconcile of a workspace; later requests only mark it dirty."""

    dirty: bool = False


@dataclass
class OperatorContext:
    settings: Settings
    api: WorkspaceApi
    instances: InstanceController
    storage: StorageProvider
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    #: Called with (namespace, name) right after each actuator; the HealthMonitor
    #: installs its ``observe_one`` here when constructed, unless one is already set.
    observe_hint: ObserveHint | None = None
    #: Reconciles running in this process, by workspace uid (serialises them).
    inflight: dict[str, Flight] = field(default_factory=dict)
    #: Reporting component of Kubernetes events; empty means "codehub-operator/<node id>",
    #: so `describe` (and the leadership tests) show which coordinator acted.
    component: str = ""

    def __post_init__(self) -> None:
        if not self.component:
            node = self.settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
            self.component = f"codehub-operator/{node}"

    @property
    def pauses(self) -> dict[str, float]:
        """``settings.test_pause_actuators`` parsed ("archive=30,restore=5")."""
        return parse_pauses(self.settings.test_pause_actuators)

    async def hint(self, ns: str, name: str) -> None:
        """Ask for an immediate observation; a failing hint never fails the caller."""
        if self.observe_hint is None:
            return
        try:
            await self.observe_hint(ns, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("observation hint for %s/%s failed: %s", ns, name, exc)


def parse_pauses(text: str) -> dict[str, float]:
    pauses: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        action, _, seconds = part.partition("=")
        try:
            pauses[action.strip()] = float(seconds)
        except ValueError:
            log.warning("ignoring malformed test pause %r", part)
    return pauses
