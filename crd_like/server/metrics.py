"""Prometheus metrics of one API server app (a registry per app so tests stay separate)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "codehub_api_requests",
            "API requests by verb, resource and HTTP code.",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "codehub_api_request_duration_seconds",
            "API request latency by verb (watches and SSE excluded).",
            ["verb", "resource"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.open_watches = Gauge(
            "codehub_api_open_watches",
            "Open watch streams by resource.",
            ["resource"],
            registry=self.registry,
        )
        self.watch_backlog = Gauge(
            "codehub_api_watch_backlog_events",
            "How many log revisions the slowest open watch of this replica is behind the "
            "head revision (set on each scrape).",
            registry=self.registry,
        )
        #: Open watch -> the highest revision it has examined (watch.WatchPosition).
        self.watch_positions: dict[object, int] = {}
        self.open_sse = Gauge(
            "codehub_api_open_sse_streams", "Open SSE event streams.", registry=self.registry
        )
        self.idle_warnings = Counter(
            "codehub_idle_warnings",
            "idle_warning events sent on SSE streams (docs/activity-and-ttl.md).",
            registry=self.registry,
        )
        self.admission_refusals = Counter(
            "codehub_api_admission_refusals",
            "Requests refused by the running limits (docs/limits.md).",
            ["limit_type"],
            registry=self.registry,
        )
