"""Prometheus metrics of the operator (docs/coordinator.md), held in an explicit registry.

No module-level collectors: each coordinator (and each test) builds ``Metrics`` over its
own ``CollectorRegistry``, so two operators in one process never share counters. Labels
are bounded enums (operation, result, reason, status): never a uid or a name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Long because every collector is declared here, one statement each, so the
        operator's whole metric surface reads in one place."""
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
            "Errors recorded in status.error_info, by reason (docs/errors.md).",
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
        self.operations_overdue = Gauge(
            "codehub_operations_overdue",
            "Workspaces whose current operation started longer ago than its timeout "
            "(as of the last HealthMonitor pass); the reconciler should have failed it.",
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
        # controller-runtime's standard names, for the reconcile gate and its queue.
        self.cr_reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Reconciles by controller and result (success, error, requeue_after).",
            ["controller", "result"],
            registry=r,
        )
        self.cr_reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Duration of one reconcile, by controller.",
            ["controller"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.wq_depth = Gauge("workqueue_depth", "Keys waiting in the queue.", ["name"], registry=r)
        self.wq_adds = Counter(
            "workqueue_adds_total", "Keys added to the queue (after dedup).", ["name"], registry=r
        )
        self.wq_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "Time a key waited in the queue before a worker took it.",
            ["name"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.wq_retries = Counter(
            "workqueue_retries_total", "Rate-limited re-adds.", ["name"], registry=r
        )
        self.ttl_actions = Counter(
            "codehub_ttl_actions_total",
            "Idle TTL actions taken (docs/activity-and-ttl.md): standby or archive.",
            ["action"],
            registry=r,
        )
        self.ttl_skipped = Counter(
            "codehub_ttl_skipped_total",
            "Due idle TTL actions not taken in a pass, by reason (conflict, user_changed, busy).",
            ["reason"],
            registry=r,
        )
        self.events_posted = Counter(
            "codehub_kube_events_total",
            "Kubernetes events posted by the operator, by reason.",
            ["reason"],
            registry=r,
        )
        self.informer = InformerCollector()
        r.register(self.informer)


class InformerStats(Protocol):
    """What the leader term's workspace cache counts (``crd_like.client.informer``)."""

    relists: int
    watches: int
    events: int
    errors: int

    @property
    def synced(self) -> bool: ...

    def __len__(self) -> int: ...


class InformerCollector(Collector):
    """The workspace cache of the current leader term, read at scrape time.

    A term builds its own cache, so the cache is handed in (``source``) while a term
    runs and taken back when it ends; a standby exports nothing. The counters start again
    with each term, which Prometheus reads as a counter reset.
    """

    def __init__(self) -> None:
        self.source: InformerStats | None = None

    def collect(self) -> Iterator[Metric]:
        source = self.source
        if source is None:
            return
        yield GaugeMetricFamily(
            "codehub_informer_synced",
            "1 once the leader's workspace cache holds its first List, else 0.",
            value=1 if source.synced else 0,
        )
        yield GaugeMetricFamily(
            "codehub_informer_objects", "Workspaces in the leader's cache.", value=len(source)
        )
        for name, text, value in (
            ("relists", "Full Lists that (re)filled the cache.", source.relists),
            ("watches", "Watch streams opened, resumptions included.", source.watches),
            ("events", "Watch events applied to the cache.", source.events),
            (
                "errors",
                "List or watch failures (each one re-lists after a backoff).",
                source.errors,
            ),
        ):
            yield CounterMetricFamily(f"codehub_informer_{name}", text, value=value)


class QueueMetricsAdapter:
    """``workqueue.QueueMetrics`` over the ``workqueue_*`` collectors, for one queue name."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._depth = metrics.wq_depth.labels(name=name)
        self._adds = metrics.wq_adds.labels(name=name)
        self._wait = metrics.wq_queue_duration.labels(name=name)
        self._retries = metrics.wq_retries.labels(name=name)

    def added(self) -> None:
        self._adds.inc()

    def depth(self, value: int) -> None:
        self._depth.set(value)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def retried(self) -> None:
        self._retries.inc()
