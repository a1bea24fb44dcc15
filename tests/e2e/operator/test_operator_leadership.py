"""Two coordinators: only the leader acts; killing it hands over to the standby."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import pytest
from operator_e2e import CoordinatorProcess, History, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OP_ID = re.compile(r"op_id ([0-9a-f-]{36})")


def _leaders(coords: list[CoordinatorProcess]) -> list[str]:
    return [c.node_id for c in coords if c.alive() and c.is_leader()]


async def _completed(stack: Stack, expected: int) -> list[tuple[str, str, str]]:
    """(workspace, op_id, acting component) of every OperationCompleted event, once at
    least ``expected`` are there (an Event is posted just after the write it tells of;
    the short operations here have no OperationStarted, docs/events.md)."""
    deadline = time.monotonic() + 30
    rows = await _completed_now(stack)
    for _ in range(120):
        if len(rows) >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
        rows = await _completed_now(stack)
    return rows


async def _completed_now(stack: Stack) -> list[tuple[str, str, str]]:
    rows = []
    for e in await stack.events():
        if e.get("reason") != "OperationCompleted":
            continue
        op_ids = OP_ID.findall(str(e.get("message")))  # one Event may tell several
        assert op_ids, e
        component = (e.get("source") or {}).get("component") or e.get("reportingComponent")
        rows.extend((e["involvedObject"]["name"], op_id, str(component)) for op_id in op_ids)
    return rows


async def test_only_the_leader_acts_and_the_standby_takes_over(
    stack: Stack, history: History
) -> None:
    a = stack.start_coordinator("alpha")
    stack.wait_leader(a)
    b = stack.start_coordinator("beta")
    coords = [a, b]
    for _ in range(10):
        assert _leaders(coords) == ["alpha"]
        await asyncio.sleep(0.1)
    health = b.health()
    assert health is not None
    assert health["leader"] is False
    assert health["node_id"] == "beta"
    assert "codehub_leader 1.0" in a.metrics()
    assert "codehub_leader 0.0" in b.metrics()

    names = ["lead-1", "lead-2"]
    for name in names:
        await stack.create(name, "RUNNING")
    for name in names:
        await stack.wait_display(name, "RUNNING")
    await stack.set_desired("lead-1", "STANDBY")
    await stack.wait_display("lead-1", "STANDBY")

    done = await _completed(stack, 5)
    assert {component for _, _, component in done} == {"codehub-operator/alpha"}
    per_op = Counter(op_id for _, op_id, _ in done)
    assert per_op, "no operation was completed"
    assert max(per_op.values()) == 1, f"an operation was completed twice: {per_op}"
    assert "claimed" not in b.log_text()
    assert len(done) == 5  # 2 x (PROVISIONING, STARTING) + STOPPING

    # Kill the leader; the standby takes over.
    killed_at = time.monotonic()
    a.kill()
    stack.wait_leader(b)
    failover = time.monotonic() - killed_at
    print(f"\nFAILOVER: standby became leader {failover:.2f}s after the leader was SIGKILLed")
    assert _leaders(coords) == ["beta"]
    assert "codehub_leader 1.0" in b.metrics()

    # The new leader does the work from now on, still once per operation.
    await stack.set_desired("lead-1", "RUNNING")
    await stack.set_desired("lead-2", "STANDBY")
    await stack.wait_display("lead-1", "RUNNING")
    await stack.wait_display("lead-2", "STANDBY")
    everything = await _completed(stack, 7)  # + STARTING of lead-1, STOPPING of lead-2
    after = [row for row in everything if row not in done]
    assert {component for _, _, component in after} == {"codehub-operator/beta"}
    per_op = Counter(op_id for _, op_id, _ in everything)
    assert max(per_op.values()) == 1, f"an operation was completed twice: {per_op}"
    assert history.operations("lead-1")[-1] == "STARTING"
    assert history.operations("lead-2")[-1] == "STOPPING"

    # The old leader comes back as a standby and does not act.
    c = stack.start_coordinator("alpha")
    await asyncio.sleep(3)
    assert _leaders([b, c]) == ["beta"]
