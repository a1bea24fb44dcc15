"""MemoryStore and the shared semantics: the rules PostgresStore also follows."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.store_objects import set_spec, ws

from codehub.crd_like.store import (
    AdmissionView,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    Selectors,
    WatchEvent,
)
from codehub.crd_like.store.memory import MemoryStore
from codehub.crd_like.store.semantics import ContinueToken, apply_update, matches, watch_type


def set_desired(value: str) -> Any:
    return set_spec("desired_state", value)


async def collect(it: Any, n: int, limit_s: float = 5.0) -> list[WatchEvent]:
    out: list[WatchEvent] = []

    async def run() -> None:
        async for ev in it:
            if ev.type != "BOOKMARK":
                out.append(ev)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), limit_s)
    return out


async def test_create_get_update_generation_and_noop() -> None:
    s = MemoryStore()
    created = await s.create("workspaces", ws("a"))
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert meta["resourceVersion"] == "1"
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    with pytest.raises(AlreadyExists):
        await s.create("workspaces", ws("a"))
    assert (await s.get("workspaces", "alice", "a")) == created
    with pytest.raises(NotFound):
        await s.get("workspaces", "bob", "a")

    updated = await s.update("workspaces", "alice", "a", set_desired("STANDBY"))
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["resourceVersion"] == "2"
    same = await s.update("workspaces", "alice", "a", set_desired("STANDBY"))
    assert same == updated
    assert await s.current_revision() == 2

    def label(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["labels"]["x"] = "y"
        return obj

    labelled = await s.update("workspaces", "alice", "a", label)
    assert labelled["metadata"]["generation"] == 2
    assert labelled["metadata"]["resourceVersion"] == "3"


async def test_status_subresource_rules() -> None:
    s = MemoryStore()
    await s.create("workspaces", ws("a"))

    def both(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"]["desired_state"] = "PENDING"
        obj["status"] = {"observed_status": "RUNNING"}
        return obj

    main = await s.update("workspaces", "alice", "a", both)
    assert "status" not in main
    assert main["spec"]["desired_state"] == "PENDING"
    st = await s.update("workspaces", "alice", "a", set_desired("RUNNING"), subresource="status")
    assert st["spec"]["desired_state"] == "PENDING"
    assert st["metadata"]["resourceVersion"] == main["metadata"]["resourceVersion"]
    st = await s.update("workspaces", "alice", "a", both, subresource="status")
    assert st["status"] == {"observed_status": "RUNNING"}
    assert st["spec"]["desired_state"] == "PENDING"
    assert st["metadata"]["generation"] == main["metadata"]["generation"]


@pytest.mark.parametrize("field", ["uid", "name", "namespace", "creationTimestamp"])
async def test_immutable_metadata(field: str) -> None:
    s = MemoryStore()
    before = await s.create("workspaces", ws("a"))

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"][field] = "changed"
        return obj

    with pytest.raises(Invalid) as info:
        await s.update("workspaces", "alice", "a", change)
    assert info.value.field == f"metadata.{field}"
    assert await s.get("workspaces", "alice", "a") == before


async def test_mutator_conflict_aborts() -> None:
    s = MemoryStore()
    await s.create("workspaces", ws("a"))

    def stale(obj: dict[str, Any]) -> dict[str, Any]:
        raise Conflict("stale")

    with pytest.raises(Conflict):
        await s.update("workspaces", "alice", "a", stale)
    assert await s.current_revision() == 1


async def test_finalizers_and_deletion() -> None:
    s = MemoryStore()
    obj = ws("a")
    obj["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    created = await s.create("workspaces", obj)
    with pytest.raises(Conflict):
        await s.delete("workspaces", "alice", "a", expected_resource_version="99")
    with pytest.raises(Conflict):
        await s.delete("workspaces", "alice", "a", expected_uid="nope")
    marked, removed = await s.delete(
        "workspaces", "alice", "a", expected_uid=created["metadata"]["uid"]
    )
    assert not removed
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["generation"] == 2
    again, removed = await s.delete("workspaces", "alice", "a")
    assert again == marked
    assert not removed

    def add_finalizer(o: dict[str, Any]) -> dict[str, Any]:
        o["metadata"]["finalizers"].append("other")
        return o

    with pytest.raises(Invalid):
        await s.update("workspaces", "alice", "a", add_finalizer)

    def clear_ts(o: dict[str, Any]) -> dict[str, Any]:
        del o["metadata"]["deletionTimestamp"]
        o["metadata"]["labels"]["z"] = "1"
        return o

    kept = await s.update("workspaces", "alice", "a", clear_ts)
    assert kept["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]

    def drop(o: dict[str, Any]) -> dict[str, Any]:
        o["metadata"]["finalizers"] = []
        return o

    rev_before = await s.current_revision()
    gone = await s.update("workspaces", "alice", "a", drop)
    assert int(gone["metadata"]["resourceVersion"]) == rev_before + 1
    with pytest.raises(NotFound):
        await s.get("workspaces", "alice", "a")
    events = await collect(s.watch("workspaces", since=rev_before), 1)
    assert events[0].type == "DELETED"

    await s.create("workspaces", ws("b"))
    _, removed = await s.delete("workspaces", "alice", "b")
    assert removed
    with pytest.raises(NotFound):
        await s.get("workspaces", "alice", "b")


async def test_list_pagination_is_consistent_with_first_page() -> None:
    s = MemoryStore()
    for i in range(10):
        await s.create("workspaces", ws(f"w{i:02d}", "alice" if i % 2 else "bob"))
    page = await s.list("workspaces", limit=4)
    assert [o["metadata"]["name"] for o in page.items] == ["w01", "w03", "w05", "w07"]
    assert page.continue_token
    assert page.revision == 10
    await s.delete("workspaces", "alice", "w09")
    await s.delete("workspaces", "bob", "w00")
    await s.create("workspaces", ws("w99", "alice"))
    await s.update("workspaces", "bob", "w02", set_desired("PENDING"))
    rest: list[dict[str, Any]] = []
    token = page.continue_token
    while token:
        nxt = await s.list("workspaces", limit=4, continue_token=token)
        assert nxt.revision == 10
        rest += nxt.items
        token = nxt.continue_token
    assert [o["metadata"]["name"] for o in rest] == ["w09", "w00", "w02", "w04", "w06", "w08"]
    w02 = next(o for o in rest if o["metadata"]["name"] == "w02")
    assert w02["spec"]["desired_state"] == "RUNNING"
    now = await s.list("workspaces", namespace="alice")
    assert [o["metadata"]["name"] for o in now.items] == ["w01", "w03", "w05", "w07", "w99"]
    await s.compact(0)
    with pytest.raises(Gone):
        await s.list("workspaces", limit=4, continue_token=page.continue_token)
    with pytest.raises(Invalid):
        await s.list("workspaces", continue_token="garbage!")


async def test_selectors_on_list() -> None:
    s = MemoryStore()
    await s.create("workspaces", ws("a", team="x"))
    await s.create("workspaces", ws("b", team="y"))
    await s.create(
        "events",
        {
            "metadata": {"name": "e1", "namespace": "alice"},
            "involvedObject": {"kind": "Workspace", "name": "a", "uid": "u"},
        },
    )
    got = await s.list("workspaces", selectors=Selectors(labels={"team": "y"}))
    assert [o["metadata"]["name"] for o in got.items] == ["b"]
    got = await s.list("workspaces", selectors=Selectors(fields={"metadata.name": "a"}))
    assert [o["metadata"]["name"] for o in got.items] == ["a"]
    ev = await s.list(
        "events",
        selectors=Selectors(
            fields={"involvedObject.name": "a", "involvedObject.kind": "Workspace"}
        ),
    )
    assert len(ev.items) == 1
    ev = await s.list("events", selectors=Selectors(fields={"involvedObject.name": "b"}))
    assert ev.items == []


async def test_watch_replay_follow_bookmark_and_gone() -> None:
    s = MemoryStore()
    await s.create("workspaces", ws("a"))
    await s.create("events", {"metadata": {"name": "e", "namespace": "alice"}})
    listed = await s.list("workspaces")
    it = s.watch("workspaces", since=0, bookmark_interval=0.05)
    first = await it.__anext__()
    assert (first.type, first.revision) == ("ADDED", 1)
    bookmark = await it.__anext__()
    assert bookmark.type == "BOOKMARK"
    assert bookmark.revision == listed.revision == 2
    await s.update("workspaces", "alice", "a", set_desired("STANDBY"))
    nxt = await it.__anext__()
    assert (nxt.type, nxt.revision) == ("MODIFIED", 3)
    await it.aclose()  # type: ignore[attr-defined]
    await s.compact(1)
    with pytest.raises(Gone):
        await s.watch("workspaces", since=1).__anext__()
    resumed = await collect(s.watch("workspaces", since=2), 1)
    assert resumed[0].revision == 3


async def test_watch_selector_moves_in_and_out() -> None:
    s = MemoryStore()
    await s.create("workspaces", ws("a", team="x"))

    def relabel(value: str) -> Any:
        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"]["labels"]["team"] = value
            return obj

        return mutate

    await s.update("workspaces", "alice", "a", relabel("y"))
    await s.update("workspaces", "alice", "a", relabel("x"))
    events = await collect(
        s.watch("workspaces", since=0, selectors=Selectors(labels={"team": "x"})), 3
    )
    assert [e.type for e in events] == ["ADDED", "DELETED", "ADDED"]


async def test_concurrent_writers_watch_sees_every_revision_once_in_order() -> None:
    s = MemoryStore()
    for w in range(8):
        await s.create("workspaces", ws(f"w{w}"))
    start = (await s.list("workspaces")).revision
    written: list[int] = []

    async def writer(w: int) -> None:
        for i in range(50):
            obj = await s.update(
                "workspaces", "alice", f"w{w}", set_desired(["RUNNING", "STANDBY"][i % 2 == 0])
            )
            written.append(int(obj["metadata"]["resourceVersion"]))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(collect(s.watch("workspaces", since=start), 400))
    await asyncio.gather(*(writer(w) for w in range(8)))
    seen = [e.revision for e in await watcher]
    assert seen == sorted(written)
    assert len(set(seen)) == 400


class _Limit:
    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def __call__(self, view: AdmissionView, old: Any, new: dict[str, Any]) -> None:
        running = await view.running_workspaces(new["metadata"]["namespace"])
        await asyncio.sleep(0.001)
        if new["spec"]["desired_state"] == "RUNNING" and len(running) >= self.limit:
            raise PermissionError("limit")


async def test_admission_is_serialised() -> None:
    s = MemoryStore()
    results = await asyncio.gather(
        *(s.create("workspaces", ws(f"w{i}"), admit=_Limit(2)) for i in range(20)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 2
    assert all(isinstance(r, PermissionError) for r in results if isinstance(r, BaseException))


def test_semantics_helpers() -> None:
    cur = ws("a")
    cur["metadata"].update(uid="u", resourceVersion="5", generation=3, creationTimestamp="t")
    assert (
        apply_update(cur, {**cur, "metadata": {**cur["metadata"], "resourceVersion": "1"}}, None)
        is None
    )
    plan = apply_update(cur, {"metadata": {"name": "a", "labels": {}}, "spec": {}}, None)
    assert plan is not None
    assert plan.obj["metadata"]["uid"] == "u"
    assert plan.obj["metadata"]["generation"] == 4
    assert "resourceVersion" not in plan.obj["metadata"]
    assert matches(cur, Selectors(fields={"metadata.namespace": "alice"}))
    assert not matches(cur, Selectors(labels={"a": "b"}))
    assert not matches(None, None)
    assert watch_type("MODIFIED", None, cur, None) == "MODIFIED"
    tok = ContinueToken(7, "ns", "name")
    assert ContinueToken.decode(tok.encode()) == tok


async def test_list_by_and_list_raw() -> None:
    s = MemoryStore()
    await s.create("workspaces", ws("a"))
    await s.create("workspaces", ws("b", desired="PENDING"))

    def observe(obj: dict[str, Any]) -> dict[str, Any]:
        obj["status"] = {"observed_status": "RUNNING", "operation": "NONE"}
        return obj

    await s.update("workspaces", "alice", "b", observe, subresource="status")
    assert [
        o["metadata"]["name"] for o in await s.list_by("workspaces", desired_state="RUNNING")
    ] == ["a"]
    assert [
        o["metadata"]["name"] for o in await s.list_by("workspaces", observed_status="RUNNING")
    ] == ["b"]
    assert await s.list_by("workspaces", deleting=True) == []
    raw = await s.list_raw("workspaces", limit=1)
    assert [json.loads(x) for x in raw.items] == (await s.list("workspaces", limit=1)).items
    assert raw.continue_token


async def test_expire_events() -> None:
    s = MemoryStore()
    old = await s.create("events", {"metadata": {"name": "old", "namespace": "alice"}})
    s._objects[("events", "alice", "old")]["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    await s.create("events", {"metadata": {"name": "new", "namespace": "alice"}})
    assert await s.expire("events", 3600) == 1
    assert [o["metadata"]["name"] for o in (await s.list("events")).items] == ["new"]
    (ev,) = await collect(s.watch("events", since=int(old["metadata"]["resourceVersion"]) + 1), 1)
    assert (ev.type, ev.object["metadata"]["name"] if ev.object else None) == ("DELETED", "old")
