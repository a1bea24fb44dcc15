"""codehub_operations_overdue (the CodehubOperationOverdue alert, docs/operations.md): the
HealthMonitor pass counts workspaces whose operation started longer ago than its timeout,
leaving out terminal errors (they wait for an administrator, another alert's business)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.fake_storage import FakeStorageProvider
from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.config import ApiConfig
from codehub.crd_like.server.app import create_app
from codehub.crd_like.store.memory import MemoryStore
from codehub.operator.clock import FakeClock
from codehub.operator.context import OperatorContext
from codehub.operator.health_monitor import HealthMonitor
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings
from codehub.vocabulary.timestamps import format_rfc3339

NS = "ovd"
TOKEN = "hm-operator"
ARCHIVE_TIMEOUT = 600.0


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[ApiClient, OperatorContext]]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f'{TOKEN},codehub-operator,op,"codehub:operator,codehub:admin"\n')
    config = ApiConfig(database_url="", token_file=str(tokens))
    server = TestServer(create_app(config, MemoryStore()), host="127.0.0.1")
    await server.start_server()
    client = ApiClient(str(server.make_url("")).rstrip("/"), TOKEN)
    storage = FakeStorageProvider()
    ctx = OperatorContext(
        settings=Settings(timeout_archiving=ARCHIVE_TIMEOUT),
        api=client,
        instances=FakeInstanceController(volume_exists=lambda uid: uid in storage.volumes),
        storage=storage,
        clock=FakeClock(),
        metrics=Metrics(),
    )
    try:
        yield client, ctx
    finally:
        await client.close()
        await server.close()


async def _workspace(client: ApiClient, name: str, status: dict[str, Any] | None) -> None:
    await client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"desired_state": "PENDING"},
        },
    )
    if status:
        ops = [{"op": "add", "path": "/status", "value": status}]
        await client.patch_json(NS, name, ops, status=True)


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
