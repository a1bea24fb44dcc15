"""Admission counts first and lists only to refuse (docs/limits.md): an admitted write
never pays for the names of every running workspace; the memory store's count agrees
with its list."""

from __future__ import annotations

from typing import Any

import pytest
from support.store_objects import ws

from codehub.crd_like.server.admission import LimitExceeded, running_limit_check
from codehub.crd_like.store import AdmissionView, RunningRef
from codehub.crd_like.store.memory import MemoryStore

Obj = dict[str, Any]


class CountingView(AdmissionView):
    """``running`` workspaces; records which questions were asked."""

    def __init__(self, running: list[RunningRef]) -> None:
        self.running = running
        self.listed = 0
        self.counted = 0

    async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
        self.listed += 1
        return [r for r in self.running if namespace is None or r.namespace == namespace]

    async def count_running(
        self, namespace: str | None = None, *, excluding: RunningRef | None = None
    ) -> int:
        self.counted += 1
        refs = [r for r in self.running if namespace is None or r.namespace == namespace]
        return sum(1 for r in refs if r != excluding)


RUNNING = [RunningRef("alice", "a"), RunningRef("alice", "b"), RunningRef("bob", "x")]


@pytest.mark.parametrize(
    ("name", "per_user", "global_", "refused", "listed"),
    [
        ("new", 3, 4, None, 0),  # 2+1 <= 3 and 3+1 <= 4: admitted, nothing listed
        ("a", 2, 3, None, 0),  # re-asking for a counted one: excluded, then counted once
        ("new", 2, 10, "per_user", 1),
        ("new", 10, 3, "global", 1),
    ],
)
async def test_the_check_lists_only_to_refuse(
    name: str, per_user: int, global_: int, refused: str | None, listed: int
) -> None:
    view = CountingView(RUNNING)
    check = running_limit_check(per_user, global_)
    new = ws(name, "alice")
    if refused is None:
        await check(view, None, new)
    else:
        with pytest.raises(LimitExceeded) as exc:
            await check(view, None, new)
        assert exc.value.limit_type == refused
        expected = [r for r in RUNNING if refused == "global" or r.namespace == "alice"]
        assert exc.value.details["running_workspaces"] == [
            {"namespace": r.namespace, "name": r.name} for r in expected
        ]
        assert exc.value.details["current"] == len(expected)
    assert view.listed == listed
    assert view.counted >= 1


async def test_the_default_count_is_the_length_of_the_list() -> None:
    class ListOnly(AdmissionView):
        async def running_workspaces(self, namespace: str | None = None) -> list[RunningRef]:
            return [r for r in RUNNING if namespace is None or r.namespace == namespace]

    view = ListOnly()
    assert await view.count_running() == 3
    assert await view.count_running("alice", excluding=RunningRef("alice", "a")) == 1
    assert await view.count_running(excluding=RunningRef("carol", "z")) == 3


async def test_the_memory_count_agrees_with_its_list() -> None:
    store = MemoryStore()
    await store.create("workspaces", ws("a", "alice"))
    await store.create("workspaces", ws("b", "alice", desired="STANDBY"))
    await store.create("workspaces", ws("x", "bob"))
    answers: list[Any] = []

    async def probe(view: AdmissionView, old: Obj | None, new: Obj) -> None:
        me = RunningRef("alice", "a")
        for ns in (None, "alice", "bob"):
            listed = await view.running_workspaces(ns)
            answers.append((len(listed), await view.count_running(ns)))
            answers.append(
                (len([r for r in listed if r != me]), await view.count_running(ns, excluding=me))
            )

    await store.create("workspaces", ws("probe", "carol", desired="STANDBY"), admit=probe)
    assert answers == [(2, 2), (1, 1), (1, 1), (0, 0), (1, 1), (1, 1)]
