"""Prometheus metrics of the proxy, on the server's registry (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "codehub_proxy_requests",
            "Requests through the workspace proxy by HTTP code class (2xx, 3xx, 4xx, 5xx).",
            ["code_class"],
            registry=registry,
        )
        self.duration = Histogram(
            "codehub_proxy_request_duration_seconds",
            "Time to the end of a proxied HTTP response (WebSockets excluded).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.open_connections = Gauge(
            "codehub_proxy_open_connections",
            "WebSocket connections open through this server replica.",
            registry=registry,
        )
        self.activity_writes = Counter(
            "codehub_activity_writes",
            "status.last_access_at writes made by this replica.",
            registry=registry,
        )

        self.wakes = Counter(
            "codehub_proxy_wakes",
            "Wakes asked by page loads of sleeping workspaces: woken, limited (at the "
            "running limit) or failed.",
            ["result"],
            registry=registry,
        )
        for result in ("woken", "limited", "failed"):
            self.wakes.labels(result)
        #: The labelled children, looked up once: ``labels()`` costs a lock and a
        #: validation on every proxied request otherwise.
        self._by_class = {c: self.requests.labels(f"{c}xx") for c in range(1, 6)}

    def observe(self, status: int) -> None:
        child = self._by_class.get(status // 100)
        (child or self.requests.labels(f"{status // 100}xx")).inc()
