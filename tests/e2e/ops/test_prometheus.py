"""Prometheus, for real (docs/operations.md): Debian's ``prometheus`` scrapes an API server
and a coordinator with the shipped configuration (targets, token and CA substituted, the
shipped alert rules loaded), every target is up, the codehub metrics reflect a whole
lifecycle, and every query of the shipped Grafana dashboard is valid and has data.

The lifecycle: ``life`` is created RUNNING, opened through the proxy with a bearer token,
sent to STANDBY and then to its archive by the TTL Manager (TTLs of 3 s), woken by a page
load through the proxy (restore) and deleted; ``broken`` (an image that does not exist)
records an error.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from operator_e2e import USER, CoordinatorProcess, Stack, status
from prometheus_e2e import (
    SHIPPED_RULES,
    Prometheus,
    dashboard_queries,
    render_config,
    start_prometheus,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OPERATIONS = {"PROVISIONING", "STARTING", "STOPPING", "ARCHIVING", "RESTORING", "DELETING"}
MISSING_IMAGE = "codehub/does-not-exist:e2e"
COORDINATOR_ENV = {"TTL_MANAGER_INTERVAL": "1", "GC_INTERVAL": "2"}


@pytest.fixture
def coordinator(stack: Stack) -> CoordinatorProcess:
    coord = stack.start_coordinator("prom", env=COORDINATOR_ENV)
    stack.wait_leader(coord)
    return coord


@pytest.fixture
def prometheus(
    stack: Stack, coordinator: CoordinatorProcess, tmp_path: Path
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus not installed: scripts/install-system-packages installs it")
    work = tmp_path / "prometheus"
    work.mkdir()
    config = render_config(
        work,
        server_targets=[f"127.0.0.1:{stack.server.port}"],
        coordinator_targets=[f"127.0.0.1:{coordinator.port}"],
        token=stack.server.tokens["operator"],
        ca_file=stack.server.ca_file,
    )
    prom = start_prometheus(binary, config, work)
    try:
        yield prom
    finally:
        prom.stop()


def _all_up(prom: Prometheus) -> list[dict[str, Any]] | None:
    targets = prom.targets()
    jobs = {t["labels"]["job"] for t in targets}
    if jobs != {"codehub-server", "codehub-coordinator"}:
        return None
    return targets if all(t["health"] == "up" for t in targets) else None


async def _workspace(stack: Stack, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": USER},
        "spec": {"desired_state": "RUNNING", "image_ref": stack.image, **spec},
    }
    async with stack.api() as api:
        await api.create(USER, body)


async def _open_through_proxy(stack: Stack, name: str) -> int:
    """A browser's page load (HTML navigation) of the workspace: wakes it if asleep."""
    ctx = ssl.create_default_context(cafile=stack.server.ca_file)
    headers = {
        "Authorization": f"Bearer {stack.server.tokens[USER]}",
        "Accept": "text/html",
        "Sec-Fetch-Mode": "navigate",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.server.url}/w/{USER}/{name}/", headers=headers, ssl=ctx) as resp,
    ):
        await resp.read()
        return resp.status


async def _lifecycle(stack: Stack) -> None:
    """create -> RUNNING -> (TTL) STANDBY -> (TTL) PENDING+archive -> (page load wakes
    it) RUNNING -> delete."""
    await _workspace(stack, "broken", {"image_ref": MISSING_IMAGE})
    await _workspace(stack, "life", {"standby_ttl_seconds": 3, "archive_ttl_seconds": 3})
    await stack.wait_display("life", "RUNNING")
    assert await _open_through_proxy(stack, "life") < 500
    await stack.wait_display("life", "STANDBY")
    archived = await stack.wait_display("life", "ARCHIVED")
    assert status(archived)["archive_key"]
    async with stack.api() as api:
        spec = {"standby_ttl_seconds": 0, "archive_ttl_seconds": 0}
        await api.patch_merge(USER, "life", {"spec": spec})
    assert await _open_through_proxy(stack, "life") < 500  # the loading page: a wake
    await stack.wait_display("life", "RUNNING")
    await stack.wait_for("broken", lambda o: bool(status(o).get("error_info")), "an error recorded")
    async with stack.api() as api:
        await api.delete(USER, "life")
        await api.delete(USER, "broken")
    await stack.wait_gone("life")
    await stack.wait_gone("broken")


def _labels(result: list[dict[str, Any]], label: str) -> set[str]:
    return {str(r["metric"].get(label)) for r in result}


async def test_prometheus_scrapes_the_stack_and_every_panel_has_data(
    stack: Stack, coordinator: CoordinatorProcess, prometheus: Prometheus
) -> None:
    targets = prometheus.wait_until(lambda: _all_up(prometheus), "every target up", limit=60)
    assert {t["scrapeUrl"].split("://")[0] for t in targets} == {"https", "http"}

    await _lifecycle(stack)

    def completed() -> set[str] | None:
        expr = 'sum by (operation) (codehub_operation_duration_seconds_count{result="completed"})'
        ops = _labels(prometheus.query(expr), "operation")
        return ops if ops >= OPERATIONS else None

    prometheus.wait_until(completed, f"completed operations {sorted(OPERATIONS)}")
    assert prometheus.query("sum(codehub_reconcile_total)")
    assert "DELETING" in _labels(
        prometheus.query("sum by (operation) (codehub_reconcile_total)"), "operation"
    )
    success = prometheus.query(
        'sum(controller_runtime_reconcile_total{controller="workspace",result="success"})'
    )
    assert success
    assert float(success[0]["value"][1]) > 0
    leader = prometheus.query("sum(codehub_leader)")
    assert float(leader[0]["value"][1]) == 1
    assert prometheus.query('sum(workqueue_adds_total{name="workspace"})')
    assert prometheus.query("codehub_operations_overdue")
    assert prometheus.query("codehub_api_watch_backlog_events")
    assert prometheus.query('codehub_ttl_actions_total{action="standby"}')
    assert prometheus.query("codehub_proxy_requests_total")
    woken = prometheus.query('codehub_proxy_wakes_total{result="woken"}')
    assert woken
    assert float(woken[0]["value"][1]) >= 1
    assert prometheus.query("codehub_workspace_errors_total")

    _check_rules(prometheus)
    _check_dashboard(prometheus)


def _check_rules(prom: Prometheus) -> None:
    """The shipped alert rules are loaded and evaluate; with a leader, none is firing
    for leadership."""
    groups = prom.api("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    shipped = yaml.safe_load(SHIPPED_RULES.read_text())["groups"]
    assert set(rules) == {r["alert"] for g in shipped for r in g["rules"]}
    assert all(r["health"] == "ok" for r in rules.values()), rules
    assert rules["CodehubNoLeader"]["state"] == "inactive"


def _check_dashboard(prom: Prometheus) -> None:
    """Every panel query is valid and returns data after the lifecycle."""
    invalid: list[str] = []
    empty: list[str] = []
    for title, expr in dashboard_queries():
        answer = prom.raw_query(expr)
        if answer.get("status") != "success":
            invalid.append(f"{title}: {expr} -> {answer.get('error')}")
        elif not answer["data"]["result"]:
            empty.append(f"{title}: {expr}")
    assert not invalid, "invalid dashboard queries:\n" + "\n".join(invalid)
    assert not empty, "dashboard queries without data after the lifecycle:\n" + "\n".join(empty)
