"""The informer (crd_like/client/informer.py) on PostgreSQL: a watch resumed from a
revision the store has compacted away answers 410, and the informer re-lists; the List
replaces the cache (a workspace deleted meanwhile vanishes) and the watch goes on from
the List's revision."""

from __future__ import annotations

import asyncio
import contextlib

from support.api import ApiFactory
from support.informer import SteeredClient, until

from codehub.crd_like.client.informer import Informer

NS = "alice"


async def test_relist_after_410_on_postgres(make_api: ApiFactory) -> None:
    api = await make_api("postgres", bookmark_interval=0.3)
    admin = api.client("admin")
    for name in ("a", "b"):
        await admin.create(NS, {"metadata": {"name": name}, "spec": {"desired_state": "STANDBY"}})
    client = SteeredClient(api.client("operator"))
    informer = Informer(client, watch_timeout=1.0, page_size=1)
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced(30)
        assert (informer.relists, len(informer)) == (1, 2)
        client.open.clear()
        await until(lambda: client.held == 1, "the next stream held back")
        held_at = client.watch_versions[-1]
        for i in range(5):
            await admin.patch_merge(NS, "a", {"spec": {"memo": f"m{i}"}})
        await admin.delete(NS, "b")
        await api.store.compact(1)
        client.open.set()

        await until(lambda: informer.relists == 2, "a re-list after 410")
        assert informer.get(NS, "b") is None
        a = informer.get(NS, "a")
        assert a is not None
        assert a["spec"]["memo"] == "m4"
        assert int(informer.resource_version or 0) > int(held_at or 0)
        written = await admin.patch_merge(NS, "a", {"spec": {"memo": "after"}})
        rv = written["metadata"]["resourceVersion"]
        await until(lambda: informer.resource_version == rv, "watching after the re-list")
        a = informer.get(NS, "a")
        assert a is not None
        assert a["spec"]["memo"] == "after"
        assert informer.relists == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
