"""Watch events on a shared body: a watcher that only relays an event pays no decode,
one that asks for the object gets its own copy, and nothing shared can be changed
through an event (docs/adr/0007-api-write-path-performance.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from codehub.crd_like.server.watch import LineCache, encode_line
from codehub.crd_like.store.interface import Selectors, WatchEvent
from codehub.crd_like.store.memory import MemoryStore
from codehub.crd_like.store.pg.watch import Hub, LogRow, _from_cache


class CountingRow(LogRow):
    """A log entry that counts its decodes."""

    __slots__ = ("decodes",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.decodes = 0

    def view(self) -> dict[str, Any]:
        if self._body is None:
            self.decodes += 1
        return super().view()

    def fresh(self) -> dict[str, Any]:
        self.decodes += 1
        return super().fresh()


def body(name: str, team: str, n: int, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": {"team": team}}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"metadata": meta, "spec": {"n": n}}


def offered_row(rev: int, team: str = "x", n: int = 0) -> CountingRow:
    """As a write of this process offers it: compact text, no resourceVersion in it."""
    text = json.dumps(body("a", team, n), separators=(",", ":"))
    return CountingRow(rev, "workspaces", "ns", "MODIFIED", text, None)


def hub_with(*rows: LogRow) -> Hub:
    pool: Any = None  # never used: rows are offered, nothing is read from the log
    hub = Hub("postgresql://unused", pool, interval=1.0, listen=False, cache_size=100)
    hub.head = hub.loaded = hub.cache_floor = rows[0].revision - 1
    for row in rows:
        hub.offer(row)
    return hub


def test_plain_watchers_of_the_pg_cache_share_one_decode_per_event() -> None:
    rows = [offered_row(6, n=1), offered_row(7, n=2)]
    hub = hub_with(*rows)
    lines = LineCache()
    out: list[list[bytes]] = []
    for _ in range(3):  # three plain watchers of the same events
        events, examined, _ = _from_cache(hub, "workspaces", None, 5, None)
        assert examined == 7
        out.append([lines.line(e) for e in events])
    assert out[0] == out[1] == out[2]
    assert [r.decodes for r in rows] == [1, 1]
    assert lines.encoded == 2
    first = json.loads(out[0][0])
    assert first["type"] == "MODIFIED"
    assert first["object"]["metadata"]["resourceVersion"] == "6"
    assert first["object"]["spec"] == {"n": 1}


def test_each_watcher_gets_its_own_object_and_the_shared_body_stays_intact() -> None:
    row = offered_row(6, n=1)
    hub = hub_with(row)
    (a,), _, _ = _from_cache(hub, "workspaces", None, 5, None)
    (b,), _, _ = _from_cache(hub, "workspaces", None, 5, None)
    obj_a, obj_b = a.object, b.object
    assert obj_a is not None
    assert obj_b is not None
    assert obj_a is not obj_b
    assert a.object is obj_a  # one copy per event, not one per access
    assert obj_a["metadata"]["resourceVersion"] == "6"
    obj_a["spec"]["n"] = 99
    obj_a["metadata"]["labels"]["team"] = "changed"
    assert obj_b["spec"]["n"] == 1
    assert obj_b["metadata"]["labels"]["team"] == "x"
    assert row.view()["spec"]["n"] == 1
    assert a.shared is row.view()  # the shared body is not the changed copy
    assert json.loads(LineCache().line(a))["object"]["spec"]["n"] == 1


def test_a_selector_watcher_and_a_plain_one_see_the_same_bodies() -> None:
    rows = [offered_row(6, "x", 1), offered_row(7, "y", 2), offered_row(8, "x", 3)]
    for r in rows:
        r.prev_text = None
    rows[1].prev_text = rows[0].body_text
    rows[2].prev_text = rows[1].body_text
    hub = hub_with(*rows)
    lines = LineCache()
    plain, _, _ = _from_cache(hub, "workspaces", None, 5, None)
    team_x = Selectors(labels={"team": "x"})
    picky, _, _ = _from_cache(hub, "workspaces", None, 5, team_x)
    assert [(e.type, e.revision) for e in plain] == [("MODIFIED", r) for r in (6, 7, 8)]
    # rev 6 has no previous body here, so the selector sees it start matching: ADDED.
    assert [(e.type, e.revision) for e in picky] == [("ADDED", 6), ("DELETED", 7), ("ADDED", 8)]
    for event in plain + picky:
        line = json.loads(lines.line(event))
        assert line["type"] == event.type
        assert line["object"]["metadata"]["resourceVersion"] == str(event.revision)
        assert line["object"]["spec"]["n"] == event.revision - 5
    assert [r.decodes for r in rows] == [1, 1, 1]


def test_a_table_or_filtering_watcher_reads_the_shared_body_without_a_copy() -> None:
    row = offered_row(6, n=1)
    hub = hub_with(row)
    (event,), _, _ = _from_cache(hub, "workspaces", None, 5, None)
    shared = event.shared
    assert shared is not None
    assert encode_line(event.type, {"wrapped": shared}).startswith(b'{"type":"MODIFIED"')
    assert row.decodes == 1  # the view only; no private copy was made


async def take(it: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    out = []
    async for event in it:
        out.append(event)
        if len(out) == n:
            break
    return out


async def test_memory_store_write_watch_write_watch_serves_each_revision_unshared() -> None:
    store = MemoryStore()
    await store.create("workspaces", body("a", "x", 1))
    (first,) = await take(store.watch("workspaces", since=0), 1)
    obj = first.object
    assert obj is not None
    obj["spec"]["n"] = 99  # a consumer changing its own copy
    await store.update("workspaces", "ns", "a", lambda o: {**o, "spec": {"n": 2}})
    again = await take(store.watch("workspaces", since=0), 2)
    assert [e.type for e in again] == ["ADDED", "MODIFIED"]
    assert [e.object["spec"]["n"] for e in again if e.object] == [1, 2]
    assert [e.object["metadata"]["resourceVersion"] for e in again if e.object] == ["1", "2"]
    assert (await store.get("workspaces", "ns", "a"))["spec"]["n"] == 2
    changed = again[1].object
    assert changed is not None
    changed["metadata"]["labels"]["team"] = "changed"
    (last,) = await take(store.watch("workspaces", since=1), 1)
    assert last.object is not None
    assert last.object["metadata"]["labels"]["team"] == "x"
    assert (await store.get("workspaces", "ns", "a"))["metadata"]["labels"]["team"] == "x"


def test_events_compare_by_content_whatever_their_source() -> None:
    row = offered_row(6, n=1)
    lazy = WatchEvent("MODIFIED", 6, body=row)
    eager = WatchEvent("MODIFIED", 6, row.fresh())
    assert lazy == eager
    assert lazy != WatchEvent("MODIFIED", 6, body("a", "x", 2, "6"))
    assert WatchEvent("BOOKMARK", 3) == WatchEvent("BOOKMARK", 3)
    assert "revision=6" in repr(lazy)


def test_the_proxy_endpoint_cache_copies_only_what_it_keeps() -> None:
    from codehub.crd_like.proxy.endpoints import EndpointCache

    cache = EndpointCache(MemoryStore())
    cache.synced = True
    idle = offered_row(6)
    cache.apply_event(WatchEvent("MODIFIED", 6, body=idle))
    assert idle.decodes == 1  # decided on the shared body, nothing copied
    assert cache.get("ns", "a") is None
    running = body("a", "x", 1)
    running["status"] = {"endpoint": "http://127.0.0.1:1"}
    row = CountingRow(7, "workspaces", "ns", "MODIFIED", json.dumps(running), None)
    cache.apply_event(WatchEvent("MODIFIED", 7, body=row))
    kept = cache.get("ns", "a")
    assert kept is not None
    assert kept is not row.view()  # its own copy: the proxy may keep and change it
    assert kept["metadata"]["resourceVersion"] == "7"
    cache.apply_event(WatchEvent("DELETED", 8, body=offered_row(8)))
    assert cache.get("ns", "a") is None


def test_a_status_update_shares_nothing_with_the_current_object_or_the_result() -> None:
    from codehub.crd_like.store.semantics import apply_update

    current = body("a", "x", 1, "5")
    current["status"] = {"phase": "old", "conditions": [{"type": "A"}]}
    current["extra"] = {"kept": [1]}
    result = body("a", "x", 1, "5")
    result["status"] = {"phase": "new", "conditions": [{"type": "B"}]}
    plan = apply_update(current, result, "status")
    assert plan is not None
    new = plan.obj
    assert list(new) == list(current)  # the key order is kept
    assert new["status"] == {"phase": "new", "conditions": [{"type": "B"}]}
    result["status"]["conditions"][0]["type"] = "changed"
    new["spec"]["n"] = 7
    new["extra"]["kept"].append(2)
    new["metadata"]["labels"]["team"] = "changed"
    assert new["status"]["conditions"][0]["type"] == "B"
    assert current == {
        **body("a", "x", 1, "5"),
        "status": {"phase": "old", "conditions": [{"type": "A"}]},
        "extra": {"kept": [1]},
    }
    cleared = apply_update(current, {k: v for k, v in current.items() if k != "status"}, "status")
    assert cleared is not None
    assert "status" not in cleared.obj


def test_only_the_newest_entries_keep_their_decoded_body(monkeypatch: Any) -> None:
    from codehub.crd_like.store.pg import watch as pg_watch

    monkeypatch.setattr(pg_watch, "VIEW_WINDOW", 2)
    rows = [offered_row(6, n=1)]
    hub = hub_with(rows[0])
    for rev in range(7, 11):
        rows[0].view()
        rows.append(offered_row(rev, n=rev - 5))
        hub.offer(rows[-1])
        rows[-1].view()
    assert [r._body is not None for r in rows] == [False, False, False, True, True]
    late = rows[0].view()  # a late watcher still gets the right body...
    assert late["metadata"]["resourceVersion"] == "6"
    assert late["spec"]["n"] == 1
    assert rows[0]._body is None  # ...decoded for it alone, not kept
    events, _, _ = _from_cache(hub, "workspaces", None, 5, None)
    assert [json.loads(LineCache().line(e))["object"]["spec"]["n"] for e in events] == [
        1,
        2,
        3,
        4,
        5,
    ]
