"""codehub_operations_overdue (the CodehubOperationOverdue alert, docs/operations.md): the
HealthMonitor pass counts workspaces whose operation started longer ago than its timeout,
leaving out terminal errors (they wait for an administrator, another alert's business)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from support.workspaces import create_workspace, fake_adapters

from codehub.crd_like.client.api import ApiClient
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings
from codehub.vocabulary.timestamps import format_rfc3339

NS = "ovd"
ARCHIVE_TIMEOUT = 600.0


@pytest.fixture
def env(operator_client: ApiClient) -> tuple[ApiClient, OperatorContext]:
    instances, storage = fake_adapters()
    ctx = OperatorContext(
        settings=Settings(timeout_archiving=ARCHIVE_TIMEOUT),
        api=operator_client,
        instances=instances,
        storage=storage,
        clock=FakeClock(),
        metrics=Metrics(),
    )
    return operator_client, ctx


async def _workspace(client: ApiClient, name: str, status: dict[str, Any] | None) -> None:
    await create_workspace(client, NS, name, status=status)


async def test_overdue_counts_only_live_operations_past_their_timeout(
    env: tuple[ApiClient, OperatorContext],
) -> None:
    client, ctx = env
    now = ctx.clock.now()

    def started(seconds_ago: float) -> str:
        return format_rfc3339(now - timedelta(seconds=seconds_ago), micro=True)

    archiving = {"operation": "ARCHIVING", "op_id": "op-1"}
    await _workspace(client, "idle", None)
    await _workspace(client, "young", {**archiving, "op_started_at": started(10)})
    await _workspace(client, "old", {**archiving, "op_started_at": started(ARCHIVE_TIMEOUT + 5)})
    terminal_error = {
        "reason": "Timeout",
        "message": "ARCHIVING did not complete",
        "is_terminal": True,
    }
    await _workspace(
        client,
        "held",
        {**archiving, "op_started_at": started(3 * ARCHIVE_TIMEOUT), "error_info": terminal_error},
    )
    monitor = HealthMonitor(ctx)
    registry = ctx.metrics.registry

    await monitor.pass_once()
    assert registry.get_sample_value("codehub_operations_overdue") == 1

    assert isinstance(ctx.clock, FakeClock)
    ctx.clock.advance(ARCHIVE_TIMEOUT)
    await monitor.pass_once()
    assert registry.get_sample_value("codehub_operations_overdue") == 2
