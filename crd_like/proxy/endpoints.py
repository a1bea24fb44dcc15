"""Running workspaces, kept in memory from a store watch, so forwarding needs no query.

The proxy learns where a workspace listens from ``status.endpoint`` (docs/proxy.md), as
kube-proxy learns from Endpoints through an informer: a list, then a watch from its
revision (PostgreSQL NOTIFY wakes it within milliseconds). Only workspaces that have an
endpoint and are not being deleted are kept; a request for any other workspace -- the
sleeping ones, the ones that just got an endpoint the watch has not delivered yet --
reads the store as before, so a wake always decides on fresh data. Authorisation never
depends on this cache: it is decided from the identity and the namespace in the URL.

The staleness it adds (the watch's delivery time) is far below the one the endpoint
itself has (the operator writes it after the container changed).
"""

from __future__ import annotations

import asyncio
import logging

from codehub.crd_like.store.interface import Obj, Store, WatchEvent

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def _usable(obj: Obj) -> bool:
    meta = obj.get("metadata") or {}
    endpoint = (obj.get("status") or {}).get("endpoint")
    return bool(endpoint) and not meta.get("deletionTimestamp")


class EndpointCache:
    def __init__(self, store: Store, bookmark_interval: float | None = None) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.objects: dict[tuple[str, str], Obj] = {}
        self.synced = False
        #: The store revision the cache reflects (0 until the first list).
        self.revision = 0

    def get(self, namespace: str, name: str) -> Obj | None:
        """The workspace if it is known to have an endpoint; None means "ask the store"."""
        return self.objects.get((namespace, name)) if self.synced else None

    def forget(self, namespace: str, name: str) -> None:
        """Drop an entry whose upstream failed: the next request reads the store."""
        self.objects.pop((namespace, name), None)

    def apply(self, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED" or not _usable(obj):
            self.objects.pop(_key(obj), None)
        else:
            self.objects[_key(obj)] = obj

    def apply_event(self, event: WatchEvent) -> None:
        """Decides on the event's shared body and copies only what it keeps: most
        events (workspaces without an endpoint) cost no decode."""
        shared = event.shared
        if shared is None:
            return
        if event.type == "DELETED" or not _usable(shared):
            self.objects.pop(_key(shared), None)
        else:
            obj = event.object
            assert obj is not None
            self.objects[_key(obj)] = obj

    async def run(self) -> None:
        """List, then follow the watch; on any failure forget everything and start again."""
        while True:
            try:
                listed = await self.store.list("workspaces")
                self.objects = {_key(o): o for o in listed.items if _usable(o)}
                self.revision = listed.revision
                self.synced = True
                async for event in self.store.watch(
                    "workspaces", since=listed.revision, bookmark_interval=self.bookmark_interval
                ):
                    if event.type != "BOOKMARK":
                        self.apply_event(event)
                    self.revision = max(self.revision, event.revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("proxy: endpoint watch restarts: %r", exc)
            self.synced = False
            self.objects = {}
            await asyncio.sleep(RETRY_SECONDS)
