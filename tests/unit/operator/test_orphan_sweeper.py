"""The orphan sweeper's passes over a fake engine: delay, failures, metric."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from codehub.adapters.engine_objects import LabelledObject, LabelledObjects
from codehub.operator.clock import FakeClock
from codehub.operator.orphan_sweeper import OrphanSweeper


class FakeEngine(LabelledObjects):
    def __init__(self, objects: list[LabelledObject]) -> None:
        self.objects = list(objects)
        self.fail_listing = False
        self.busy: set[str] = set()

    async def list_labelled(self) -> list[LabelledObject]:
        if self.fail_listing:
            raise OSError("engine down")
        return list(self.objects)

    async def remove_labelled(self, obj: LabelledObject) -> bool:
        if obj.ref in self.busy:
            return False
        self.objects.remove(obj)
        return True


class FakeApi:
    def __init__(self, uids: set[str]) -> None:
        self.uids = uids
        self.fail = False

    async def list(self, ns: str | None = None) -> dict[str, Any]:
        if self.fail:
            raise OSError("api down")
        return {"items": [{"metadata": {"uid": u}} for u in sorted(self.uids)]}


ORPHAN = LabelledObject("container", "gone", "c1", "ws-gone")
ORPHAN_VOLUME = LabelledObject("volume", "gone", "ws-gone-home", "ws-gone-home")
LIVE = LabelledObject("volume", "alive", "ws-alive-home", "ws-alive-home")


def make(
    objects: list[LabelledObject], uids: set[str]
) -> tuple[OrphanSweeper, FakeEngine, FakeApi, FakeClock, CollectorRegistry]:
    engine, api = FakeEngine(objects), FakeApi(uids)
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    registry = CollectorRegistry()
    sweeper = OrphanSweeper(api=api, engine=engine, delay=60, registry=registry, clock=clock)
    return sweeper, engine, api, clock, registry


def removed(registry: CollectorRegistry, kind: str) -> float:
    value = registry.get_sample_value("codehub_orphan_resources_removed_total", {"kind": kind})
    return value or 0.0


async def test_orphans_removed_after_the_delay_live_untouched() -> None:
    sweeper, engine, _, clock, registry = make([ORPHAN, ORPHAN_VOLUME, LIVE], {"alive"})
    first = await sweeper.pass_once()
    assert first.waiting == 2
    assert not first.removed
    clock.advance(30)
    assert not (await sweeper.pass_once()).removed
    clock.advance(31)
    report = await sweeper.pass_once()
    assert report.removed == {"container": 1, "volume": 1}
    assert engine.objects == [LIVE]
    assert removed(registry, "container") == 1
    assert removed(registry, "volume") == 1
    assert removed(registry, "job") == 0


async def test_a_failed_listing_removes_nothing() -> None:
    sweeper, engine, api, clock, _ = make([ORPHAN], set())
    await sweeper.pass_once()
    clock.advance(120)
    api.fail = True
    assert (await sweeper.pass_once()).skipped == "listing"
    api.fail, engine.fail_listing = False, True
    assert (await sweeper.pass_once()).skipped == "engine"
    assert engine.objects == [ORPHAN]


async def test_workspace_back_resets_the_delay() -> None:
    sweeper, engine, api, clock, _ = make([ORPHAN], set())
    await sweeper.pass_once()
    api.uids = {"gone"}
    clock.advance(120)
    await sweeper.pass_once()
    api.uids = set()
    assert not (await sweeper.pass_once()).removed
    assert engine.objects == [ORPHAN]


async def test_a_volume_in_use_is_retried_next_pass() -> None:
    sweeper, engine, _, clock, registry = make([ORPHAN_VOLUME], set())
    engine.busy.add(ORPHAN_VOLUME.ref)
    await sweeper.pass_once()
    clock.advance(61)
    assert (await sweeper.pass_once()).kept == 1
    engine.busy.clear()
    assert (await sweeper.pass_once()).removed == {"volume": 1}
    assert removed(registry, "volume") == 1


class _Term:
    """The slice of a leadership term the sweeper component uses."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.informer = None
        self.running: list[str] = []

    def mark_running(self, name: str) -> None:
        self.running.append(name)


def _context(engine: LabelledObjects | None) -> Any:
    from codehub.adapters.fake_instance import FakeInstanceController
    from codehub.adapters.fake_storage import FakeStorageProvider
    from codehub.operator.context import OperatorContext
    from codehub.operator.settings import Settings

    return OperatorContext(
        settings=Settings(),
        api=FakeApi(set()),  # type: ignore[arg-type]
        instances=FakeInstanceController(),
        storage=FakeStorageProvider(),
        engine_objects=engine,
    )


async def test_the_leader_sweeps_the_engine_objects_of_its_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine objects come from the composition root with the other adapters, not
    from a Docker client made inside the component (the scale bench hands in fakes)."""
    from codehub.operator import orphan_sweeper

    swept: list[Any] = []

    async def run(self: OrphanSweeper) -> None:
        swept.append(self.engine)

    monkeypatch.setattr(orphan_sweeper.OrphanSweeper, "run", run)
    engine = FakeEngine([])
    term = _Term(_context(engine))
    await orphan_sweeper.run_orphan_sweeper(term)  # type: ignore[arg-type]
    assert swept == [engine]
    assert term.running == ["orphan-sweeper"]


async def test_a_context_without_engine_objects_is_refused_by_name() -> None:
    from codehub.operator.orphan_sweeper import run_orphan_sweeper

    term = _Term(_context(None))
    with pytest.raises(RuntimeError, match="no labelled engine objects"):
        await run_orphan_sweeper(term)  # type: ignore[arg-type]
    assert term.running == []
