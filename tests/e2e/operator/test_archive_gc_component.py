"""The Archive GC runs in the real coordinator (docs/archive-gc.md): it is a leader
component, its first pass completes against the stack's bucket and database, and its
metrics are on the coordinator's /metrics."""

from __future__ import annotations

import time

import pytest
from operator_e2e import CoordinatorProcess, Stack

pytestmark = [pytest.mark.e2e]

LIMIT = 60.0  # a liveness bound for the first pass, not a performance assertion


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_leader_runs_archive_gc_passes(stack: Stack, coordinator: CoordinatorProcess) -> None:
    deadline = time.monotonic() + LIMIT
    last = None
    while time.monotonic() < deadline:
        last = sample(coordinator.metrics(), "codehub_gc_last_success_timestamp_seconds")
        if last:
            break
        time.sleep(0.2)
    assert last, f"no complete GC pass:\n{coordinator.log_text()[-3000:]}"
    health = coordinator.health() or {}
    assert health["components"]["archive-gc"]["state"] == "running"
    metrics = coordinator.metrics()
    assert sample(metrics, "codehub_gc_objects_seen") is not None
    assert sample(metrics, "codehub_gc_deleted_total") == 0  # nothing old enough by default
    assert "codehub_gc_skipped_passes_total{" not in metrics


def test_every_leader_component_runs_on_the_adapters_of_its_term(
    stack: Stack, coordinator: CoordinatorProcess
) -> None:
    """The composition root builds every adapter a component needs (the bucket, the
    labelled engine objects, the workspace cache): none fails or restarts for want of
    one, and the cache reports itself synced."""
    from codehub.operator.components import leader_components

    expected = {c.name for c in leader_components()}
    deadline = time.monotonic() + LIMIT
    states: dict[str, object] = {}
    while time.monotonic() < deadline:
        components = (coordinator.health() or {}).get("components") or {}
        states = {name: (c.get("state"), c.get("restarts")) for name, c in components.items()}
        if all(states.get(name) == ("running", 0) for name in expected):
            break
        time.sleep(0.2)
    assert {name: states.get(name) for name in expected} == dict.fromkeys(
        expected, ("running", 0)
    ), coordinator.log_text()[-3000:]
    assert sample(coordinator.metrics(), "codehub_informer_synced") == 1
