"""The operator's metrics: names and labels as promised, per-registry, bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from codehub.operator.metrics import Metrics

EXPECTED_LABELS = {
    "codehub_reconcile_total": {"operation", "result"},
    "codehub_operation_duration_seconds": {"operation", "result"},
    "codehub_actuator_duration_seconds": {"action"},
    "codehub_workspaces": {"observed_status", "display"},
    "codehub_workspace_errors_total": {"reason"},
    "codehub_leader": set(),
    "codehub_health_pass_seconds": set(),
    "codehub_observation_age_seconds": set(),
    "codehub_desired_state_changes_total": {"source"},
}


def _exercise(m: Metrics) -> None:
    m.reconcile_total.labels(operation="STARTING", result="converged").inc()
    m.operation_duration.labels(operation="STARTING", result="completed").observe(1.5)
    m.actuator_duration.labels(action="start").observe(0.5)
    m.workspaces.labels(observed_status="PENDING", display="ARCHIVED").set(3)
    m.workspace_errors.labels(reason="DataLost").inc()
    m.leader.set(1)
    m.health_pass.observe(0.01)
    m.observation_age.set(12)
    m.desired_state_changes.labels(source="ttl").inc()


def test_every_promised_metric_exists_with_its_labels() -> None:
    m = Metrics(CollectorRegistry())
    _exercise(m)
    families = {f.name: f for f in m.registry.collect()}
    for name, labels in EXPECTED_LABELS.items():
        family = families.get(name) or families.get(name.removesuffix("_total"))
        assert family is not None, name
        sample_labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert sample_labels == labels, name
    text = generate_latest(m.registry).decode()
    assert 'codehub_workspaces{display="ARCHIVED",observed_status="PENDING"} 3.0' in text
    assert "codehub_leader 1.0" in text


def test_registries_are_independent() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.leader.set(1)
    assert b.registry.get_sample_value("codehub_leader") == 0
    assert a.registry.get_sample_value("codehub_leader") == 1


def test_labels_are_bounded_enums_only() -> None:
    m = Metrics(CollectorRegistry())
    _exercise(m)
    allowed = {"operation", "result", "action", "observed_status", "display", "reason", "source"}
    for family in m.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= allowed, (family.name, sample.labels)


class _Cache:
    """Counts shaped like the informer's."""

    def __init__(self, synced: bool, objects: int) -> None:
        self.synced = synced
        self.objects = objects
        self.relists, self.watches, self.events, self.errors = 2, 3, 40, 1

    def __len__(self) -> int:
        return self.objects


def _samples(m: Metrics) -> dict[str, float]:
    return {
        s.name: s.value
        for family in m.registry.collect()
        for s in family.samples
        if s.name.startswith("codehub_informer_")
    }


def test_the_workspace_cache_is_exported_only_while_a_term_hands_it_in() -> None:
    m = Metrics(CollectorRegistry())
    assert _samples(m) == {}  # a standby: no cache, nothing exported
    m.informer.source = _Cache(synced=False, objects=0)
    assert _samples(m)["codehub_informer_synced"] == 0
    m.informer.source = _Cache(synced=True, objects=10_000)
    assert _samples(m) == {
        "codehub_informer_synced": 1,
        "codehub_informer_objects": 10_000,
        "codehub_informer_relists_total": 2,
        "codehub_informer_watches_total": 3,
        "codehub_informer_events_total": 40,
        "codehub_informer_errors_total": 1,
    }
    assert b"codehub_informer_objects 10000.0" in generate_latest(m.registry)


async def test_a_term_hands_its_cache_to_the_metrics_and_takes_it_back() -> None:
    import asyncio
    from types import SimpleNamespace

    from codehub.operator.components import run_informer

    m = Metrics(CollectorRegistry())

    class Informer(_Cache):
        seen: object = None

        async def run(self) -> None:
            self.seen = m.informer.source

        async def wait_synced(self) -> None:
            await asyncio.Event().wait()

    informer = Informer(synced=True, objects=1)
    term = SimpleNamespace(ctx=SimpleNamespace(metrics=m), informer=informer)
    await run_informer(term)  # type: ignore[arg-type]
    assert informer.seen is informer
    assert m.informer.source is None
    assert _samples(m) == {}
