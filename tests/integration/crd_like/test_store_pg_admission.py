"""The running-limit view on real PostgreSQL (crd_like/store/pg/admission.py,
docs/limits.md): the count follows the running-candidate rule exactly, concurrent
admissions through the real limit check never exceed a limit, and a refused write still
names every running workspace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.store_objects import set_spec, ws

from codehub.crd_like.server.admission import LimitExceeded, running_limit_check
from codehub.crd_like.store import AdmissionView, AlreadyExists, RunningRef
from codehub.crd_like.store.postgres import PostgresStore

Obj = dict[str, Any]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(database_url, max_size=5)
    yield s
    await s.close()


def set_status(**fields: str) -> Any:
    def mutate(obj: Obj) -> Obj:
        obj["status"] = {**(obj.get("status") or {}), **fields}
        return obj

    return mutate


async def seed(store: PostgresStore) -> None:
    """One workspace per clause of the rule, in two namespaces, and some that do not count."""
    await store.create("workspaces", ws("asked", "alice"))  # desired RUNNING: counts
    await store.create("workspaces", ws("idle", "alice", desired="STANDBY"))  # no
    await store.create("workspaces", ws("seen", "alice", desired="STANDBY"))
    await store.update(  # observed RUNNING: counts
        "workspaces", "alice", "seen", set_status(observed_status="RUNNING"), subresource="status"
    )
    await store.create("workspaces", ws("starting", "bob", desired="STANDBY"))
    await store.update(  # operation STARTING: counts
        "workspaces", "bob", "starting", set_status(operation="STARTING"), subresource="status"
    )
    doomed = ws("doomed", "bob")
    doomed["metadata"]["finalizers"] = ["codehub.io/cleanup"]
    await store.create("workspaces", doomed)
    await store.delete("workspaces", "bob", "doomed")  # being deleted: does not count


class Probe:
    """An admission check that records what the view answers inside the transaction."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}

    async def __call__(self, view: AdmissionView, old: Obj | None, new: Obj) -> None:
        alice = RunningRef("alice", "asked")
        self.answers = {
            "all": await view.count_running(),
            "alice": await view.count_running("alice"),
            "bob": await view.count_running("bob"),
            "all but alice/asked": await view.count_running(excluding=alice),
            "alice but alice/asked": await view.count_running("alice", excluding=alice),
            "bob but alice/asked": await view.count_running("bob", excluding=alice),
            "all but alice/idle": await view.count_running(excluding=RunningRef("alice", "idle")),
            "listed": await view.running_workspaces(),
            "listed alice": await view.running_workspaces("alice"),
        }


async def test_the_count_follows_the_running_rule_and_agrees_with_the_list(
    store: PostgresStore,
) -> None:
    await seed(store)
    probe = Probe()
    await store.create("workspaces", ws("probe", "carol", desired="STANDBY"), admit=probe)
    a = probe.answers
    assert a["listed"] == [
        RunningRef("alice", "asked"),
        RunningRef("alice", "seen"),
        RunningRef("bob", "starting"),
    ]
    assert a["listed alice"] == [RunningRef("alice", "asked"), RunningRef("alice", "seen")]
    assert (a["all"], a["alice"], a["bob"]) == (3, 2, 1)
    assert (a["all but alice/asked"], a["alice but alice/asked"]) == (2, 1)
    assert a["bob but alice/asked"] == 1  # excluding another namespace's object changes nothing
    assert a["all but alice/idle"] == 3  # excluding a non-candidate changes nothing


async def test_concurrent_admissions_never_exceed_the_limits(database_url: str) -> None:
    """Forty creates and starts from two stores (two pools, as two API servers would have)
    against a per-user limit of 3 and a global limit of 5."""
    stores = [await PostgresStore.open(database_url, max_size=5) for _ in range(2)]
    admit = running_limit_check(max_per_user=3, max_global=5)
    try:
        for ns in ("alice", "bob"):
            for i in range(5):
                await stores[0].create("workspaces", ws(f"s{i}", ns, desired="STANDBY"))
        writes = [
            stores[i % 2].create("workspaces", ws(f"c{i}", ("alice", "bob")[i % 2]), admit=admit)
            for i in range(30)
        ] + [
            stores[i % 2].update(
                "workspaces", ns, f"s{i}", set_spec("desired_state", "RUNNING"), admit=admit
            )
            for ns in ("alice", "bob")
            for i in range(5)
        ]
        results = await asyncio.gather(*writes, return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, LimitExceeded) for r in refused), refused
        assert len(results) - len(refused) == 5  # the global limit, exactly
        running = [
            o
            for o in (await stores[0].list("workspaces")).items
            if o["spec"]["desired_state"] == "RUNNING"
        ]
        per_user = {
            ns: sum(o["metadata"]["namespace"] == ns for o in running) for ns in ("alice", "bob")
        }
        assert len(running) == 5
        assert max(per_user.values()) <= 3
    finally:
        for s in stores:
            await s.close()


async def test_a_refused_write_names_every_running_workspace(store: PostgresStore) -> None:
    await seed(store)
    per_user = running_limit_check(max_per_user=2, max_global=100)
    with pytest.raises(LimitExceeded) as refused:
        await store.create("workspaces", ws("third", "alice"), admit=per_user)
    details = refused.value.details
    assert details["limit_type"] == "per_user"
    assert (details["current"], details["max"]) == (2, 2)
    assert details["running_workspaces"] == [
        {"namespace": "alice", "name": "asked"},
        {"namespace": "alice", "name": "seen"},
    ]

    global_limit = running_limit_check(max_per_user=100, max_global=3)
    with pytest.raises(LimitExceeded) as refused:
        await store.create("workspaces", ws("fourth", "carol"), admit=global_limit)
    details = refused.value.details
    assert (details["limit_type"], details["current"], details["max"]) == ("global", 3, 3)
    assert [(r["namespace"], r["name"]) for r in details["running_workspaces"]] == [
        ("alice", "asked"),
        ("alice", "seen"),
        ("bob", "starting"),
    ]

    # Re-saving a counted workspace is not refused: it is excluded, then counted once.
    await store.update(
        "workspaces", "alice", "asked", set_spec("image_ref", "other"), admit=per_user
    )


async def test_a_taken_name_answers_already_exists_whether_admitted_or_refused(
    store: PostgresStore,
) -> None:
    """The name is looked up only when the check refuses; a create of a taken name is
    AlreadyExists (409) either way, never the limit's 429, and changes nothing."""
    await seed(store)
    refusing = running_limit_check(max_per_user=1, max_global=100)
    admitting = running_limit_check(max_per_user=100, max_global=100)
    before = await store.get("workspaces", "alice", "asked")
    for admit in (refusing, admitting):
        with pytest.raises(AlreadyExists):
            await store.create("workspaces", ws("asked", "alice"), admit=admit)
    assert await store.get("workspaces", "alice", "asked") == before
    with pytest.raises(LimitExceeded):  # a free name is refused as before
        await store.create("workspaces", ws("fresh", "alice"), admit=refusing)
