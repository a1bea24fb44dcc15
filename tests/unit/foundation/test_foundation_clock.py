"""FakeClock: time moves only when told, so time-based components test without waiting."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from codehub.operator.clock import Clock, FakeClock, SystemClock, run_every


def test_fake_clock_moves_only_when_advanced() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    clock = FakeClock(start)
    assert clock.now() == start
    assert clock.now() == start
    m0 = clock.monotonic()
    clock.advance(90)
    assert clock.now() == start + timedelta(seconds=90)
    assert clock.monotonic() - m0 == 90


async def test_fake_sleep_advances_instead_of_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep
    waits: list[float] = []

    async def recording_sleep(delay: float, result: object = None) -> object:
        waits.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    clock = FakeClock()
    before = clock.now()
    await clock.sleep(3600)
    assert clock.now() - before == timedelta(hours=1)
    assert all(w == 0 for w in waits)  # an hour of fake time, no real waiting


async def test_fake_sleep_yields_to_other_tasks() -> None:
    clock = FakeClock()
    seen: list[str] = []

    async def other() -> None:
        seen.append("other ran")

    task = asyncio.create_task(other())
    await clock.sleep(1)
    assert seen == ["other ran"]
    await task


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock()]
    for c in clocks:
        assert c.now().tzinfo is not None
        assert isinstance(c.monotonic(), float)


@pytest.mark.parametrize("wait_first", [False, True])
async def test_run_every_survives_a_failed_pass_and_stops_on_cancel(
    wait_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    passes: list[float] = []

    async def do_pass() -> None:
        passes.append(clock.monotonic())
        if len(passes) == 2:
            raise RuntimeError("boom")
        if len(passes) == 4:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_every(clock, 10.0, do_pass, logging.getLogger("t"), "demo", wait_first=wait_first)
    first = 10.0 if wait_first else 0.0
    assert passes == [first, first + 10, first + 20, first + 30]
    assert "demo pass failed" in caplog.text
    assert "boom" in caplog.text
