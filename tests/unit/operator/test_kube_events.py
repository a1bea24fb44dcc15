"""Completions held within the reconciler's scope are told by one Event; any other event
releases them first, so the order stays the order things happened
(docs/adr/0014-kopf-writes.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from codehub.operator import kube_events
from codehub.operator.context import OperatorContext
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings


class Poster:
    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    async def post_event(self, ns: str, event: dict[str, Any]) -> dict[str, Any]:
        self.posted.append(event)
        return event


def context() -> tuple[OperatorContext, Poster]:
    poster = Poster()
    ctx = OperatorContext(
        settings=Settings(),
        api=poster,  # type: ignore[arg-type]
        instances=None,  # type: ignore[arg-type]
        storage=None,  # type: ignore[arg-type]
        metrics=Metrics(),
    )
    return ctx, poster


def ws(rv: str) -> dict[str, Any]:
    return {"metadata": {"name": "w", "namespace": "alice", "uid": "u", "resourceVersion": rv}}


async def test_completions_in_a_row_are_one_event() -> None:
    ctx, poster = context()
    async with kube_events.posting_behind(ctx):
        await kube_events.completed(ctx, ws("2"), "PROVISIONING completed (op_id a)")
        await kube_events.completed(ctx, ws("3"), "STARTING completed (op_id b)")
        assert poster.posted == []  # held until the scope ends
    [event] = poster.posted
    assert event["reason"] == kube_events.OPERATION_COMPLETED
    assert event["message"] == "PROVISIONING completed (op_id a); STARTING completed (op_id b)"
    assert event["involvedObject"]["resourceVersion"] == "3"
    assert event["firstTimestamp"] <= event["lastTimestamp"]
    sample = ctx.metrics.registry.get_sample_value(
        "codehub_kube_events_total", {"reason": kube_events.OPERATION_COMPLETED}
    )
    assert sample == 1


async def test_another_event_releases_the_held_completions_first() -> None:
    ctx, poster = context()
    async with kube_events.posting_behind(ctx):
        await kube_events.completed(ctx, ws("2"), "STOPPING completed (op_id a)")
        await kube_events.post(ctx, ws("3"), kube_events.OPERATION_STARTED, "ARCHIVING started")
        await kube_events.completed(ctx, ws("4"), "ARCHIVING completed (op_id b)")
    assert [e["message"] for e in poster.posted] == [
        "STOPPING completed (op_id a)",
        "ARCHIVING started",
        "ARCHIVING completed (op_id b)",
    ]


async def test_a_completion_outside_the_scope_is_posted_at_once() -> None:
    ctx, poster = context()
    await kube_events.completed(ctx, ws("2"), "STARTING completed (op_id a)")
    assert [e["message"] for e in poster.posted] == ["STARTING completed (op_id a)"]


async def test_a_cancelled_scope_drops_what_it_held() -> None:
    ctx, poster = context()

    async def cancelled() -> None:
        async with kube_events.posting_behind(ctx):
            await kube_events.completed(ctx, ws("2"), "STARTING completed (op_id a)")
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await cancelled()
    assert poster.posted == []
