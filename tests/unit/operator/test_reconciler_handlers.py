"""The kopf glue that needs no server: outcome mapping, the timer's pre-check, settings."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from codehub.operator import handlers
from codehub.operator.kopf_memory import KeyCachingProgressStorage, TermDiffBaseStorage
from codehub.operator.planning import Operation
from codehub.operator.reconciler import Outcome


def body(
    observed: str | None = None,
    desired: str = "RUNNING",
    operation: str | None = "NONE",
    error: dict[str, Any] | None = None,
    archive_key: str | None = None,
    deleting: bool = False,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "w", "namespace": "n", "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"desired_state": desired},
        "status": {
            "observed_status": observed,
            "operation": operation,
            "error_info": error,
            "archive_key": archive_key,
        },
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (body("RUNNING", "RUNNING"), False),  # settled: no I/O at all
        (body("STANDBY", "STANDBY"), False),
        (body("PENDING", "PENDING", archive_key="k"), False),
        (body("RUNNING", "STANDBY"), True),  # drift from desired
        (body("STANDBY", "RUNNING"), True),  # e.g. container vanished
        (body(None, "PENDING"), True),  # never observed
        (body("RUNNING", "RUNNING", operation="STARTING"), True),  # claimed, maybe orphaned
        (body("ERROR", "RUNNING"), True),  # ERROR without error_info: record / recovered
        (body("ERROR", "RUNNING", error={"is_terminal": True}), False),  # left alone
        (body("RUNNING", "RUNNING", error={"is_terminal": False}), True),  # retry pending
        (body("ERROR", "RUNNING", error={"is_terminal": True}, deleting=True), True),
    ],
)
def test_needs_reconcile(obj: dict[str, Any], expected: bool) -> None:
    assert handlers.needs_reconcile(obj) is expected


def test_outcomes_map_to_kopf() -> None:
    handlers.raise_for(Outcome("done", detail="converged"))
    handlers.raise_for(Outcome("terminal", reason="DataLost"))
    with pytest.raises(kopf.TemporaryError) as info:
        handlers.raise_for(Outcome("retry", delay=42.0, operation=Operation.STARTING))
    assert info.value.delay == 42.0


def test_desired_source_is_a_bounded_label() -> None:
    assert handlers.desired_source(body()) == "api"
    ttl = body(annotations={handlers.DESIRED_SOURCE_ANNOTATION: "ttl"})
    assert handlers.desired_source(ttl) == "ttl"
    odd = body(annotations={handlers.DESIRED_SOURCE_ANNOTATION: "a-uid-1234"})
    assert handlers.desired_source(odd) == "other"


def test_desired_change_detection_from_kopf_diffs() -> None:
    change = [("change", ("spec", "desired_state"), "RUNNING", "STANDBY")]
    assert handlers._desired_changed(change)
    whole = [("change", ("spec",), {"desired_state": "A"}, {"desired_state": "B"})]
    assert handlers._desired_changed(whole)
    other = [("change", ("spec", "memo"), "a", "b")]
    assert not handlers._desired_changed(other)


def test_kopf_settings() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    assert settings.persistence.finalizer == "codehub.io/finalizer"
    # the last-handled configuration stays in memory: no annotation PATCH per create
    assert isinstance(settings.persistence.diffbase_storage, TermDiffBaseStorage)
    assert not isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    # handler progress stays in kopf.codehub.io/ annotations, its names formed once
    progress = settings.persistence.progress_storage
    assert isinstance(progress, KeyCachingProgressStorage)
    assert progress.prefix == handlers.ANNOTATION_PREFIX
    assert settings.posting.enabled
    assert settings.watching.server_timeout == 300


def test_register_adds_every_handler() -> None:
    from codehub.operator.context import OperatorContext
    from codehub.operator.settings import Settings

    registry = kopf.OperatorRegistry()
    ctx = OperatorContext(
        settings=Settings(),
        api=None,
        instances=None,
        storage=None,  # type: ignore[arg-type]
    )
    from codehub.operator.gate import ReconcileGate

    handlers.register(registry, ctx, ReconcileGate(ctx))
    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert {"resume", "create", "update", "delete"} <= ids
    assert not list(registry._spawning.get_all_handlers())  # the safety net lists instead
    assert registry._activities.get_all_handlers()
