"""Prometheus metrics of the operator (SPEC §12, issue 5), held in an explicit registry.

No module-level collectors: each coordinator (and each test) builds ``Metrics`` over its
own ``CollectorRegistry``, so two operators in one process never share counters. Labels
are bounded enums (operation, result, reason, status): never a uid or a name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter(
            "codehub_reconcile_total",
            "Reconcile steps by operation and result (done, retry, terminal, lost, busy).",
            ["operation", "result"],
            registry=r,
        )
        self.operation_duration = Histogram(
            "codehub_operation_duration_seconds",
            "Time from claiming an operation to its completion or terminal failure.",
            ["operation", "result"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.actuator_duration = Histogram(
            "codehub_actuator_duration_seconds",
            "Time spent in one adapter actuator call.",
            ["action"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.workspaces = Gauge(
            "codehub_workspaces",
            "Workspaces by observed status and display, as of the last HealthMonitor pass.",
            ["observed_status", "display"],
            registry=r,
        )
        self.workspace_errors = Counter(
            "codehub_workspace_errors_total",
            "Errors recorded in status.error_info, by SPEC §6 reason.",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            "codehub_leader", "1 while this coordinator holds leadership, else 0.", registry=r
        )
        self.health_pass = Histogram(
            "codehub_health_pass_seconds",
            "Duration of one HealthMonitor batch pass.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.observation_age = Gauge(
            "codehub_observation_age_seconds",
            "Age of the oldest successful observation of any workspace.",
            registry=r,
        )
        self.stale_observations = Gauge(
            "codehub_stale_observations",
            "Workspaces whose last successful observation is older than the stale threshold.",
            registry=r,
        )
        self.health_failures = Counter(
            "codehub_health_observe_failures_total",
            "Workspaces the HealthMonitor failed to observe or to update.",
            registry=r,
        )
        self.desired_state_changes = Counter(
            "codehub_desired_state_changes_total",
            "Changes of spec.desired_state seen by the operator, by source.",
            ["source"],
            registry=r,
        )
        self.events_posted = Counter(
            "codehub_kube_events_total",
            "Kubernetes events posted by the operator, by reason.",
            ["reason"],
            registry=r,
        )
