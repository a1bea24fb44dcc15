"""Everything the operator's components share, passed explicitly (no globals).

The coordinator builds one ``OperatorContext`` per leadership term (settings, API client,
adapters -- engine, volumes, archive bucket, labelled engine objects -- clock, metrics: no
callbacks, no mutable shared state) and hands it to the reconcile gate and the
components; tests build it over fakes. ``api`` is typed as a protocol so unit tests may
use the real ``ApiClient`` or any object with the same methods.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from codehub.adapters.engine_objects import LabelledObjects
from codehub.adapters.interfaces import InstanceController, ObjectStore, StorageProvider
from codehub.operator.clock import Clock, SystemClock
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]
JsonOps = list[dict[str, Any]]


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
class OperatorContext:
    settings: Settings
    api: WorkspaceApi
    instances: InstanceController
    storage: StorageProvider
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    #: The archive bucket the Archive GC sweeps, built with the other adapters at the
    #: composition root; None only in contexts that never run the GC (unit tests).
    objects: ObjectStore | None = None
    #: The labelled engine objects (containers, job containers, volumes) the orphan
    #: sweeper lists and removes; None only in contexts that never run it (unit tests).
    engine_objects: LabelledObjects | None = None
    #: Reporting component of Kubernetes events; empty means "codehub-operator/<node id>",
    #: so `describe` (and the leadership tests) show which coordinator acted.
    component: str = ""

    def __post_init__(self) -> None:
        if not self.component:
            node = self.settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
            self.component = f"codehub-operator/{node}"
